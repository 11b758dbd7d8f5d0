//! A bias-free linear layer `y = x·Wᵀ`, `W` `(out, in)` as in PyTorch/HF (every projection of a
//! Llama decoder, of the Retro encoder and of chunked cross-attention, and the output head).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use retro_kernels::BlockMatrix;

use crate::precision::{precision, Precision};

/// GGUF blocks by HF tensor name ([`crate::Weights::blocks`]).
pub type BlockMap = HashMap<String, Arc<BlockMatrix>>;

/// Attaches `blocks[name]` to `lin` when there is one; 1 if attached, else 0.
pub(crate) fn attach(lin: &mut Linear, name: &str, blocks: &BlockMap) -> Result<usize> {
    match blocks.get(name) {
        Some(b) => {
            lin.use_blocks(b.clone())
                .map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))?;
            Ok(1)
        }
        None => Ok(0),
    }
}

/// [`attach`] for each `(name, linear)`, looking up `{prefix}.{name}.weight`; how many were attached.
pub(crate) fn attach_all<const N: usize>(
    prefix: &str,
    linears: [(&str, &mut Linear); N],
    blocks: &BlockMap,
) -> Result<usize> {
    let mut n = 0;
    for (name, lin) in linears {
        n += attach(lin, &format!("{prefix}.{name}.weight"), blocks)?;
    }
    Ok(n)
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    /// The same weight in the GGUF's 4/8-bit blocks, for one-row products (decoding); see
    /// [`Linear::use_blocks`].
    blocks: Option<Arc<BlockMatrix>>,
}

impl Linear {
    pub fn new(weight: Tensor) -> Self {
        Self {
            weight,
            blocks: None,
        }
    }

    /// Loads `{name}.weight` `(out_dim, in_dim)` under `vb`.
    pub fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, name: &str) -> Result<Self> {
        Ok(Self::new(vb.pp(name).get((out_dim, in_dim), "weight")?))
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Multiplies single rows by `blocks` (the blocks `weight` was dequantised from) instead of
    /// the f32 weight: at one row the product only streams weights, and a 4-bit block is 6x fewer
    /// bytes (issue 3, docs/kernels.md). The caller vouches that `blocks` dequantise to `weight`;
    /// they are only ever taken from the GGUF the weight was read from ([`crate::Weights::build`]),
    /// never for a trainable model, whose weights change.
    pub fn use_blocks(&mut self, blocks: Arc<BlockMatrix>) -> Result<()> {
        let (out, inp) = self.weight.dims2()?;
        if blocks.dims() != (out, inp) {
            candle_core::bail!(
                "blocks of shape {:?} for a weight of shape ({out}, {inp})",
                blocks.dims()
            );
        }
        self.blocks = Some(blocks);
        Ok(())
    }
}

impl Module for Linear {
    /// `x` `(..., in)` → `(..., out)`. With [`Precision::Bf16`] the product is candle's in bf16.
    /// Otherwise, on the CPU in f32, this is `retro_kernels::linear`, whose
    /// backward writes the weight gradient in place of a transposed copy (issue 6,
    /// docs/kernels.md), or, for one untracked row with blocks attached,
    /// `retro_kernels::block_linear`; elsewhere, or with `RETRO_FUSED=0`, candle-nn's `Linear`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if precision() == Precision::Bf16 {
            let bf16 = |t: &Tensor| t.to_dtype(DType::BF16);
            let y = candle_nn::Linear::new(bf16(&self.weight)?, None).forward(&bf16(x)?)?;
            return y.to_dtype(x.dtype());
        }
        if !retro_kernels::enabled(&[x, &self.weight]) {
            return candle_nn::Linear::new(self.weight.clone(), None).forward(x);
        }
        match &self.blocks {
            Some(blocks)
                if x.elem_count() == blocks.dims().1
                    && !x.track_op()
                    && retro_kernels::blocks_allowed_by_env() =>
            {
                retro_kernels::block_linear(x, blocks)
            }
            _ => retro_kernels::linear(x, &self.weight),
        }
    }
}
