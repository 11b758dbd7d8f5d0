//! A bias-free linear layer `y = x·Wᵀ`, `W` `(out, in)` as in PyTorch/HF (every projection of a
//! Llama decoder, of the Retro encoder and of chunked cross-attention, and the output head).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
}

impl Linear {
    pub fn new(weight: Tensor) -> Self {
        Self { weight }
    }

    /// Loads `{name}.weight` `(out_dim, in_dim)` under `vb`.
    pub fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, name: &str) -> Result<Self> {
        Ok(Self::new(vb.pp(name).get((out_dim, in_dim), "weight")?))
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    /// `x` `(..., in)` → `(..., out)`. On the CPU in f32 this is `retro_kernels::linear`, whose
    /// backward writes the weight gradient in place of a transposed copy (issue 6,
    /// docs/kernels.md); elsewhere, or with `RETRO_FUSED=0`, candle-nn's `Linear`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if retro_kernels::enabled(&[x, &self.weight]) {
            retro_kernels::linear(x, &self.weight)
        } else {
            candle_nn::Linear::new(self.weight.clone(), None).forward(x)
        }
    }
}
