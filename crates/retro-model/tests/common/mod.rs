//! Helpers shared by the integration tests: writing a model as an HF directory or as a GGUF file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use retro_model::gguf::gguf_name;
use retro_model::{RopeLayout, Weights};

/// Max |t| over all elements of an f32 tensor.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Max |a - b| over two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    max_abs(&(a - b).unwrap())
}

/// Greedy (argmax over the last dimension) token ids of `[b, n, vocab]` logits, flattened.
pub fn argmax_ids(logits: &Tensor) -> Vec<u32> {
    logits
        .argmax(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Writes `w` (any layout) as an HF directory: config.json + model.safetensors, HF layout.
pub fn save_hf_dir(w: &Weights, dir: &Path) {
    let hf = w.to_rope_layout(RopeLayout::RotateHalf).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = serde_json::to_value(&hf.config).unwrap();
    // A real HF config.json has no rope_layout field; rotate-half must be the default.
    cfg.as_object_mut().unwrap().remove("rope_layout");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(&hf.tensors, dir.join("model.safetensors")).unwrap();
}

/// Writes `w` as a llama GGUF (f32 tensors, q/k rows in the interleaved layout as llama.cpp's
/// converter writes them), leaving out the HF tensors named in `omit`, with `arch` as
/// `general.architecture`.
pub fn write_gguf(w: &Weights, path: &Path, omit: &[&str], arch: &str) {
    let g = w.to_rope_layout(RopeLayout::Interleaved).unwrap();
    let c = &g.config;
    let u32v = |x: usize| Value::U32(x as u32);
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.to_string())),
        ("llama.embedding_length", u32v(c.hidden_size)),
        ("llama.feed_forward_length", u32v(c.intermediate_size)),
        ("llama.block_count", u32v(c.num_hidden_layers)),
        ("llama.attention.head_count", u32v(c.num_attention_heads)),
        ("llama.attention.head_count_kv", u32v(c.num_kv_heads())),
        ("llama.rope.dimension_count", u32v(c.head_dim())),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(c.rms_norm_eps as f32),
        ),
        ("llama.rope.freq_base", Value::F32(c.rope_theta as f32)),
        ("llama.context_length", u32v(c.max_position_embeddings)),
    ];
    let mut names: Vec<&String> = g
        .tensors
        .keys()
        .filter(|n| !omit.contains(&n.as_str()))
        .collect();
    names.sort();
    let qs: HashMap<String, QTensor> = names
        .iter()
        .map(|n| {
            (
                gguf_name(n).unwrap(),
                QTensor::quantize(&g.tensors[*n], GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut keys: Vec<&String> = qs.keys().collect();
    keys.sort();
    let t_refs: Vec<(&str, &QTensor)> = keys.iter().map(|k| (k.as_str(), &qs[*k])).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

/// Splits the file at `path` into `n` pieces `{path}.part00..` in `dir`.
pub fn split_file(path: &Path, dir: &Path, n: usize) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let step = bytes.len().div_ceil(n);
    for (i, chunk) in bytes.chunks(step).enumerate() {
        std::fs::write(dir.join(format!("{name}.part{i:02}")), chunk).unwrap();
    }
}
