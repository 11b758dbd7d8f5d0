//! Causal grouped-query self-attention with RoPE, as in HF `LlamaAttention`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::kv_cache::KvCache;
use crate::linear::{attach_all, BlockMap, Linear};
use crate::ops;
use crate::rope::RotaryEmbedding;

/// The four projections of a grouped-query attention and its head layout, shared by the
/// self-attention here and `cross_attention::CrossAttention`.
#[derive(Debug, Clone)]
pub(crate) struct Projections {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
}

impl Projections {
    /// Loads `q_proj` `(heads*head_dim, hidden)`, `k_proj`/`v_proj` `(kv_heads*head_dim, hidden)`
    /// and `o_proj` `(hidden, heads*head_dim)` under `vb`.
    pub(crate) fn load(vb: &VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        Ok(Self {
            q_proj: Linear::load(vb, h, nh * hd, "q_proj")?,
            k_proj: Linear::load(vb, h, nkv * hd, "k_proj")?,
            v_proj: Linear::load(vb, h, nkv * hd, "v_proj")?,
            o_proj: Linear::load(vb, nh * hd, h, "o_proj")?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// Attaches the blocks named `{prefix}.{q,k,v,o}_proj.weight` found in `blocks`
    /// ([`Linear::use_blocks`]); returns how many were attached.
    pub(crate) fn use_blocks(&mut self, prefix: &str, blocks: &BlockMap) -> Result<usize> {
        let linears = [
            ("q_proj", &mut self.q_proj),
            ("k_proj", &mut self.k_proj),
            ("v_proj", &mut self.v_proj),
            ("o_proj", &mut self.o_proj),
        ];
        attach_all(prefix, linears, blocks)
    }

    /// Attention of queries `q` `(b, heads, t, head_dim)` (RoPE applied if any) over keys and
    /// values `(b, kv_heads, s, head_dim)`, through `o_proj`: `(b, t, hidden)`. `mask`, when given,
    /// is the additive causal mask `decoder::causal_mask(t, s - t)` `(t, s)`, the only mask any
    /// caller builds; `None` means unmasked.
    ///
    /// On the CPU in f32 this is `retro_kernels::attention` (block-causal, with its own backward;
    /// issue 6, docs/kernels.md). Otherwise, grouped-query attention without copying k/v `rep`
    /// times: query head `g*rep + r` uses kv head `g` (HF `repeat_kv` order), so the `rep` query
    /// heads of group `g` are stacked along the sequence axis and multiplied against that group's
    /// keys in one matmul.
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let s = k.dim(2)?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        debug_assert!(mask.map_or(true, |m| m.dims() == [t, s]));
        let out = if retro_kernels::enabled(&[q, k, v]) {
            retro_kernels::attention(q, k, v, mask.is_some())?
        } else {
            let rep = nh / nkv;
            let q = (q * (1.0 / (hd as f64).sqrt()))?.reshape((b, nkv, rep * t, hd))?;
            let scores = q.matmul(&k.t()?)?; // (b, nkv, rep*t, s)
            let probs = match mask {
                Some(m) => ops::masked_softmax_last_dim(&scores.reshape((b, nkv, rep, t, s))?, m)?,
                None => ops::softmax_last_dim(&scores)?,
            }
            .reshape((b, nkv, rep * t, s))?;
            // (b, nkv, rep*t, hd) → (b, heads, t, hd)
            probs.matmul(&v.contiguous()?)?.reshape((b, nh, t, hd))?
        };
        let out = out.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    p: Projections,
}

impl Attention {
    /// Loads `q_proj` `(heads*head_dim, hidden)`, `k_proj`/`v_proj` `(kv_heads*head_dim, hidden)`
    /// and `o_proj` `(hidden, heads*head_dim)` under `vb`.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        Ok(Self {
            p: Projections::load(&vb, cfg)?,
        })
    }

    /// See [`Projections::use_blocks`]; `prefix` is `model.layers.N.self_attn`.
    pub(crate) fn use_blocks(&mut self, prefix: &str, blocks: &BlockMap) -> Result<usize> {
        self.p.use_blocks(prefix, blocks)
    }

    /// Attention over `x` `(batch, seq, hidden)` whose first token is at position `offset`.
    ///
    /// `mask` is the additive causal mask `(seq, offset + seq)` (`None` when `seq == 1`: a single new
    /// token may see everything). With a cache, the keys/values of positions `0..offset` come from
    /// layer `layer` of `cache`. Returns the output and the keys/values of all `offset + seq`
    /// positions, for the caller to commit to the cache.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        offset: usize,
        mask: Option<&Tensor>,
        cache: Option<(&KvCache, usize)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.p.num_heads, self.p.num_kv_heads, self.p.head_dim);
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = heads(self.p.q_proj.forward(x)?, nh)?;
        let k = heads(self.p.k_proj.forward(x)?, nkv)?;
        let v = heads(self.p.v_proj.forward(x)?, nkv)?;
        let q = rope.apply(&q, offset)?;
        let k = rope.apply(&k, offset)?;
        let (k, v) = match cache {
            Some((c, layer)) => c.extended(layer, &k, &v)?,
            None => (k, v),
        };
        let out = self.p.attend(&q, &k, &v, mask)?;
        Ok((out, (k, v)))
    }
}
