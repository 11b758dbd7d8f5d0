//! Unmasked multi-head attention without rotary embeddings, from queries `x` to a context `ctx`:
//! Retro's chunked cross-attention, the encoder's cross-attention to the decoder, and (with
//! `ctx = x`) the encoder's bidirectional self-attention (reference §1.3, §1.5, §1.6: no mask, no
//! RoPE anywhere in the encoder or in CCA).
//!
//! Projections are named as in HF Llama (`q_proj`, `k_proj`, `v_proj`, `o_proj`, no bias; Megatron
//! fuses k and v into one `linear_kv`) and use the decoder's head layout, grouped-query included.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention::Projections;
use crate::config::LlamaConfig;
use crate::rope::RotaryEmbedding;

#[derive(Debug, Clone)]
pub struct CrossAttention {
    p: Projections,
}

impl CrossAttention {
    /// Loads `q_proj` `(heads*head_dim, hidden)`, `k_proj`/`v_proj` `(kv_heads*head_dim, hidden)`
    /// and `o_proj` `(hidden, heads*head_dim)` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        Ok(Self {
            p: Projections::load(&vb, cfg)?,
        })
    }

    /// `x` `(batch, t, hidden)` attends to every position of `ctx` `(batch, s, hidden)`.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_keys_values(x, &self.keys_values(ctx)?)
    }

    /// The keys and values of a context `(batch, s, hidden)`, each `(batch, kv_heads, s,
    /// head_dim)`. Generation computes them once per retrieved chunk and reuses them for the m
    /// tokens that attend to that chunk (at one token per step they cost more than the rest of
    /// the layer: s = k·r = 256 context rows against one query row).
    pub fn keys_values(&self, ctx: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s, _) = ctx.dims3()?;
        let (nkv, hd) = (self.p.num_kv_heads, self.p.head_dim);
        let heads = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()
        };
        Ok((
            heads(self.p.k_proj.forward(ctx)?)?,
            heads(self.p.v_proj.forward(ctx)?)?,
        ))
    }

    /// Self-attention of `x` `(batch, t, hidden)` with rotary embeddings at positions `0..t` on
    /// queries and keys: the encoder's self-attention when [`crate::RetroConfig::encoder_rope`] is
    /// set (a deviation from the reference, which gives the encoder no positions).
    pub fn forward_self_rotary(&self, x: &Tensor, rope: &RotaryEmbedding) -> Result<Tensor> {
        let (k, v) = self.keys_values(x)?;
        let q = rope.apply(&self.query_heads(x)?, 0)?;
        self.p.attend(&q, &rope.apply(&k, 0)?, &v, None)
    }

    /// [`CrossAttention::forward`] with the context's keys and values already computed
    /// ([`CrossAttention::keys_values`]).
    pub fn forward_keys_values(&self, x: &Tensor, (k, v): &(Tensor, Tensor)) -> Result<Tensor> {
        self.p.attend(&self.query_heads(x)?, k, v, None)
    }

    /// The queries of `x` `(batch, t, hidden)` as `(batch, heads, t, head_dim)`.
    fn query_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        self.p
            .q_proj
            .forward(x)?
            .reshape((b, t, self.p.num_heads, self.p.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }
}
