//! Rotary position embeddings (RoPE) in both pairings, and the q/k weight permutation that
//! converts a checkpoint from one pairing to the other. See [`RopeLayout`] for why both exist.

use candle_core::{Device, Result, Tensor};

use crate::config::{LlamaConfig, RopeLayout};
use crate::ops;

/// Precomputed `cos`/`sin` tables for positions `0..max_position_embeddings`.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
}

impl RotaryEmbedding {
    /// Angle of pair `i` at position `p` is `p * theta^(-2i/head_dim)`. The angles are computed in
    /// f64 and rounded once to f32: at position 8000 an f32 product would already be off by ~1e-3
    /// rad.
    pub fn new(cfg: &LlamaConfig, device: &Device) -> Result<Self> {
        let hd = cfg.head_dim();
        let half = hd / 2;
        let n = cfg.max_position_embeddings;
        let inv: Vec<f64> = (0..half)
            .map(|i| cfg.rope_theta.powf(-((2 * i) as f64) / hd as f64))
            .collect();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (n, half), device)?,
            sin: Tensor::from_vec(sin, (n, half), device)?,
            layout: cfg.rope_layout,
        })
    }

    pub fn layout(&self) -> RopeLayout {
        self.layout
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates `x` of shape `(batch, heads, seq, head_dim)` whose first token sits at position
    /// `offset` (the KV-cache length during incremental decoding).
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        if offset + seq > self.max_positions() {
            candle_core::bail!(
                "positions {offset}..{} exceed max_position_embeddings {}",
                offset + seq,
                self.max_positions()
            );
        }
        let dtype = x.dtype();
        let cos = self.cos.narrow(0, offset, seq)?.to_dtype(dtype)?;
        let sin = self.sin.narrow(0, offset, seq)?.to_dtype(dtype)?;
        match self.layout {
            RopeLayout::Interleaved => ops::rope_interleaved(x, &cos, &sin),
            RopeLayout::RotateHalf => ops::rope_rotate_half(x, &cos, &sin),
        }
    }
}

/// Reorders the rows of a q or k projection weight `(n_heads * head_dim, in)` from the
/// interleaved pairing (GGUF) to the rotate-half pairing (HF): inside each head, row `2i + h`
/// moves to row `h * head_dim/2 + i`. This is the inverse of `LlamaModel.permute` in llama.cpp's
/// `convert_hf_to_gguf.py`, so interleaved RoPE on the input equals rotate-half RoPE on the output.
pub fn interleaved_to_rotate_half(w: &Tensor, n_heads: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    check_rows(rows, n_heads, head_dim)?;
    w.reshape((n_heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Inverse of [`interleaved_to_rotate_half`] (exactly llama.cpp's HF→GGUF permutation).
pub fn rotate_half_to_interleaved(w: &Tensor, n_heads: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    check_rows(rows, n_heads, head_dim)?;
    w.reshape((n_heads, 2, head_dim / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

fn check_rows(rows: usize, n_heads: usize, head_dim: usize) -> Result<()> {
    if rows != n_heads * head_dim || !head_dim.is_multiple_of(2) {
        candle_core::bail!(
            "cannot permute a q/k weight with {rows} rows as {n_heads} heads of dimension {head_dim}"
        );
    }
    Ok(())
}
