//! Unmasked multi-head attention without rotary embeddings, from queries `x` to a context `ctx`:
//! Retro's chunked cross-attention, the encoder's cross-attention to the decoder, and (with
//! `ctx = x`) the encoder's bidirectional self-attention (reference §1.3, §1.5, §1.6: no mask, no
//! RoPE anywhere in the encoder or in CCA).
//!
//! Projections are named as in HF Llama (`q_proj`, `k_proj`, `v_proj`, `o_proj`, no bias; Megatron
//! fuses k and v into one `linear_kv`) and use the decoder's head layout, grouped-query included.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::config::LlamaConfig;
use crate::mlp::linear;
use crate::ops;

#[derive(Debug, Clone)]
pub struct CrossAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl CrossAttention {
    /// Loads `q_proj` `(heads*head_dim, hidden)`, `k_proj`/`v_proj` `(kv_heads*head_dim, hidden)`
    /// and `o_proj` `(hidden, heads*head_dim)` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        Ok(Self {
            q_proj: linear(&vb, h, nh * hd, "q_proj")?,
            k_proj: linear(&vb, h, nkv * hd, "k_proj")?,
            v_proj: linear(&vb, h, nkv * hd, "v_proj")?,
            o_proj: linear(&vb, nh * hd, h, "o_proj")?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// `x` `(batch, t, hidden)` attends to every position of `ctx` `(batch, s, hidden)`.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let s = ctx.dim(1)?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x)?
            .reshape((b, t, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let heads = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, s, nkv, hd))?.transpose(1, 2)?.contiguous()
        };
        let k = heads(self.k_proj.forward(ctx)?)?;
        let v = heads(self.v_proj.forward(ctx)?)?;
        // Query head g*rep + r uses kv head g (as in `attention.rs`).
        let rep = nh / nkv;
        let q = (q * (1.0 / (hd as f64).sqrt()))?.reshape((b, nkv, rep * t, hd))?;
        let scores = q.matmul(&k.t()?)?;
        let probs = ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?; // (b, nkv, rep*t, hd)
        let out = out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out)
    }
}
