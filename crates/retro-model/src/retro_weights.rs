//! Retro checkpoints: the tensors a Retro model reads, retro-fitting a pretrained GPT (new encoder,
//! CCA and pre-CCA norms, reference §2), and the checkpoint directory (`config.json`,
//! `model.safetensors` in f32 with HF-style names, decoder in the HF rotate-half RoPE layout,
//! `tokenizer.json` when the source had one).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use crate::config::{LlamaConfig, RopeLayout};
use crate::decode_weights::{with_q8_0_blocks, DecodeWeights};
use crate::hf;
use crate::retro::RetroModel;
use crate::retro_config::{RetroConfig, RetroOptions};
use crate::tiny::SplitMix64;
use crate::weights::{
    check_expected, expected_tensors, tensors_device, varmap_of, Source, Weights,
};

/// File names inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Tokenizer files copied from next to the source model when present.
pub const TOKENIZER_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Which part of a Retro model a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The GPT: embedding, layers (self-attention, MLP, their norms), final norm, head.
    Decoder,
    /// The retrieval encoder (`model.encoder.*`).
    Encoder,
    /// CCA of the decoder's Retro layers: `cross_attn.*` and `pre_cross_attn_layernorm`.
    Cca,
}

/// The part a tensor name belongs to.
pub fn tensor_part(name: &str) -> Part {
    if name.starts_with("model.encoder.") {
        Part::Encoder
    } else if name.contains(".cross_attn.") || name.contains(".pre_cross_attn_layernorm.") {
        Part::Cca
    } else {
        Part::Decoder
    }
}

/// The tensors a Retro model has beyond its decoder (encoder and CCA), with shapes.
pub fn retro_only_tensors(cfg: &RetroConfig) -> Vec<(String, Vec<usize>)> {
    let d = &cfg.decoder;
    let (h, i) = (d.hidden_size, d.intermediate_size);
    let (q, kv) = (
        d.num_attention_heads * d.head_dim(),
        d.num_kv_heads() * d.head_dim(),
    );
    let attn = |p: &str| {
        vec![
            (format!("{p}.q_proj.weight"), vec![q, h]),
            (format!("{p}.k_proj.weight"), vec![kv, h]),
            (format!("{p}.v_proj.weight"), vec![kv, h]),
            (format!("{p}.o_proj.weight"), vec![h, q]),
        ]
    };
    let mut out = Vec::new();
    for l in cfg.retro_layer_indices() {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.pre_cross_attn_layernorm.weight"), vec![h]));
        out.extend(attn(&format!("{p}.cross_attn")));
    }
    for e in 0..cfg.encoder_layers {
        let p = format!("model.encoder.layers.{e}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.extend(attn(&format!("{p}.self_attn")));
        if e == 0 {
            out.push((format!("{p}.pre_cross_attn_layernorm.weight"), vec![h]));
            out.extend(attn(&format!("{p}.cross_attn")));
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        out.extend([
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    out
}

/// Every tensor of a Retro model with this config: the decoder's and [`retro_only_tensors`].
pub fn retro_expected_tensors(cfg: &RetroConfig) -> Vec<(String, Vec<usize>)> {
    let mut all = expected_tensors(&cfg.decoder);
    all.extend(retro_only_tensors(cfg));
    all
}

/// How the CCA output projections of a retro-fitted model start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CcaInit {
    /// Random like every other new matrix (the reference).
    #[default]
    Random,
    /// Every decoder CCA `o_proj` zero (our addition): the CCA adds exactly 0, so the new model
    /// computes exactly what the GPT computes until training moves `o_proj`. (At the first step
    /// only `o_proj` gets a gradient; the encoder and CCA q/k/v get theirs once it is non-zero.)
    Zero,
}

/// Initialisation of the new (encoder and CCA) tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetroInit {
    pub seed: u64,
    /// Megatron's `init_method_std` (its default 0.02; the InstructRetro 843M tutorial uses 0.007).
    pub std: f64,
    pub cca: CcaInit,
}

impl Default for RetroInit {
    fn default() -> Self {
        Self {
            seed: 1234,
            std: 0.02,
            cca: CcaInit::Random,
        }
    }
}

/// Draws the new tensors of `cfg` as Megatron initialises them: norm gains 1, input projections
/// (`q/k/v_proj`, `gate/up_proj`) `N(0, std²)`, output projections (`o_proj`, `down_proj`)
/// `N(0, std²/(2·num_layers))` with the decoder's layer count (Megatron's
/// `scaled_init_method_normal`; legacy builds the encoder with the decoder's init methods). Draws go
/// through [`SplitMix64`] in tensor-name order, so the result depends only on `cfg` and `init`.
pub fn init_retro_tensors(
    cfg: &RetroConfig,
    init: &RetroInit,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let zero_cca_output = |name: &str| {
        init.cca == CcaInit::Zero
            && tensor_part(name) == Part::Cca
            && name.ends_with("cross_attn.o_proj.weight")
    };
    megatron_init(
        retro_only_tensors(cfg),
        SplitMix64::new(init.seed),
        init.std,
        cfg.decoder.num_hidden_layers,
        &zero_cca_output,
        device,
    )
}

/// A new decoder for pretraining, initialised as [`init_retro_tensors`] does (embeddings and the
/// untied head like input projections), from its own stream of `seed`.
pub fn init_decoder_tensors(
    cfg: &LlamaConfig,
    seed: u64,
    std: f64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    megatron_init(
        expected_tensors(cfg),
        SplitMix64::new(seed ^ 0xDEC0_DE00),
        std,
        cfg.num_hidden_layers,
        &|_| false,
        device,
    )
}

/// Megatron's `init_method_normal` / `scaled_init_method_normal` over `spec`, in name order: 1-D
/// tensors (norm gains) 1, `zero(name)` tensors 0, output projections `N(0, std²/(2·layers))`,
/// every other matrix `N(0, std²)`.
fn megatron_init(
    mut spec: Vec<(String, Vec<usize>)>,
    mut rng: SplitMix64,
    std: f64,
    num_layers: usize,
    zero: &dyn Fn(&str) -> bool,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    spec.sort();
    let out_std = std / (2.0 * num_layers as f64).sqrt();
    let mut tensors = HashMap::new();
    for (name, shape) in spec {
        let n: usize = shape.iter().product();
        let is_output = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
        let data: Vec<f32> = if shape.len() == 1 {
            vec![1.0; n]
        } else if zero(&name) {
            vec![0.0; n]
        } else {
            let std = if is_output { out_std } else { std };
            (0..n).map(|_| (std * rng.normal()) as f32).collect()
        };
        tensors.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(tensors)
}

/// A Retro model's config and f32 tensors.
#[derive(Debug, Clone)]
pub struct RetroWeights {
    pub config: RetroConfig,
    pub tensors: HashMap<String, Tensor>,
}

/// Parameter counts by [`Part`]. A tied head is counted once, in the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ParamCounts {
    pub decoder: usize,
    pub encoder: usize,
    pub cca: usize,
    pub total: usize,
}

impl ParamCounts {
    /// Counts `(name, number of elements)` pairs.
    pub fn from_sizes<'a>(sizes: impl IntoIterator<Item = (&'a str, usize)>) -> Self {
        let mut c = Self::default();
        for (name, n) in sizes {
            match tensor_part(name) {
                Part::Decoder => c.decoder += n,
                Part::Encoder => c.encoder += n,
                Part::Cca => c.cca += n,
            }
            c.total += n;
        }
        c
    }
}

/// Builds a Retro model around the pretrained decoder `base`: its tensors are kept (in the HF
/// rotate-half layout, converted if `base` came from a GGUF) and the encoder, CCA and pre-CCA norms
/// are new ([`init_retro_tensors`]). Reference §2: Megatron loads the GPT non-strictly, leaving
/// exactly these modules at their initialisation.
pub fn retrofit(base: &Weights, opts: &RetroOptions, init: &RetroInit) -> Result<RetroWeights> {
    // A GGUF's blocks serve decoding only: a Retro model keeps f32 tensors, so they are not permuted.
    let base = Weights {
        blocks: Default::default(),
        ..base.clone()
    }
    .to_rope_layout(RopeLayout::RotateHalf)?;
    let config = RetroConfig::new(base.config.clone(), opts)?;
    let device = tensors_device(&base.tensors).context("base model")?;
    let mut tensors = HashMap::new();
    for (name, _) in expected_tensors(&config.decoder) {
        let t = base
            .tensors
            .get(&name)
            .with_context(|| format!("base model has no tensor {name}"))?;
        tensors.insert(name, t.clone());
    }
    tensors.extend(init_retro_tensors(&config, init, &device)?);
    let w = RetroWeights { config, tensors };
    w.check()?;
    Ok(w)
}

impl RetroWeights {
    /// Checks that the tensors are exactly those of the config, with the right shapes.
    pub fn check(&self) -> Result<()> {
        let expected = retro_expected_tensors(&self.config);
        check_expected(&expected, &self.tensors, &|n| n.to_string())?;
        if self.tensors.len() != expected.len() {
            let known: std::collections::HashSet<&str> =
                expected.iter().map(|(n, _)| n.as_str()).collect();
            let mut extra: Vec<&String> = self
                .tensors
                .keys()
                .filter(|n| !known.contains(n.as_str()))
                .collect();
            extra.sort();
            let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
            bail!(
                "{} tensors not in the config (retro layers {:?}, {} encoder layers): {}",
                extra.len(),
                self.config.retro_layer_numbers,
                self.config.encoder_layers,
                shown.join(", ")
            );
        }
        Ok(())
    }

    pub fn param_counts(&self) -> ParamCounts {
        ParamCounts::from_sizes(
            self.tensors
                .iter()
                .map(|(n, t)| (n.as_str(), t.elem_count())),
        )
    }

    /// An inference model sharing these tensors.
    pub fn build(&self) -> Result<RetroModel> {
        self.check()?;
        let device = tensors_device(&self.tensors)?;
        RetroModel::load(
            VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &device),
            &self.config,
        )
    }

    /// [`RetroWeights::build`], its decoder decoding with Q8_0 blocks rounded from its f32 weights
    /// when `decode` is [`DecodeWeights::Q8_0`] (a checkpoint has no GGUF blocks, so `Auto` and
    /// `F32` are the f32 weights).
    pub fn build_for(&self, decode: DecodeWeights) -> Result<RetroModel> {
        let mut model = self.build()?;
        if decode == DecodeWeights::Q8_0 && tensors_device(&self.tensors)?.is_cpu() {
            let blocks =
                with_q8_0_blocks(&self.config.decoder, &self.tensors, &Default::default())?;
            model.decoder_mut().use_blocks(&blocks)?;
        }
        Ok(model)
    }

    /// A trainable model: every tensor becomes a `Var` of the returned map.
    pub fn build_trainable(&self) -> Result<(RetroModel, VarMap)> {
        self.check()?;
        let varmap = varmap_of(&self.tensors)?;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &tensors_device(&self.tensors)?);
        Ok((RetroModel::load(vb, &self.config)?, varmap))
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` (f32), creating `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.check()?;
        if self.config.decoder.rope_layout != RopeLayout::RotateHalf {
            bail!("a checkpoint stores the decoder in the HF rotate-half layout; convert it first");
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create checkpoint directory {}", dir.display()))?;
        let cfg_path = dir.join(CONFIG_FILE);
        std::fs::write(
            &cfg_path,
            serde_json::to_string_pretty(&self.config)? + "\n",
        )
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
        let w_path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&self.tensors, &w_path)
            .with_context(|| format!("cannot write {}", w_path.display()))?;
        Ok(())
    }

    /// Reads a checkpoint directory written by [`RetroWeights::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = RetroConfig::from_json_file(&dir.join(CONFIG_FILE))?;
        let tensors = hf::load_tensors(dir, device)?;
        let w = Self { config, tensors };
        w.check()
            .with_context(|| format!("{}: tensors do not match the config", dir.display()))?;
        Ok(w)
    }
}

/// The directory where a source model's tokenizer files would be: the HF directory itself, or the
/// directory holding the GGUF.
pub fn source_dir(source: &Source) -> Option<PathBuf> {
    match source {
        Source::HfDir(d) => Some(d.clone()),
        Source::Gguf(parts) => parts
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf),
        Source::Random { .. } => None,
    }
}

/// Those of [`TOKENIZER_FILES`] that exist in `dir`, as (name, bytes): read once, so that a long
/// run can write them into every checkpoint even after the directory they came from is gone (a
/// resumed run starts from a checkpoint that it later prunes).
pub fn read_tokenizer_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let path = dir.join(name);
        if path.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.push((name.to_string(), bytes));
        }
    }
    Ok(files)
}

/// Copies those of [`TOKENIZER_FILES`] that exist in `from` into `to`; returns the names copied.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<Vec<String>> {
    let files = read_tokenizer_files(from)?;
    write_tokenizer_files(&files, to)?;
    Ok(files.into_iter().map(|(name, _)| name).collect())
}

/// Writes files from [`read_tokenizer_files`] into `dir` (read and written rather than
/// `fs::copy`d, which would also copy a read-only mode).
pub fn write_tokenizer_files(files: &[(String, Vec<u8>)], dir: &Path) -> Result<()> {
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One tensor as described by a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// The tensor list of a safetensors file, from its header only (the data is not read): an 8-byte
/// little-endian header length, then a JSON object `{name: {dtype, shape, data_offsets}}`.
pub fn read_safetensors_header(path: &Path) -> Result<Vec<TensorInfo>> {
    let read = || -> Result<Vec<TensorInfo>> {
        let mut f = std::fs::File::open(path)?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len)
            .context("file shorter than a safetensors header")?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            bail!("header length {len} is not plausible");
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).context("truncated header")?;
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&buf).context("header is not a JSON object")?;
        let mut out = Vec::new();
        for (name, t) in v {
            if name == "__metadata__" {
                continue;
            }
            let dtype = t["dtype"]
                .as_str()
                .context("tensor without dtype")?
                .to_string();
            let shape = t["shape"]
                .as_array()
                .context("tensor without shape")?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize).context("bad shape"))
                .collect::<Result<Vec<_>>>()?;
            out.push(TensorInfo { name, dtype, shape });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    };
    read().with_context(|| format!("{}: not a readable safetensors file", path.display()))
}

/// What `retro model info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub architecture: String,
    pub decoder_layers: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// 1-based; empty for a plain decoder.
    pub retro_layer_numbers: Vec<usize>,
    pub encoder_layers: usize,
    pub chunk_len: Option<usize>,
    pub num_neighbors: Option<usize>,
    pub retrieved_len: Option<usize>,
    pub gate: Option<f64>,
    pub parameters: ParamCounts,
    pub dtypes: Vec<String>,
}

/// Describes a Retro checkpoint directory from its config and safetensors headers (no tensor data
/// is read), checking that the tensors listed match the config.
pub fn retro_checkpoint_info(dir: &Path) -> Result<ModelInfo> {
    let cfg = RetroConfig::from_json_file(&dir.join(CONFIG_FILE))?;
    let files = hf::safetensors_files(dir, "checkpoint")?;
    let mut infos = Vec::new();
    for f in &files {
        infos.extend(read_safetensors_header(f)?);
    }
    let have: HashMap<&str, &Vec<usize>> =
        infos.iter().map(|t| (t.name.as_str(), &t.shape)).collect();
    let expected = retro_expected_tensors(&cfg);
    let missing: Vec<&str> = expected
        .iter()
        .filter(|(n, _)| !have.contains_key(n.as_str()))
        .map(|(n, _)| n.as_str())
        .take(5)
        .collect();
    if !missing.is_empty() {
        bail!("{}: tensors missing: {}", dir.display(), missing.join(", "));
    }
    if let Some((n, s)) = expected.iter().find(|(n, s)| have[n.as_str()] != s) {
        bail!(
            "{}: {n}: expected shape {s:?}, found {:?}",
            dir.display(),
            have[n.as_str()]
        );
    }
    let mut dtypes: Vec<String> = infos.iter().map(|t| t.dtype.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    let parameters = ParamCounts::from_sizes(
        infos
            .iter()
            .map(|t| (t.name.as_str(), t.shape.iter().product())),
    );
    Ok(ModelInfo {
        retro_layer_numbers: cfg.retro_layer_numbers.clone(),
        encoder_layers: cfg.encoder_layers,
        chunk_len: Some(cfg.chunk_len),
        num_neighbors: Some(cfg.num_neighbors),
        retrieved_len: Some(cfg.retrieved_len),
        gate: Some(cfg.gate),
        ..decoder_fields(
            cfg.architectures[0].clone(),
            &cfg.decoder,
            parameters,
            dtypes,
        )
    })
}

/// Describes a plain decoder (HF directory or GGUF) loaded with [`Weights::load`].
pub fn decoder_info(w: &Weights) -> ModelInfo {
    decoder_fields(
        "LlamaForCausalLM".to_string(),
        &w.config,
        ParamCounts::from_sizes(w.tensors.iter().map(|(n, t)| (n.as_str(), t.elem_count()))),
        stored_dtypes(&w.source),
    )
}

/// A [`ModelInfo`] with the decoder's fields from `d` and the Retro fields empty, as for a plain
/// decoder.
fn decoder_fields(
    architecture: String,
    d: &crate::config::LlamaConfig,
    parameters: ParamCounts,
    dtypes: Vec<String>,
) -> ModelInfo {
    ModelInfo {
        architecture,
        decoder_layers: d.num_hidden_layers,
        hidden_size: d.hidden_size,
        num_attention_heads: d.num_attention_heads,
        num_key_value_heads: d.num_kv_heads(),
        vocab_size: d.vocab_size,
        tie_word_embeddings: d.tie_word_embeddings,
        retro_layer_numbers: Vec::new(),
        encoder_layers: 0,
        chunk_len: None,
        num_neighbors: None,
        retrieved_len: None,
        gate: None,
        parameters,
        dtypes,
    }
}

/// How a plain decoder is stored: the dtypes in its safetensors headers, or "GGUF".
fn stored_dtypes(source: &Source) -> Vec<String> {
    match source {
        Source::HfDir(dir) => {
            let mut out: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .filter_map(|p| read_safetensors_header(&p).ok())
                .flatten()
                .map(|t| t.dtype)
                .collect();
            out.sort();
            out.dedup();
            out
        }
        Source::Gguf(_) => vec!["GGUF (dequantised to F32 when loaded)".to_string()],
        Source::Random { .. } => vec!["F32 (in memory)".to_string()],
    }
}
