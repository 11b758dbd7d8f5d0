//! The Llama decoder: token embedding, pre-norm layers (self-attention, SwiGLU MLP), final RMSNorm
//! and a tied or untied output head. Tensor names follow HF `LlamaForCausalLM`
//! (`model.layers.N.self_attn.q_proj.weight`, …); GGUF names are mapped to these at load
//! ([`crate::gguf`]).
//!
//! The Retro decoder (reference §1.3) inserts chunked cross-attention between the self-attention
//! block and the MLP block of some layers, so a layer exposes the two blocks separately.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::attention::Attention;
use crate::compute_pool::in_compute_pool;
use crate::config::LlamaConfig;
use crate::kv_cache::KvCache;
use crate::linear::{attach, BlockMap, Linear};
use crate::mlp::Mlp;
use crate::norm::RmsNorm;
use crate::rope::RotaryEmbedding;

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Loads `input_layernorm`, `self_attn.*`, `post_attention_layernorm`, `mlp.*` under `vb`
    /// (`model.layers.N`).
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        let eps = cfg.rms_norm_eps;
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), cfg.hidden_size, eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                eps,
            )?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }

    /// Attaches the GGUF blocks of this layer's projections (`prefix` is `model.layers.N`).
    pub(crate) fn use_blocks(
        &mut self,
        prefix: &str,
        blocks: &BlockMap,
    ) -> candle_core::Result<usize> {
        Ok(self
            .self_attn
            .use_blocks(&format!("{prefix}.self_attn"), blocks)?
            + self.mlp.use_blocks(&format!("{prefix}.mlp"), blocks)?)
    }

    /// `x + SelfAttn(RMSNorm(x))`; also returns this layer's keys/values for the whole sequence.
    pub fn attention_block(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        offset: usize,
        mask: Option<&Tensor>,
        cache: Option<(&KvCache, usize)>,
    ) -> candle_core::Result<(Tensor, (Tensor, Tensor))> {
        let h = self.input_layernorm.forward(x)?;
        let (a, kv) = self.self_attn.forward(&h, rope, offset, mask, cache)?;
        Ok(((x + a)?, kv))
    }

    /// `x + MLP(RMSNorm(x))`.
    pub fn mlp_block(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(x)?)?
    }
}

/// A Llama-family causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RotaryEmbedding,
    cfg: LlamaConfig,
}

impl Llama {
    /// Builds the model from tensors named as in HF `LlamaForCausalLM`. With
    /// `tie_word_embeddings`, the head reuses `model.embed_tokens.weight` (the same tensor, so a
    /// gradient reaches it through both uses) and `lm_head.weight` is not read.
    ///
    /// `vb` decides whether the weights are trainable: a `VarBuilder::from_varmap` gives `Var`s.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let m = vb.pp("model");
        let embed = m
            .pp("embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")
            .context("loading the token embedding")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                DecoderLayer::load(m.pp(format!("layers.{i}")), cfg)
                    .with_context(|| format!("loading decoder layer {i}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let norm = RmsNorm::load(m.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)
            .context("loading the final norm")?;
        let head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.hidden_size), "weight")
                .context("loading the untied output head (tie_word_embeddings is false)")?
        };
        Ok(Self {
            embed_tokens: Embedding::new(embed, cfg.hidden_size),
            layers,
            norm,
            lm_head: Linear::new(head),
            rope: RotaryEmbedding::new(cfg, vb.device())?,
            cfg: cfg.clone(),
        })
    }

    /// Lets one-row products (decoding) multiply the GGUF blocks the weights came from
    /// ([`Linear::use_blocks`]): every projection and the output head (the token embedding's blocks
    /// when the head is tied) found in `blocks` under its HF name. Returns how many were attached.
    pub fn use_blocks(&mut self, blocks: &BlockMap) -> anyhow::Result<usize> {
        let mut n = 0;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            n += layer.use_blocks(&format!("model.layers.{i}"), blocks)?;
        }
        let head = match self.cfg.tie_word_embeddings {
            true => "model.embed_tokens.weight",
            false => "lm_head.weight",
        };
        n += attach(&mut self.lm_head, head, blocks)?;
        Ok(n)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.embeddings().device()
    }

    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }

    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    pub fn rope(&self) -> &RotaryEmbedding {
        &self.rope
    }

    /// The RMSNorm after the last layer.
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Logits `(batch, seq, vocab)` for `input_ids` `(batch, seq)`.
    ///
    /// Without a cache the ids are the whole sequence (positions `0..seq`). With a cache they are
    /// the tokens that follow the cached ones (positions `cache.seq_len()..`), and the cache is
    /// extended by them on success.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Tensor> {
        let h = self.forward_hidden(input_ids, cache)?;
        self.logits(&h)
    }

    /// The output head (the token embedding's matrix when the embeddings are tied).
    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// Output head applied to final (normalised) hidden states `(…, hidden)`; lets a caller that
    /// only needs the last position skip the head on the others.
    pub fn logits(&self, hidden: &Tensor) -> anyhow::Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?)
    }

    /// Final hidden states after the last RMSNorm, `(batch, seq, hidden)`. See [`Llama::forward`].
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Tensor> {
        // As one task of candle's rayon pool on CPU (compute_pool.rs).
        in_compute_pool(self.device(), || self.hidden_states(input_ids, cache))
    }

    fn hidden_states(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Tensor> {
        let (b, t) = batch_and_len(input_ids)?;
        let ids = self.check_ids(input_ids)?;
        let offset = match &cache {
            Some(c) => {
                if c.num_layers() != self.layers.len() {
                    bail!(
                        "kv cache has {} layers, model has {}",
                        c.num_layers(),
                        self.layers.len()
                    );
                }
                if c.batch().is_some_and(|cb| cb != b) {
                    bail!("kv cache holds batch size {:?}, input has {b}", c.batch());
                }
                c.seq_len()
            }
            None => 0,
        };
        if offset + t > self.cfg.max_position_embeddings {
            bail!(
                "sequence of {} tokens exceeds the model context (max_position_embeddings = {})",
                offset + t,
                self.cfg.max_position_embeddings
            );
        }
        let mask = causal_mask(t, offset, self.device())?;
        let mut x = self.embed_tokens.forward(&ids)?;
        let mut staged = Vec::with_capacity(if cache.is_some() {
            self.layers.len()
        } else {
            0
        });
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref().map(|c| (c, i));
            let (h, kv) = layer.attention_block(&x, &self.rope, offset, mask.as_ref(), c)?;
            x = layer.mlp_block(&h)?;
            if cache.is_some() {
                staged.push(kv);
            }
        }
        let out = self.norm.forward(&x)?;
        if let Some(c) = cache {
            c.commit(staged, t)?;
        }
        Ok(out)
    }

    /// Converts ids to u32 and checks they index the vocabulary: an out-of-range id would otherwise
    /// be an index error deep inside the embedding (or garbage on some devices).
    pub(crate) fn check_ids(&self, input_ids: &Tensor) -> anyhow::Result<Tensor> {
        if !input_ids.dtype().is_int() {
            bail!("input ids must be integers, got {:?}", input_ids.dtype());
        }
        if input_ids.dtype() == DType::I64 {
            let signed: Vec<i64> = input_ids.flatten_all()?.to_vec1()?;
            if let Some(&neg) = signed.iter().find(|&&i| i < 0) {
                bail!("negative token id {neg}");
            }
        }
        let ids = input_ids.to_dtype(DType::U32)?;
        let host: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        if let Some(&bad) = host.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            bail!(
                "token id {bad} is out of range for vocabulary size {}",
                self.cfg.vocab_size
            );
        }
        Ok(ids)
    }
}

/// Additive causal mask `(seq, offset + seq)`: query `i` (absolute position `offset + i`) may see
/// keys `0..=offset + i`. `None` for a single token, which may see every cached key.
pub fn causal_mask(
    seq: usize,
    offset: usize,
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    if seq == 1 {
        return Ok(None);
    }
    let total = offset + seq;
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(data, (seq, total), device).map(Some)
}

/// `(batch, seq)` of token ids `(batch, seq)`; an error for another rank or an empty sequence.
pub(crate) fn batch_and_len(input_ids: &Tensor) -> anyhow::Result<(usize, usize)> {
    let (b, t) = input_ids.dims2().with_context(|| {
        format!(
            "input ids must be (batch, seq), got {:?}",
            input_ids.shape()
        )
    })?;
    if t == 0 {
        bail!("empty input: at least one token is needed");
    }
    Ok((b, t))
}
