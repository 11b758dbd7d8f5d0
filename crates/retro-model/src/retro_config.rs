//! Hyper-parameters of a Retro model: the decoder's [`LlamaConfig`] plus the retrieval fields
//! (shared reference `retro-reference.md` §1.1–1.2). Serialised as the `config.json` of a Retro
//! checkpoint, with the decoder's HF config nested under `"decoder"` (so that it stays a valid HF
//! `LlamaConfig` that Python can read as is).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;

/// `architectures[0]` of a Retro checkpoint's `config.json`.
pub const RETRO_ARCHITECTURE: &str = "RetroLlamaForCausalLM";
/// `model_type` of a Retro checkpoint's `config.json`.
pub const RETRO_MODEL_TYPE: &str = "retro_llama";

/// The reference's default Retro layers, as **1-based** layer numbers (layer 1 is the first
/// decoder layer): every 3rd layer from 6, or from 9 when the decoder has more than 15 layers, up to
/// and including the last layer.
///
/// Reference §1.2: `start = 6 if num_layers <= 15 else 9; range(start, num_layers + 1, 3)`
/// (Megatron `get_retro_decoder_block_spec`, and legacy `ParallelTransformer.__init__`). 12 layers
/// → `[6, 9, 12]`; 24 → `[9, 12, …, 24]`; 30 (SmolLM2-135M) → `[9, 12, …, 30]`. Fewer than 6
/// layers gives no Retro layer at all (then [`RetroConfig::new`] needs explicit layers).
pub fn default_retro_layer_numbers(num_layers: usize) -> Vec<usize> {
    let start = if num_layers <= 15 { 6 } else { 9 };
    (start..=num_layers).step_by(3).collect()
}

/// The retrieval fields of a Retro config, with the reference's defaults (§1.1); see
/// [`RetroConfig`] for their meaning.
#[derive(Debug, Clone, PartialEq)]
pub struct RetroOptions {
    pub chunk_len: usize,
    pub num_neighbors: usize,
    pub retrieved_len: usize,
    /// 1-based; `None` = [`default_retro_layer_numbers`].
    pub retro_layer_numbers: Option<Vec<usize>>,
    pub encoder_layers: usize,
    pub gate: f64,
}

impl Default for RetroOptions {
    fn default() -> Self {
        Self {
            chunk_len: 64,
            num_neighbors: 2,
            retrieved_len: 128,
            retro_layer_numbers: None,
            encoder_layers: 2,
            gate: 1.0,
        }
    }
}

/// A Retro model's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetroConfig {
    /// `[RETRO_ARCHITECTURE]`.
    pub architectures: Vec<String>,
    /// [`RETRO_MODEL_TYPE`].
    pub model_type: String,
    /// m: tokens per chunk (reference default 64).
    pub chunk_len: usize,
    /// k: neighbours per chunk fed to the model (default 2).
    pub num_neighbors: usize,
    /// r: tokens per neighbour, the neighbour chunk plus its continuation (default 128 = 2·m).
    pub retrieved_len: usize,
    /// Decoder layers with chunked cross-attention, **1-based** as in the reference (layer 1 is
    /// `model.layers.0`). The first one also runs the encoder (§1.2).
    pub retro_layer_numbers: Vec<usize>,
    /// Depth of the retrieval encoder (default 2); its first layer cross-attends to the decoder.
    pub encoder_layers: usize,
    /// Fixed scalar multiplying the CCA output before the residual add (legacy Megatron
    /// `--retro-attention-gate`, default 1.0; not learned). 0 turns retrieval off exactly.
    pub gate: f64,
    /// Rotary position embeddings (positions 0..r-1 of each neighbour) in the encoder's
    /// self-attention. Off in the reference, where no positional information reaches the encoder
    /// (§1.5): its neighbours are then a bag of tokens to the model, which can tell which tokens a
    /// neighbour holds but not which one follows which, so it cannot copy a continuation
    /// (docs/deviations.md). Absent from the config.json of models without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encoder_rope: bool,
    /// The decoder (an HF `LlamaConfig`, in the HF rotate-half RoPE layout in saved checkpoints).
    pub decoder: LlamaConfig,
}

impl RetroConfig {
    /// `decoder` plus `opts`, validated.
    pub fn new(decoder: LlamaConfig, opts: &RetroOptions) -> Result<Self> {
        let layers = opts
            .retro_layer_numbers
            .clone()
            .unwrap_or_else(|| default_retro_layer_numbers(decoder.num_hidden_layers));
        let cfg = Self {
            architectures: vec![RETRO_ARCHITECTURE.to_string()],
            model_type: RETRO_MODEL_TYPE.to_string(),
            chunk_len: opts.chunk_len,
            num_neighbors: opts.num_neighbors,
            retrieved_len: opts.retrieved_len,
            retro_layer_numbers: layers,
            encoder_layers: opts.encoder_layers,
            gate: opts.gate,
            encoder_rope: false,
            decoder,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Turns [`RetroConfig::encoder_rope`] on or off, checking that the rotary table covers a neighbour.
    pub fn set_encoder_rope(&mut self, on: bool) -> Result<()> {
        self.encoder_rope = on;
        self.validate()
    }

    /// Reads and validates a Retro `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        if !is_retro_config_value(&v) {
            bail!(
                "{}: not a Retro checkpoint config (architectures {} instead of [\"{RETRO_ARCHITECTURE}\"])",
                path.display(),
                v.get("architectures").map(|a| a.to_string()).unwrap_or_else(|| "missing".into())
            );
        }
        let cfg: Self = serde_json::from_value(v)
            .with_context(|| format!("{}: not a valid Retro config.json", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}: unsupported Retro config", path.display()))?;
        Ok(cfg)
    }

    /// 0-based indices of the Retro layers into `model.layers`.
    pub fn retro_layer_indices(&self) -> Vec<usize> {
        self.retro_layer_numbers.iter().map(|n| n - 1).collect()
    }

    /// Whether decoder layer `index` (0-based) has chunked cross-attention.
    pub fn is_retro_layer(&self, index: usize) -> bool {
        self.retro_layer_numbers.contains(&(index + 1))
    }

    pub fn validate(&self) -> Result<()> {
        if self.architectures.first().map(String::as_str) != Some(RETRO_ARCHITECTURE) {
            bail!(
                "architectures must be [\"{RETRO_ARCHITECTURE}\"], got {:?}",
                self.architectures
            );
        }
        self.decoder.validate().context("decoder config")?;
        for (name, v) in [
            ("chunk_len", self.chunk_len),
            ("num_neighbors", self.num_neighbors),
            ("retrieved_len", self.retrieved_len),
            ("encoder_layers", self.encoder_layers),
        ] {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        if self.encoder_rope && self.retrieved_len > self.decoder.max_position_embeddings {
            bail!(
                "encoder_rope needs retrieved_len {} <= the decoder's max_position_embeddings {}",
                self.retrieved_len,
                self.decoder.max_position_embeddings
            );
        }
        let n = self.decoder.num_hidden_layers;
        if self.retro_layer_numbers.is_empty() {
            bail!(
                "no Retro layer: the default rule (every 3rd layer from 6, or from 9 above 15 layers) gives none for {n} decoder layers; give the layers explicitly"
            );
        }
        if let Some(bad) = self.retro_layer_numbers.iter().find(|&&l| l == 0 || l > n) {
            bail!("Retro layer {bad} is outside 1..={n} (layer numbers are 1-based)");
        }
        if self.retro_layer_numbers.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "Retro layers must be strictly increasing, got {:?}",
                self.retro_layer_numbers
            );
        }
        if !self.gate.is_finite() {
            bail!("gate must be finite, got {}", self.gate);
        }
        Ok(())
    }
}

/// Whether a parsed `config.json` declares a Retro model.
pub fn is_retro_config_value(v: &serde_json::Value) -> bool {
    v.get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(RETRO_ARCHITECTURE)))
}

/// Whether `dir/config.json` exists and declares a Retro model (false for anything else).
pub fn is_retro_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| is_retro_config_value(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layer_rule() {
        assert_eq!(default_retro_layer_numbers(12), vec![6, 9, 12]);
        assert_eq!(default_retro_layer_numbers(15), vec![6, 9, 12, 15]);
        assert_eq!(default_retro_layer_numbers(16), vec![9, 12, 15]);
        assert_eq!(default_retro_layer_numbers(24), vec![9, 12, 15, 18, 21, 24]);
        assert_eq!(
            default_retro_layer_numbers(30),
            vec![9, 12, 15, 18, 21, 24, 27, 30]
        );
        assert_eq!(
            default_retro_layer_numbers(32),
            vec![9, 12, 15, 18, 21, 24, 27, 30]
        );
        assert_eq!(default_retro_layer_numbers(6), vec![6]);
        assert!(default_retro_layer_numbers(5).is_empty());
    }
}
