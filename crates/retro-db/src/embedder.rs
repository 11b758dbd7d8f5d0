//! The BERT embedder that keys the retrieval database: any HF BERT directory (config.json, tokenizer.json,
//! safetensors in f16 or f32) run through its sentence-transformers pipeline.
//!
//! Pooling follows `modules.json` and `1_Pooling/config.json`: mean pooling over the attention mask (the
//! sentence-transformers default), then L2 normalisation when a `Normalize` module is listed.
//! [`Pooling::Megatron`] is the reference's rule instead (reference §3.2): the mean over positions `1..len-1`, which
//! leaves out [CLS] and [SEP].

use crate::bert::{load_weights, Bert, BertConfig as Config};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over every real token, [CLS] and [SEP] included (sentence-transformers).
    Mean,
    /// Mean without [CLS] and [SEP] (Megatron's BERT embedder).
    Megatron,
    /// The [CLS] token's hidden state.
    Cls,
}

impl std::str::FromStr for Pooling {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Self::Mean),
            "megatron" => Ok(Self::Megatron),
            "cls" => Ok(Self::Cls),
            _ => bail!("unknown pooling {s:?} (expected mean, megatron or cls)"),
        }
    }
}

/// How a model directory says its embeddings are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedderSpec {
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub dim: usize,
}

pub struct Embedder {
    model: Bert,
    tokenizer: tokenizers::Tokenizer,
    pub spec: EmbedderSpec,
    pub dir: PathBuf,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// Reads the sentence-transformers pipeline of `dir`: pooling, normalisation and max_seq_length.
pub fn read_spec(dir: &Path, config: &Config) -> Result<EmbedderSpec> {
    let mut pooling = Pooling::Mean;
    let mut normalize = false;
    let modules_path = dir.join("modules.json");
    if modules_path.is_file() {
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        for module in &modules {
            if module.kind.ends_with("models.Pooling") {
                let pooling_config: PoolingConfig =
                    read_json(&dir.join(&module.path).join("config.json"))?;
                pooling = if pooling_config.pooling_mode_mean_tokens {
                    Pooling::Mean
                } else if pooling_config.pooling_mode_cls_token {
                    Pooling::Cls
                } else {
                    let mode = if pooling_config.pooling_mode_max_tokens {
                        "max"
                    } else if pooling_config.pooling_mode_mean_sqrt_len_tokens {
                        "mean_sqrt_len"
                    } else {
                        "none"
                    };
                    bail!(
                        "{}: pooling mode {mode} is not supported (mean or cls)",
                        dir.join(&module.path).display()
                    );
                };
            } else if module.kind.ends_with("models.Normalize") {
                normalize = true;
            }
        }
    }
    let st_config = dir.join("sentence_bert_config.json");
    let max_seq_length = if st_config.is_file() {
        let value: serde_json::Value = read_json(&st_config)?;
        value
            .get("max_seq_length")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    } else {
        None
    }
    .unwrap_or(config.max_position_embeddings)
    .min(config.max_position_embeddings);
    Ok(EmbedderSpec {
        pooling,
        normalize,
        max_seq_length,
        dim: config.hidden_size,
    })
}

fn find_weights(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list model directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no *.safetensors weights in the model directory",
            dir.display()
        );
    }
    Ok(files)
}

impl Embedder {
    /// Loads the model directory `dir`; `pooling` overrides what its pipeline says.
    pub fn load(dir: &Path, pooling: Option<Pooling>) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: embedder directory not found", dir.display());
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            bail!("{}: missing (an HF BERT directory needs config.json, tokenizer.json and safetensors)", config_path.display());
        }
        let config: Config = read_json(&config_path)?;
        let mut spec = read_spec(dir, &config)?;
        if let Some(p) = pooling {
            spec.pooling = p;
        }
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            bail!(
                "{}: missing (the embedder needs a tokenizers JSON file)",
                tokenizer_path.display()
            );
        }
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", tokenizer_path.display()))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: spec.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("{}: {e}", tokenizer_path.display()))?;
        tokenizer.with_padding(None);
        let weights = find_weights(dir)?;
        let vb = load_weights(&weights)
            .with_context(|| format!("{}: cannot read safetensors", dir.display()))?;
        let model = Bert::load(vb, &config)
            .with_context(|| format!("{}: cannot load BERT weights", dir.display()))?;
        Ok(Self {
            model,
            tokenizer,
            spec,
            dir: dir.to_path_buf(),
        })
    }

    /// BERT token ids of `text`: [CLS] … [SEP], truncated to max_seq_length.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow!("BERT tokenizer failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds one padded batch of token id lists.
    pub fn embed_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (hidden, seq) = self.model.forward(batch)?;
        let dim = self.spec.dim;
        Ok(batch
            .iter()
            .enumerate()
            .map(|(b, tokens)| {
                let states = |p: usize| &hidden[(b * seq + p) * dim..(b * seq + p + 1) * dim];
                let len = tokens.len();
                let positions = match self.spec.pooling {
                    Pooling::Mean => 0..len,
                    Pooling::Megatron => 1..len.saturating_sub(1).max(1),
                    Pooling::Cls => 0..1.min(len),
                };
                let mut pooled = vec![0f32; dim];
                for p in positions.clone() {
                    pooled
                        .iter_mut()
                        .zip(states(p))
                        .for_each(|(acc, &x)| *acc += x);
                }
                let count = positions.len();
                if count > 0 {
                    pooled.iter_mut().for_each(|x| *x /= count as f32);
                }
                if self.spec.normalize {
                    let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    pooled.iter_mut().for_each(|x| *x /= norm);
                }
                pooled
            })
            .collect())
    }

    /// Embeds `texts` in batches of `batch_size`, sorted by length to cut padding; results come back in input order.
    pub fn embed(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let token_ids: Vec<Vec<u32>> = {
            use rayon::prelude::*;
            texts
                .par_iter()
                .map(|t| self.token_ids(t))
                .collect::<Result<_>>()?
        };
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| (token_ids[i].len(), i));
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(batch_size.max(1)) {
            let ids: Vec<Vec<u32>> = batch.iter().map(|&i| token_ids[i].clone()).collect();
            for (&i, embedding) in batch.iter().zip(self.embed_ids(&ids)?) {
                out[i] = embedding;
            }
        }
        Ok(out)
    }
}
