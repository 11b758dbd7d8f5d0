//! Key/value cache for incremental decoding.
//!
//! Each decoder layer keeps the keys (already rotated by RoPE at their own positions) and values
//! of every token seen so far, so that a forward over only the new tokens, at position offset
//! [`KvCache::seq_len`], attends to the whole sequence. Keys/values are stored per key/value head
//! (before the grouped-query expansion), which keeps the cache `num_attention_heads /
//! num_key_value_heads` times smaller (3x for SmolLM2).
//!
//! Updates are transactional: [`crate::Llama::forward`] stages the new entries of every layer and
//! commits them only when the whole forward succeeded, so a failed call (a bad token id, a sequence
//! past the context) leaves the cache as it was.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: `(k, v)`, each `(batch, kv_heads, seq_len, head_dim)`.
    layers: Vec<Option<(Tensor, Tensor)>>,
    seq_len: usize,
    batch: Option<usize>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            seq_len: 0,
            batch: None,
        }
    }

    /// Number of tokens already cached, i.e. the position of the next token.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Batch size the cache was filled with, if any.
    pub fn batch(&self) -> Option<usize> {
        self.batch
    }

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.seq_len = 0;
        self.batch = None;
    }

    /// Keys and values of the cached prefix followed by the new ones (`k`, `v`:
    /// `(batch, kv_heads, new, head_dim)`), without modifying the cache.
    pub fn extended(&self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        match self.layers.get(layer) {
            Some(Some((k0, v0))) => Ok((Tensor::cat(&[k0, k], 2)?, Tensor::cat(&[v0, v], 2)?)),
            Some(None) => Ok((k.clone(), v.clone())),
            None => candle_core::bail!(
                "kv cache has {} layers, layer {layer} requested",
                self.layers.len()
            ),
        }
    }

    /// Replaces every layer's entry with `staged` (the outputs of [`KvCache::extended`]) after a
    /// successful forward of `new_tokens` tokens.
    pub fn commit(&mut self, staged: Vec<(Tensor, Tensor)>, new_tokens: usize) -> Result<()> {
        if staged.len() != self.layers.len() {
            candle_core::bail!(
                "kv cache commit with {} layers, cache has {}",
                staged.len(),
                self.layers.len()
            );
        }
        let batch = staged.first().map(|(k, _)| k.dim(0)).transpose()?;
        for (slot, kv) in self.layers.iter_mut().zip(staged) {
            *slot = Some(kv);
        }
        self.seq_len += new_tokens;
        self.batch = batch;
        Ok(())
    }
}
