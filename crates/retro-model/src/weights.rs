//! A pretrained decoder's config plus its f32 tensors under HF names, whatever the source
//! (HF safetensors directory, GGUF file, or a directory with a whole or split GGUF); the tensors are
//! checked against the config before a model is built, so that a bad checkpoint is a one-line
//! error naming the tensors, not a failure deep in a forward.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{LlamaConfig, RopeLayout};
use crate::decode_weights::{with_q8_0_blocks, DecodeWeights};
use crate::decoder::Llama;
use crate::linear::BlockMap;
use crate::rope::{interleaved_to_rotate_half, rotate_half_to_interleaved};
use crate::{gguf, hf};

/// Where a checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An HF directory: `config.json` and one or more `*.safetensors`.
    HfDir(PathBuf),
    /// A GGUF, given as the files read in order (one file, or its `.partNN` pieces).
    Gguf(Vec<PathBuf>),
    /// Seeded random weights built in code ([`crate::tiny::random_weights`]).
    Random { seed: u64 },
}

/// Config and f32 tensors of a Llama decoder, named as in HF `LlamaForCausalLM`.
#[derive(Debug, Clone)]
pub struct Weights {
    pub config: LlamaConfig,
    pub tensors: HashMap<String, Tensor>,
    /// The GGUF blocks that some of `tensors` were dequantised from (empty for other sources),
    /// which [`Weights::build`] gives the model for decoding. Whoever changes a tensor must drop its
    /// blocks.
    pub blocks: BlockMap,
    pub source: Source,
}

/// The device a model's tensors live on (its embedding's).
pub(crate) fn tensors_device(tensors: &HashMap<String, Tensor>) -> Result<Device> {
    tensors
        .get("model.embed_tokens.weight")
        .map(|t| t.device().clone())
        .context("tensor model.embed_tokens.weight missing")
}

/// A `VarMap` holding every tensor as a trainable `Var`, under its name.
pub(crate) fn varmap_of(tensors: &HashMap<String, Tensor>) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("fresh VarMap lock");
        for (name, t) in tensors {
            data.insert(name.clone(), candle_core::Var::from_tensor(t)?);
        }
    }
    Ok(varmap)
}

/// The `Var`s of a `VarMap` (from `build_trainable`) with their names, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let mut vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .expect("VarMap lock")
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Every tensor a decoder with this config reads, with its shape (PyTorch order: `(out, in)`).
pub fn expected_tensors(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.num_kv_heads() * cfg.head_dim(),
    );
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    out
}

/// Checks that `tensors` holds every tensor of `cfg` with the right shape. The error lists the
/// first few missing names (a wrong prefix or architecture shows up at once) or mismatched shapes.
pub fn check_tensors(cfg: &LlamaConfig, tensors: &HashMap<String, Tensor>) -> Result<()> {
    check_tensors_named(cfg, tensors, &|n| n.to_string())
}

/// [`check_tensors`], naming tensors in messages with `display` (e.g. their GGUF names).
pub fn check_tensors_named(
    cfg: &LlamaConfig,
    tensors: &HashMap<String, Tensor>,
    display: &dyn Fn(&str) -> String,
) -> Result<()> {
    check_expected(&expected_tensors(cfg), tensors, display)
}

/// Checks that `tensors` holds every `(name, shape)` of `expected`; names in messages are shown
/// with `display`.
pub fn check_expected(
    expected: &[(String, Vec<usize>)],
    tensors: &HashMap<String, Tensor>,
    display: &dyn Fn(&str) -> String,
) -> Result<()> {
    let missing: Vec<String> = expected
        .iter()
        .filter(|(n, _)| !tensors.contains_key(n))
        .map(|(n, _)| display(n))
        .collect();
    if !missing.is_empty() {
        let shown = missing[..missing.len().min(5)].join(", ");
        let more = if missing.len() > 5 {
            format!(" and {} more", missing.len() - 5)
        } else {
            String::new()
        };
        bail!(
            "{} of {} tensors missing: {shown}{more}",
            missing.len(),
            expected.len()
        );
    }
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|(n, shape)| {
            let got = tensors[n].dims();
            (got != shape.as_slice())
                .then(|| format!("{}: expected {shape:?}, found {got:?}", display(n)))
        })
        .collect();
    if !wrong.is_empty() {
        let more = if wrong.len() > 3 {
            format!(" (and {} more)", wrong.len() - 3)
        } else {
            String::new()
        };
        bail!(
            "shape mismatch: {}{more}",
            wrong[..wrong.len().min(3)].join("; ")
        );
    }
    Ok(())
}

impl Weights {
    /// Loads a checkpoint given as an HF directory, a GGUF file, or a directory holding a GGUF
    /// (whole, or split into `NAME.gguf.partNN` pieces), dequantised/converted to f32 on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let source = resolve(path)?;
        let w = match &source {
            Source::HfDir(dir) => {
                let (config, tensors) = hf::load_dir(dir, device)?;
                Self {
                    config,
                    tensors,
                    blocks: BlockMap::new(),
                    source,
                }
            }
            Source::Gguf(parts) => {
                let (config, tensors, blocks) = gguf::load_parts(parts, device)?;
                Self {
                    config,
                    tensors,
                    blocks,
                    source,
                }
            }
            Source::Random { .. } => bail!("{}: not a checkpoint", path.display()),
        };
        let display = |n: &str| match (&w.source, gguf::gguf_name(n)) {
            (Source::Gguf(_), Some(g)) => format!("{g} ({n})"),
            _ => n.to_string(),
        };
        check_tensors_named(&w.config, &w.tensors, &display)
            .with_context(|| format!("{}: tensors do not match the config", path.display()))?;
        Ok(w)
    }

    /// Builds a model that shares these tensors (inference; no gradient tracking), decoding with
    /// the GGUF blocks where there are any (`Llama::use_blocks`).
    pub fn build(&self) -> Result<Llama> {
        check_tensors(&self.config, &self.tensors)?;
        let device = tensors_device(&self.tensors)?;
        let mut model = Llama::load(
            VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &device),
            &self.config,
        )?;
        if device.is_cpu() {
            model.use_blocks(&self.blocks)?;
        }
        Ok(model)
    }

    /// [`Weights::build`] with a choice of the weights that decoding multiplies ([`DecodeWeights`]).
    pub fn build_for(&self, decode: DecodeWeights) -> Result<Llama> {
        let blocks = match decode {
            DecodeWeights::Auto => return self.build(),
            DecodeWeights::F32 => BlockMap::new(),
            DecodeWeights::Q8_0 => with_q8_0_blocks(&self.config, &self.tensors, &self.blocks)?,
        };
        Weights {
            blocks,
            ..self.clone()
        }
        .build()
    }

    /// Builds a trainable model: every tensor becomes a `Var` of the returned map (for an
    /// optimizer), and the model reads those vars.
    pub fn build_trainable(&self) -> Result<(Llama, VarMap)> {
        check_tensors(&self.config, &self.tensors)?;
        let varmap = varmap_of(&self.tensors)?;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &tensors_device(&self.tensors)?);
        Ok((Llama::load(vb, &self.config)?, varmap))
    }

    /// The same model with its q/k projection rows reordered for `layout` (a no-op if it already
    /// is). Lets a GGUF-derived model be saved in the HF layout that `transformers` expects.
    pub fn to_rope_layout(&self, layout: RopeLayout) -> Result<Self> {
        if layout == self.config.rope_layout {
            return Ok(self.clone());
        }
        let cfg = &self.config;
        let hd = cfg.head_dim();
        let mut tensors = self.tensors.clone();
        let mut blocks = self.blocks.clone();
        for l in 0..cfg.num_hidden_layers {
            for (proj, heads) in [
                ("q_proj", cfg.num_attention_heads),
                ("k_proj", cfg.num_kv_heads()),
            ] {
                let name = format!("model.layers.{l}.self_attn.{proj}.weight");
                let w = tensors
                    .get(&name)
                    .with_context(|| format!("tensor {name} missing"))?;
                let permute = |rows: &Tensor| match layout {
                    RopeLayout::RotateHalf => interleaved_to_rotate_half(rows, heads, hd),
                    RopeLayout::Interleaved => rotate_half_to_interleaved(rows, heads, hd),
                };
                if let Some(b) = blocks.get(&name) {
                    let order = row_order(w.dim(0)?, permute)?;
                    blocks.insert(name.clone(), Arc::new(b.permute_rows(&order)?));
                }
                tensors.insert(name, permute(w)?);
            }
        }
        let mut config = cfg.clone();
        config.rope_layout = layout;
        Ok(Self {
            config,
            tensors,
            blocks,
            source: self.source.clone(),
        })
    }
}

/// The row order a row permutation `permute` (of a `(rows, cols)` matrix) applies: row `i` of its
/// result is row `order[i]` of its input. Found by permuting a column of row numbers, so that it
/// is the very permutation applied to the f32 weights.
fn row_order(
    rows: usize,
    permute: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Vec<usize>> {
    let numbers: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    let column = Tensor::from_vec(numbers, (rows, 1), &Device::Cpu)?;
    let permuted: Vec<f32> = permute(&column)?.flatten_all()?.to_vec1()?;
    Ok(permuted.into_iter().map(|r| r as usize).collect())
}

/// Decides what `path` is: a `.gguf` file (or any file: GGUF is the only single-file format), or
/// a directory with `*.safetensors` (HF) or with exactly one GGUF, whole or in `.partNN` pieces.
pub fn resolve(path: &Path) -> Result<Source> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("model path {} cannot be read", path.display()))?;
    if meta.is_file() {
        return Ok(Source::Gguf(vec![path.to_path_buf()]));
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list model directory {}", path.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    if names.iter().any(|n| n.ends_with(".safetensors")) {
        return Ok(Source::HfDir(path.to_path_buf()));
    }
    // GGUF: whole files, and pieces grouped by the name before ".partNN".
    let whole: Vec<&String> = names.iter().filter(|n| n.ends_with(".gguf")).collect();
    let mut split: HashMap<String, Vec<(usize, &String)>> = HashMap::new();
    for n in &names {
        if let Some((base, idx)) = part_index(n) {
            split.entry(base.to_string()).or_default().push((idx, n));
        }
    }
    let count = whole.len() + split.len();
    if count == 0 {
        bail!(
            "{}: no model found (expected *.safetensors with config.json, a *.gguf file, or *.gguf.partNN pieces)",
            path.display()
        );
    }
    if count > 1 {
        let mut all: Vec<String> = whole.iter().map(|s| s.to_string()).collect();
        all.extend(split.keys().map(|b| format!("{b}.partNN")));
        all.sort();
        bail!(
            "{}: more than one GGUF model: {}",
            path.display(),
            all.join(", ")
        );
    }
    if let Some(w) = whole.first() {
        return Ok(Source::Gguf(vec![path.join(w)]));
    }
    let (base, mut pieces) = split.into_iter().next().expect("one split GGUF");
    pieces.sort();
    for (expect, (idx, name)) in pieces.iter().enumerate() {
        if *idx != expect {
            bail!(
                "{}: GGUF pieces of {base} are not numbered 0..{}: {name} found where part {expect:02} was expected",
                path.display(),
                pieces.len()
            );
        }
    }
    Ok(Source::Gguf(
        pieces.into_iter().map(|(_, n)| path.join(n)).collect(),
    ))
}

/// `("X.gguf", 3)` for `"X.gguf.part03"`.
fn part_index(name: &str) -> Option<(&str, usize)> {
    let (base, digits) = name.rsplit_once(".part")?;
    if !base.ends_with(".gguf") || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((base, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names() {
        assert_eq!(part_index("M.gguf.part00"), Some(("M.gguf", 0)));
        assert_eq!(part_index("M.gguf.part12"), Some(("M.gguf", 12)));
        assert_eq!(part_index("M.gguf.partx"), None);
        assert_eq!(part_index("M.bin.part01"), None);
        assert_eq!(part_index("M.gguf"), None);
    }
}
