//! Hyper-parameters of a Llama-family decoder, read from an HF-style `config.json` (LlamaConfig)
//! or derived from GGUF metadata (see [`crate::gguf`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// How the two halves of each rotated pair are laid out inside a head, which must match how the
/// q/k projection weights were stored.
///
/// A rotary embedding rotates pairs of coordinates of every query/key head. Which coordinates form
/// a pair is a convention, and the checkpoint's q/k weight rows are ordered for one of them:
///
/// - [`RopeLayout::RotateHalf`]: pairs `(i, i + head_dim/2)` ("rotate half", GPT-NeoX style). This is
///   what HF `transformers` Llama uses, so it is the layout of HF safetensors checkpoints.
/// - [`RopeLayout::Interleaved`]: pairs `(2i, 2i+1)`. llama.cpp's converter permutes the HF q/k
///   rows when it writes a GGUF (`convert_hf_to_gguf.py`, `LlamaModel.permute`) so that llama.cpp
///   (and candle's `quantized_llama`) can use this layout; weights loaded from a GGUF therefore need it.
///
/// What breaks when it is wrong: nothing fails loudly. Every shape is the same, and position 0 is
/// unaffected (rotation by angle 0), so the first token's logits are still right; from position 1 on,
/// attention scores are computed between wrongly rotated vectors, and the relative-position signal is
/// scrambled: the model produces fluent-looking garbage or repeats itself, and reference logits
/// drift by whole units. `tests/tiny.rs` checks that the two layouts agree only with the matching
/// weight order, and [`crate::weights::Weights::to_rope_layout`] converts between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Pairs `(i, i + head_dim/2)`: HF `transformers` checkpoints. The default, because a
    /// `config.json` without this field comes from HF.
    #[default]
    RotateHalf,
    /// Pairs `(2i, 2i+1)`: GGUF / llama.cpp checkpoints.
    Interleaved,
}

/// An HF `LlamaConfig`, restricted to what a plain Llama decoder needs, plus [`RopeLayout`].
///
/// Unknown fields of an HF `config.json` (token ids, `torch_dtype`, …) are ignored; fields that would
/// change the math and that this implementation does not support (`rope_scaling`, biases, an
/// activation other than SiLU) are rejected by [`LlamaConfig::validate`] instead of being ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: each key/value head serves `num_attention_heads /
    /// num_key_value_heads` query heads. HF default: equal to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// HF default: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base; SmolLM2 uses 100000, so the HF default 10000 must not be assumed.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub vocab_size: usize,
    /// Output head shares the token embedding matrix (no `lm_head.weight` tensor).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Longest sequence (prompt + generated) the RoPE tables are built for.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// Our field (absent in HF files): which RoPE pairing the q/k weights expect.
    #[serde(default)]
    pub rope_layout: RopeLayout,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_position_embeddings() -> usize {
    2048
}

impl LlamaConfig {
    /// Reads and validates an HF `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let cfg: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid Llama config.json", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}: unsupported model config", path.display()))?;
        Ok(cfg)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Rejects configurations this decoder would silently compute wrongly.
    pub fn validate(&self) -> Result<()> {
        if let Some(archs) = &self.architectures {
            if !archs.iter().any(|a| a == "LlamaForCausalLM") {
                bail!("unknown architecture {archs:?}: only LlamaForCausalLM is supported");
            }
        }
        if let Some(mt) = &self.model_type {
            if mt != "llama" {
                bail!("unknown model_type {mt:?}: only \"llama\" is supported");
            }
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                bail!("hidden_act {act:?} is not supported (the SwiGLU MLP uses silu)");
            }
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            bail!("rope_scaling is not supported (plain RoPE only)");
        }
        if self.attention_bias || self.mlp_bias {
            bail!("attention_bias / mlp_bias are not supported (Llama projections have no bias)");
        }
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("head_dim", self.head_dim()),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_kv_heads()
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!("head_dim {} must be even for RoPE", self.head_dim());
        }
        if !is_positive(self.rms_norm_eps) || !is_positive(self.rope_theta) {
            bail!("rms_norm_eps and rope_theta must be positive");
        }
        Ok(())
    }
}

/// `x > 0`, false for NaN.
fn is_positive(x: f64) -> bool {
    x.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater)
}
