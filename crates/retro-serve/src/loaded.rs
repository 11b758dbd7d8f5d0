//! Loading a model for inference: a Retro checkpoint directory (from `retro model retrofit` or `retro train`), an HF
//! directory, a GGUF file, or a directory holding a GGUF whole or split into `.partNN` pieces; and the tokens that end
//! its generation.

use anyhow::{Context, Result};
use retro_data::GptTokenizer;
use retro_model::candle_core::Device;
use retro_model::retro_config::is_retro_checkpoint;
use retro_model::retro_weights::source_dir;
use retro_model::{DecodeWeights, Llama, RetroModel, RetroWeights, Weights};
use std::path::{Path, PathBuf};

/// A plain GPT or a Retro model.
pub enum LoadedModel {
    Gpt(Box<Llama>),
    Retro(Box<RetroModel>),
}

impl LoadedModel {
    /// The model and the directory holding its tokenizer.json; decoding multiplies the weights
    /// that `decode` names ([`DecodeWeights`]).
    pub fn load(path: &Path, device: &Device, decode: DecodeWeights) -> Result<(Self, PathBuf)> {
        if !path.exists() {
            anyhow::bail!("model: {} does not exist", path.display());
        }
        if path.is_dir() && is_retro_checkpoint(path) {
            let w = RetroWeights::load(path, device)
                .with_context(|| format!("cannot load the Retro checkpoint {}", path.display()))?;
            return Ok((
                Self::Retro(Box::new(w.build_for(decode)?)),
                path.to_path_buf(),
            ));
        }
        let w = Weights::load(path, device)
            .with_context(|| format!("cannot load the model {}", path.display()))?;
        let dir = source_dir(&w.source).unwrap_or_else(|| path.to_path_buf());
        Ok((Self::Gpt(Box::new(w.build_for(decode)?)), dir))
    }

    /// The model's context length (max_position_embeddings).
    pub fn context_len(&self) -> usize {
        match self {
            Self::Gpt(m) => m.config().max_position_embeddings,
            Self::Retro(m) => m.config().decoder.max_position_embeddings,
        }
    }
}

/// End-of-text tokens: the `eos_token_id` of a config.json next to the tokenizer (a Retro checkpoint nests it under
/// "decoder"), and whichever of the usual end markers the vocabulary has.
pub fn stop_tokens(tokenizer: &GptTokenizer, dir: &Path) -> Vec<u32> {
    let mut stop: Vec<u32> = ["<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "<|eot_id|>"]
        .iter()
        .filter_map(|t| tokenizer.inner().token_to_id(t))
        .collect();
    let config = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if let Some(c) = config {
        let c = c.get("decoder").cloned().unwrap_or(c);
        match c.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => stop.extend(n.as_u64().map(|i| i as u32)),
            Some(serde_json::Value::Array(a)) => {
                stop.extend(a.iter().filter_map(|v| v.as_u64()).map(|i| i as u32))
            }
            _ => {}
        }
    }
    stop.sort_unstable();
    stop.dedup();
    stop
}
