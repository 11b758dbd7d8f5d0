//! The Retro model: the Llama decoder with chunked cross-attention (CCA) at the Retro layers, and
//! the retrieval encoder run once, at the first Retro layer (shared reference §1.2–1.7).
//!
//! Semantics follow **legacy** Megatron (`megatron/legacy/model/transformer.py`), the code the
//! InstructRetro checkpoints were trained with: a fixed gate on the CCA output, and the encoder's
//! cross-attention residual taken from the pre-norm neighbour stream (reference §1.9; the choice is
//! discussed in `docs/model.md`).
//!
//! Tensor names (HF style, under `model.`):
//! - decoder: the Llama names; a Retro layer `model.layers.N` adds `pre_cross_attn_layernorm` and
//!   `cross_attn.{q,k,v,o}_proj` (the CCA) between self-attention and the MLP block, whose norm
//!   stays `post_attention_layernorm` (so a retrofitted layer keeps the GPT's pre-MLP norm);
//! - encoder: `model.encoder.layers.I.{input_layernorm, self_attn.*, post_attention_layernorm,
//!   mlp.*}`, layer 0 adding `pre_cross_attn_layernorm` and `cross_attn.*` (neighbours → decoder).

use anyhow::{bail, Context, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::alignment::{cca_alignment, CcaAlignment};
use crate::compute_pool::in_compute_pool;
use crate::config::LlamaConfig;
use crate::cross_attention::CrossAttention;
use crate::decoder::{batch_and_len, causal_mask, Llama};
use crate::mlp::Mlp;
use crate::norm::RmsNorm;
use crate::retro_config::RetroConfig;
use crate::rope::RotaryEmbedding;

/// The CCA of one decoder Retro layer: its pre-CCA norm and the attention.
#[derive(Debug, Clone)]
struct Cca {
    norm: RmsNorm,
    attn: CrossAttention,
}

/// One encoder layer: bidirectional self-attention, (first layer only) cross-attention from the
/// neighbours to the decoder's chunk, then the SwiGLU MLP; pre-norm throughout.
#[derive(Debug, Clone)]
struct EncoderLayer {
    input_layernorm: RmsNorm,
    self_attn: CrossAttention,
    cross: Option<Cca>,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, cfg: &LlamaConfig, with_cross: bool) -> candle_core::Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let cross = if with_cross {
            Some(Cca {
                norm: RmsNorm::load(vb.pp("pre_cross_attn_layernorm"), h, eps)?,
                attn: CrossAttention::load(vb.pp("cross_attn"), cfg)?,
            })
        } else {
            None
        };
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), h, eps)?,
            self_attn: CrossAttention::load(vb.pp("self_attn"), cfg)?,
            cross,
            post_attention_layernorm: RmsNorm::load(vb.pp("post_attention_layernorm"), h, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }

    /// `x` `(b·l·k, r, d)`; `chunks` `(b·l, m, d)`: the decoder's normalised states per chunk.
    /// `rope`: rotary embeddings for the self-attention ([`RetroConfig::encoder_rope`]), or none
    /// as in the reference.
    fn forward(
        &self,
        x: &Tensor,
        chunks: &Tensor,
        k: usize,
        rope: Option<&RotaryEmbedding>,
    ) -> candle_core::Result<Tensor> {
        let n = self.input_layernorm.forward(x)?;
        let attended = match rope {
            Some(rope) => self.self_attn.forward_self_rotary(&n, rope)?,
            None => self.self_attn.forward(&n, &n)?,
        };
        let mut h = (x + attended)?;
        if let Some(cross) = &self.cross {
            let (blk, r, d) = h.dims3()?;
            // The k neighbours of a chunk attend to the same decoder chunk, and cross-attention has
            // no mask, so they are stacked into one query sequence of k·r tokens per chunk.
            let y = cross.norm.forward(&h)?.reshape((blk / k, k * r, d))?;
            let a = cross.attn.forward(&y, chunks)?.reshape((blk, r, d))?;
            // Legacy residual: the pre-norm neighbour stream (mcore adds the normalised one).
            h = (h + a)?;
        }
        &h + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?
    }
}

/// A Retro language model.
#[derive(Debug, Clone)]
pub struct RetroModel {
    decoder: Llama,
    /// Per decoder layer: its CCA if it is a Retro layer.
    cca: Vec<Option<Cca>>,
    encoder: Vec<EncoderLayer>,
    cfg: RetroConfig,
}

impl RetroModel {
    /// Builds the model from tensors named as described in the module docs. `vb` decides
    /// trainability, as for [`Llama::load`].
    pub fn load(vb: VarBuilder, cfg: &RetroConfig) -> Result<Self> {
        cfg.validate()?;
        let dcfg = &cfg.decoder;
        let decoder = Llama::load(vb.clone(), dcfg)?;
        let m = vb.pp("model");
        let cca = (0..dcfg.num_hidden_layers)
            .map(|i| {
                if !cfg.is_retro_layer(i) {
                    return Ok(None);
                }
                let lv = m.pp(format!("layers.{i}"));
                Ok(Some(Cca {
                    norm: RmsNorm::load(
                        lv.pp("pre_cross_attn_layernorm"),
                        dcfg.hidden_size,
                        dcfg.rms_norm_eps,
                    )?,
                    attn: CrossAttention::load(lv.pp("cross_attn"), dcfg)?,
                }))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .context("loading the chunked cross-attention")?;
        let encoder = (0..cfg.encoder_layers)
            .map(|i| {
                EncoderLayer::load(m.pp(format!("encoder.layers.{i}")), dcfg, i == 0)
                    .with_context(|| format!("loading encoder layer {i}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            decoder,
            cca,
            encoder,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &RetroConfig {
        &self.cfg
    }

    /// The decoder alone (the plain GPT: what the model computes without neighbours).
    pub fn decoder(&self) -> &Llama {
        &self.decoder
    }

    /// The decoder, to attach decoding blocks ([`Llama::use_blocks`]).
    pub fn decoder_mut(&mut self) -> &mut Llama {
        &mut self.decoder
    }

    /// Logits `(batch, seq, vocab)` for `input_ids` `(batch, seq)` and, optionally, the neighbour
    /// tokens `(batch, l, k, r)` of each of the l = ceil(seq/m) chunks of the right-aligned grid of
    /// [`cca_alignment`] (chunk j's k neighbours of r tokens each, continuation included).
    ///
    /// Without neighbours the Retro layers skip CCA, and the result is the plain decoder's.
    pub fn forward(&self, input_ids: &Tensor, neighbors: Option<&Tensor>) -> Result<Tensor> {
        let h = self.forward_hidden(input_ids, neighbors)?;
        self.decoder.logits(&h)
    }

    /// Final hidden states after the last norm, `(batch, seq, hidden)`. See [`RetroModel::forward`].
    pub fn forward_hidden(&self, input_ids: &Tensor, neighbors: Option<&Tensor>) -> Result<Tensor> {
        // As one task of candle's rayon pool on CPU (compute_pool.rs).
        in_compute_pool(self.decoder.device(), || {
            self.hidden_states(input_ids, neighbors)
        })
    }

    fn hidden_states(&self, input_ids: &Tensor, neighbors: Option<&Tensor>) -> Result<Tensor> {
        let (b, ns) = batch_and_len(input_ids)?;
        let dcfg = &self.cfg.decoder;
        if ns > dcfg.max_position_embeddings {
            bail!(
                "sequence of {ns} tokens exceeds the model context (max_position_embeddings = {})",
                dcfg.max_position_embeddings
            );
        }
        let ids = self.decoder.check_ids(input_ids)?;
        let al = cca_alignment(ns, self.cfg.chunk_len)?;
        let nb = neighbors
            .map(|n| self.check_neighbors(n, b, &al))
            .transpose()?;
        let mask = causal_mask(ns, 0, self.decoder.device())?;
        let mut x = self.decoder.embed_tokens().forward(&ids)?;
        let mut encoded: Option<Tensor> = None;
        for (i, layer) in self.decoder.layers().iter().enumerate() {
            let (mut h, _) =
                layer.attention_block(&x, self.decoder.rope(), 0, mask.as_ref(), None)?;
            if let (Some(cca), Some(nb)) = (&self.cca[i], &nb) {
                let y = cca.norm.forward(&h)?;
                if encoded.is_none() {
                    // The first Retro layer runs the encoder against its own normalised states.
                    encoded = Some(self.encode(nb, &decoder_chunks(&y, &al)?)?);
                }
                let enc = encoded.as_ref().expect("encoder output set above");
                let out = chunked_cross_attention(&cca.attn, &y, enc, &al)?;
                h = (h + (out * self.cfg.gate)?)?;
            }
            x = layer.mlp_block(&h)?;
        }
        Ok(self.decoder.final_norm().forward(&x)?)
    }

    /// The encoder's output for the neighbours `(batch, l, k, r)` given the decoder's normalised
    /// states `y` `(batch, seq, hidden)` at the first Retro layer: `(batch·l, k·r, hidden)`, the
    /// k neighbours of each chunk one after the other (the K/V of that chunk's CCA).
    pub fn encoder_output(&self, neighbors: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (b, ns, _) = y.dims3()?;
        let al = cca_alignment(ns, self.cfg.chunk_len)?;
        let nb = self.check_neighbors(neighbors, b, &al)?;
        self.encode(&nb, &decoder_chunks(y, &al)?)
    }

    /// For incremental generation ([`crate::retro_generate`]): the pre-CCA norm and the CCA of
    /// decoder layer `i`, if it is a Retro layer.
    pub(crate) fn cca_parts(&self, i: usize) -> Option<(&RmsNorm, &CrossAttention)> {
        self.cca
            .get(i)
            .and_then(|c| c.as_ref())
            .map(|c| (&c.norm, &c.attn))
    }

    /// The encoder on neighbours `nb` `(b, l, k, r)` (any k ≥ 1; incremental generation passes
    /// what it retrieved) against decoder chunks `(b·l, m, d)`: `(b·l, k·r, d)`.
    pub(crate) fn encode(&self, nb: &Tensor, chunks: &Tensor) -> Result<Tensor> {
        let (b, l, k, r) = nb.dims4()?;
        let mut x = self
            .decoder
            .embed_tokens()
            .forward(&nb.reshape((b * l * k, r))?)?;
        let rope = self.cfg.encoder_rope.then(|| self.decoder.rope());
        for layer in &self.encoder {
            x = layer.forward(&x, chunks, k, rope)?;
        }
        // No final norm (reference §1.5).
        Ok(x.reshape((b * l, k * r, self.cfg.decoder.hidden_size))?)
    }

    fn check_neighbors(&self, n: &Tensor, batch: usize, al: &CcaAlignment) -> Result<Tensor> {
        let want = (
            batch,
            al.num_chunks,
            self.cfg.num_neighbors,
            self.cfg.retrieved_len,
        );
        if n.dims() != [want.0, want.1, want.2, want.3] {
            bail!(
                "neighbours must be (batch, chunks, k, r) = {want:?} for {} tokens in chunks of {}, got {:?}",
                al.seq_len,
                al.chunk_len,
                n.dims()
            );
        }
        self.decoder.check_ids(n).context("neighbour tokens")
    }
}

/// The decoder's states `y` `(b, ns, d)` cut into the right-aligned chunks of `al`, the short first
/// chunk zero-padded at its end (reference §1.4, "first_ns"): `(b·l, m, d)`.
fn decoder_chunks(y: &Tensor, al: &CcaAlignment) -> candle_core::Result<Tensor> {
    let (b, _, d) = y.dims3()?;
    let m = al.chunk_len;
    let padded = if al.first_chunk_len < m {
        let first =
            y.narrow(1, 0, al.first_chunk_len)?
                .pad_with_zeros(1, 0, m - al.first_chunk_len)?;
        let rest = y.narrow(1, al.first_chunk_len, al.seq_len - al.first_chunk_len)?;
        Tensor::cat(&[&first, &rest], 1)?
    } else {
        y.clone()
    };
    padded.reshape((b * al.num_chunks, m, d))
}

/// CCA of the decoder's normalised states `y` `(b, ns, d)` against the encoded neighbours `enc`
/// `(b·l, k·r, d)`, aligned by `al` exactly as Megatron does it: drop the first `pad` positions,
/// append m-1 zero rows, cut into l blocks of m (block j attends to chunk j), attend, put the
/// blocks back, left-pad `pad` zero rows and cut to ns. Positions `0..pad` thus get exactly 0.
fn chunked_cross_attention(
    attn: &CrossAttention,
    y: &Tensor,
    enc: &Tensor,
    al: &CcaAlignment,
) -> candle_core::Result<Tensor> {
    let (b, ns, d) = y.dims3()?;
    let (m, l) = (al.chunk_len, al.num_chunks);
    let q = y
        .narrow(1, al.pad, ns - al.pad)?
        .pad_with_zeros(1, 0, m - 1)?
        .reshape((b * l, m, d))?;
    let out = attn.forward(&q, enc)?.reshape((b, l * m, d))?;
    out.pad_with_zeros(1, al.pad, 0)?.narrow(1, 0, ns)
}
