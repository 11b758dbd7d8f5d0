//! The GPT tokenizer that turns corpus text into tokens, identified by the hash of its `tokenizer.json`.

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub struct GptTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Hex SHA-256 of the tokenizer.json bytes: the identity a DB records.
    pub sha256: String,
    /// Id used to pad a document's last chunk.
    pub pad_id: u32,
    pub vocab_size: usize,
}

impl GptTokenizer {
    /// Loads `tokenizer.json` (or a directory containing one). The pad id is the `pad_token_id` / `eos_token_id` of a
    /// `config.json` next to it, else the `pad_token` / `eos_token` of `tokenizer_config.json`, else the first of
    /// `<|endoftext|>`, `</s>`, `<eos>`, `[PAD]` in the vocabulary; `pad_token` overrides all of these.
    pub fn load(path: &Path, pad_token: Option<&str>) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file)
            .with_context(|| format!("{}: cannot read tokenizer", file.display()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow!("{}: not a tokenizers JSON file: {e}", file.display()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let vocab_size = inner.get_vocab_size(true);
        let pad_id = match pad_token {
            Some(token) => inner.token_to_id(token).ok_or_else(|| {
                anyhow!(
                    "{}: --pad-token {token:?} is not in the vocabulary",
                    file.display()
                )
            })?,
            None => default_pad_id(&inner, file.parent().unwrap_or(Path::new("."))).ok_or_else(
                || {
                    anyhow!(
                        "{}: cannot tell the pad/EOS token; pass --pad-token",
                        file.display()
                    )
                },
            )?,
        };
        Ok(Self {
            inner,
            path: file,
            sha256,
            pad_id,
            vocab_size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails when this (a model's) tokenizer does not tokenise as `db`'s, the one the DB in `db_dir` was built
    /// with: neither the same file nor the same vocabulary.
    pub fn check_same_as_db(&self, db: &GptTokenizer, db_dir: &Path) -> Result<()> {
        if self.sha256 != db.sha256 && self.inner.get_vocab(true) != db.inner.get_vocab(true) {
            bail!(
                "the DB {} was built with another tokenizer (sha256 {}) than the model's {} (sha256 {}) and their \
                 vocabularies differ",
                db_dir.display(),
                &db.sha256[..12],
                self.path.display(),
                &self.sha256[..12]
            );
        }
        Ok(())
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizer failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes tokens to text, keeping special tokens out.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        self.inner
            .decode(tokens, true)
            .map_err(|e| anyhow!("tokenizer failed to decode: {e}"))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Fails when `sha256` (recorded by a DB) is not this tokenizer's.
    pub fn check_matches(&self, sha256: &str, what: &Path) -> Result<()> {
        if sha256 != self.sha256 {
            bail!(
                "{}: tokenizer {} (sha256 {}) does not match the one {} was built with (sha256 {})",
                self.path.display(),
                self.path.display(),
                &self.sha256[..12],
                what.display(),
                &sha256[..sha256.len().min(12)]
            );
        }
        Ok(())
    }
}

fn default_pad_id(tokenizer: &tokenizers::Tokenizer, dir: &Path) -> Option<u32> {
    let read_json = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    if let Some(config) = read_json("config.json") {
        for key in ["pad_token_id", "eos_token_id"] {
            if let Some(id) = config.get(key).and_then(|v| v.as_u64()) {
                return Some(id as u32);
            }
        }
    }
    if let Some(config) = read_json("tokenizer_config.json") {
        for key in ["pad_token", "eos_token"] {
            let token = config
                .get(key)
                .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()));
            if let Some(id) = token.and_then(|t| tokenizer.token_to_id(t)) {
                return Some(id);
            }
        }
    }
    ["<|endoftext|>", "</s>", "<eos>", "[PAD]"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
