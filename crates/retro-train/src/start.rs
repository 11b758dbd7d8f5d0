//! The weights a run starts from, by mode: a new model from a config (pretrain), a Retro
//! checkpoint, or a GPT retro-fitted on the fly (reference §2), and the directory whose tokenizer
//! the model speaks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use retro_model::config::LlamaConfig;
use retro_model::retro_config::{is_retro_checkpoint, is_retro_config_value};
use retro_model::retro_weights::{init_decoder_tensors, init_retro_tensors, retrofit, source_dir};
use retro_model::{CcaInit, RetroConfig, RetroInit, RetroOptions, RetroWeights, Weights};

use crate::checkpoint::resolve_checkpoint;
use crate::options::{CcaInitChoice, Mode, TrainOptions};

/// Starting weights, and where the model's tokenizer.json is (None: use the DB's own).
pub struct Start {
    pub weights: RetroWeights,
    pub tokenizer_dir: Option<PathBuf>,
}

/// The Retro fields for a model trained on a DB with chunks of `chunk_len` (reference defaults:
/// k = 2 neighbours of chunk + continuation).
fn retro_options(chunk_len: usize) -> RetroOptions {
    RetroOptions {
        chunk_len,
        retrieved_len: 2 * chunk_len,
        ..RetroOptions::default()
    }
}

fn retro_init(o: &TrainOptions) -> RetroInit {
    RetroInit {
        seed: o.seed,
        std: o.init_std,
        cca: match o.cca_init {
            Some(CcaInitChoice::Zero) => CcaInit::Zero,
            _ => CcaInit::Random,
        },
    }
}

pub fn starting_weights(o: &TrainOptions, chunk_len: usize, device: &Device) -> Result<Start> {
    if o.mode == Mode::Pretrain {
        let mut cfg = config_for_pretraining(&o.model, chunk_len)?;
        if o.encoder_rope {
            cfg.set_encoder_rope(true)?;
        }
        let mut tensors = init_decoder_tensors(&cfg.decoder, o.seed, o.init_std, device)?;
        tensors.extend(init_retro_tensors(&cfg, &retro_init(o), device)?);
        let weights = RetroWeights {
            config: cfg,
            tensors,
        };
        weights.check()?;
        return Ok(Start {
            weights,
            tokenizer_dir: None,
        });
    }
    let path = resolve_checkpoint(&o.model)?;
    if path.is_file() && path.extension().is_some_and(|e| e == "json") {
        bail!(
            "{}: --mode {} starts from weights (a checkpoint, HF directory or GGUF), not a config; only --mode pretrain takes a config.json",
            path.display(),
            if o.mode == Mode::Retrofit { "retrofit" } else { "gptfit" }
        );
    }
    if path.is_dir() && is_retro_checkpoint(&path) {
        let mut weights = RetroWeights::load(&path, device)
            .with_context(|| format!("cannot load the Retro checkpoint {}", path.display()))?;
        if o.mode == Mode::Retrofit && o.cca_init.is_some() {
            // Keep the decoder, draw the encoder and CCA anew.
            let fresh = init_retro_tensors(&weights.config, &retro_init(o), device)?;
            weights.tensors.extend(fresh);
            if o.encoder_rope {
                weights.config.set_encoder_rope(true)?;
            }
        } else if o.encoder_rope && !weights.config.encoder_rope {
            bail!(
                "{}: --encoder-rope changes what a trained encoder computes; give --cca-init to draw a new encoder with it",
                path.display()
            );
        }
        return Ok(Start {
            weights,
            tokenizer_dir: Some(path),
        });
    }
    let base = Weights::load(&path, device)
        .with_context(|| format!("cannot load the model {}", path.display()))?;
    let tokenizer_dir = source_dir(&base.source);
    let mut weights = retrofit(&base, &retro_options(chunk_len), &retro_init(o))?;
    weights.config.set_encoder_rope(o.encoder_rope)?;
    Ok(Start {
        weights,
        tokenizer_dir,
    })
}

/// A Retro config from a JSON file: a Retro config as is, or a Llama config given the default
/// Retro fields for `chunk_len`.
fn config_for_pretraining(path: &Path, chunk_len: usize) -> Result<RetroConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: cannot read (--mode pretrain takes a config.json)",
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let cfg = if is_retro_config_value(&v) {
        RetroConfig::from_json_file(path)?
    } else {
        let decoder: LlamaConfig = serde_json::from_value(v)
            .with_context(|| format!("{}: not a Llama or Retro config", path.display()))?;
        decoder
            .validate()
            .with_context(|| format!("{}: unsupported config", path.display()))?;
        RetroConfig::new(decoder, &retro_options(chunk_len))
            .with_context(|| format!("{}: cannot make a Retro config of it", path.display()))?
    };
    if cfg.chunk_len != chunk_len {
        bail!(
            "{}: chunk_len {} differs from the DB's chunks of {chunk_len} tokens",
            path.display(),
            cfg.chunk_len
        );
    }
    Ok(cfg)
}
