//! GGUF (llama.cpp) checkpoints: read whole or from `.partNN` pieces, every tensor dequantised to
//! f32 and renamed to its HF name. Matrices in `Q4_0`, `Q4_1` or `Q8_0` are also kept in their
//! blocks, for decoding ([`retro_kernels::BlockMatrix`], `Llama::use_blocks`).
//!
//! Dequantising at load (rather than keeping candle's quantized matmul) is deliberate: quantized
//! matmul has no backward pass, and the Retro model trains on top of these weights (shared/data
//! MANIFEST §2). It also makes our logits those of the exact dequantised weights, which is what the
//! float64 reference in `reference_generation.json` used.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use retro_kernels::{BlockFormat, BlockMatrix};

use crate::config::{LlamaConfig, RopeLayout};
use crate::linear::BlockMap;

/// What a GGUF file gives: the decoder config, f32 tensors under HF names, and the blocks of the
/// matrices stored in a format [`BlockMatrix`] reads, under the same names.
pub type Loaded = (LlamaConfig, HashMap<String, Tensor>, BlockMap);

/// Reads the GGUF made of `parts` (concatenated in the given order; one path for a whole file),
/// returns its config (from the metadata), its tensors under HF names in f32 on `device`, and the
/// blocks of its 4/8-bit matrices.
/// The config has [`RopeLayout::Interleaved`]: llama.cpp's converter stores q/k permuted for it.
pub fn load_parts(parts: &[PathBuf], device: &Device) -> Result<Loaded> {
    let name = match parts {
        [] => bail!("no GGUF file given"),
        [one] => one.display().to_string(),
        [first, ..] => format!("{} (+{} more parts)", first.display(), parts.len() - 1),
    };
    let mut bytes = Vec::new();
    for p in parts {
        // Appended in place: reading each part into its own buffer first would double peak memory.
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
            .with_context(|| format!("cannot read GGUF file {}", p.display()))?;
    }
    load_bytes(bytes, device).with_context(|| format!("GGUF {name}"))
}

/// [`load_parts`] on the bytes of a whole GGUF file.
pub fn load_bytes(bytes: Vec<u8>, device: &Device) -> Result<Loaded> {
    let mut reader = Cursor::new(bytes);
    let content = Content::read(&mut reader).context(
        "not a readable GGUF file (bad magic, truncated, or an unsupported tensor type)",
    )?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let vocab_from_embd = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0]);
    let config = config_from_metadata(&content.metadata, vocab_from_embd, !has_output)?;

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = HashMap::with_capacity(names.len());
    let mut blocks = BlockMap::new();
    for gguf_name in names {
        let hf_name = hf_name(gguf_name)?;
        let info = &content.tensor_infos[gguf_name];
        let q = content
            .tensor(&mut reader, gguf_name, device)
            .with_context(|| format!("cannot read tensor {gguf_name} ({:?})", info.ggml_dtype))?;
        let t = q.dequantize(device).with_context(|| {
            format!(
                "cannot dequantise tensor {gguf_name} ({:?})",
                info.ggml_dtype
            )
        })?;
        let format = match info.ggml_dtype {
            GgmlDType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlDType::Q4_1 => Some(BlockFormat::Q4_1),
            GgmlDType::Q8_0 => Some(BlockFormat::Q8_0),
            _ => None,
        };
        if let (Some(format), [rows, cols]) = (format, t.dims()) {
            let b = BlockMatrix::from_ggml(format, *rows, *cols, &q.data()?)
                .with_context(|| format!("tensor {gguf_name}"))?;
            blocks.insert(hf_name.clone(), Arc::new(b));
        }
        tensors.insert(hf_name, t);
    }
    Ok((config, tensors, blocks))
}

/// HF name of a llama GGUF tensor (llama.cpp `gguf-py/gguf/tensor_mapping.py`, LLAMA entries).
pub fn hf_name(gguf_name: &str) -> Result<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        "rope_freqs.weight" => bail!(
            "tensor rope_freqs.weight: RoPE frequency scaling (Llama 3.1 style) is not supported"
        ),
        _ => None,
    };
    if let Some(n) = fixed {
        return Ok(n.to_string());
    }
    let unexpected = || anyhow::anyhow!("unexpected tensor {gguf_name} for a llama decoder");
    let rest = gguf_name.strip_prefix("blk.").ok_or_else(unexpected)?;
    let (layer, leaf) = rest.split_once('.').ok_or_else(unexpected)?;
    let layer: usize = layer.parse().map_err(|_| unexpected())?;
    let hf_leaf = match leaf {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return Err(unexpected()),
    };
    Ok(format!("model.layers.{layer}.{hf_leaf}"))
}

/// GGUF name of an HF tensor name (inverse of [`hf_name`]), for error messages.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let leaf = match leaf {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{leaf}"))
}

fn get_int(md: &HashMap<String, Value>, key: &str) -> Result<Option<usize>> {
    let v = match md.get(key) {
        None => return Ok(None),
        Some(v) => v,
    };
    let n: i128 = match v {
        Value::U8(x) => *x as i128,
        Value::I8(x) => *x as i128,
        Value::U16(x) => *x as i128,
        Value::I16(x) => *x as i128,
        Value::U32(x) => *x as i128,
        Value::I32(x) => *x as i128,
        Value::U64(x) => *x as i128,
        Value::I64(x) => *x as i128,
        other => bail!("metadata {key}: expected an integer, found {other:?}"),
    };
    usize::try_from(n)
        .map(Some)
        .map_err(|_| anyhow::anyhow!("metadata {key}: {n} is out of range"))
}

fn get_float(md: &HashMap<String, Value>, key: &str) -> Result<Option<f64>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(*x as f64)),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(other) => bail!("metadata {key}: expected a float, found {other:?}"),
    }
}

fn require<T>(v: Option<T>, key: &str) -> Result<T> {
    v.with_context(|| format!("metadata {key} is missing"))
}

/// Builds the decoder config from `llama.*` metadata. The vocabulary size is the row count of
/// `token_embd` (the tokenizer list can be longer or absent); the head is tied when the file has
/// no `output.weight`, as llama.cpp decides.
fn config_from_metadata(
    md: &HashMap<String, Value>,
    vocab_from_embd: Option<usize>,
    tied: bool,
) -> Result<LlamaConfig> {
    let arch = match md.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => bail!("metadata general.architecture is not a string: {other:?}"),
        None => bail!("metadata general.architecture is missing"),
    };
    if arch != "llama" {
        bail!("unsupported GGUF architecture {arch:?}: only \"llama\" is supported");
    }
    if let Some(Value::String(s)) = md.get("llama.rope.scaling.type") {
        if s != "none" {
            bail!("RoPE scaling {s:?} is not supported");
        }
    }
    let hidden = require(
        get_int(md, "llama.embedding_length")?,
        "llama.embedding_length",
    )?;
    let heads = require(
        get_int(md, "llama.attention.head_count")?,
        "llama.attention.head_count",
    )?;
    let kv_heads = get_int(md, "llama.attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = get_int(md, "llama.attention.key_length")?.unwrap_or(hidden / heads.max(1));
    if let Some(rope_dim) = get_int(md, "llama.rope.dimension_count")? {
        if rope_dim != head_dim {
            bail!("partial RoPE (rope.dimension_count {rope_dim} != head_dim {head_dim}) is not supported");
        }
    }
    let vocab = match vocab_from_embd {
        Some(v) => v,
        None => bail!("tensor token_embd.weight is missing"),
    };
    let cfg = LlamaConfig {
        architectures: Some(vec!["LlamaForCausalLM".into()]),
        model_type: Some("llama".into()),
        hidden_size: hidden,
        intermediate_size: require(
            get_int(md, "llama.feed_forward_length")?,
            "llama.feed_forward_length",
        )?,
        num_hidden_layers: require(get_int(md, "llama.block_count")?, "llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(head_dim),
        rms_norm_eps: require(
            get_float(md, "llama.attention.layer_norm_rms_epsilon")?,
            "llama.attention.layer_norm_rms_epsilon",
        )?,
        rope_theta: get_float(md, "llama.rope.freq_base")?.unwrap_or(10_000.0),
        vocab_size: vocab,
        tie_word_embeddings: tied,
        max_position_embeddings: get_int(md, "llama.context_length")?.unwrap_or(2048),
        hidden_act: Some("silu".into()),
        rope_scaling: None,
        attention_bias: false,
        mlp_bias: false,
        rope_layout: RopeLayout::Interleaved,
    };
    cfg.validate()
        .context("GGUF metadata describes an unsupported model")?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::expected_tensors;

    #[test]
    fn names_round_trip() {
        let mut cfg = crate::tiny::tiny_config();
        cfg.tie_word_embeddings = false;
        for (hf, _) in expected_tensors(&cfg) {
            let g = gguf_name(&hf).unwrap_or_else(|| panic!("no GGUF name for {hf}"));
            assert_eq!(hf_name(&g).unwrap(), hf);
        }
        assert!(hf_name("blk.x.attn_q.weight").is_err());
        assert!(hf_name("blk.0.attn_qkv.weight").is_err());
        assert!(hf_name("rope_freqs.weight")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }
}
