//! The SwiGLU feed-forward block of a Llama layer: `down(silu(gate(x)) * up(x))`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::linear::{attach_all, BlockMap, Linear};
use crate::ops;

#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// Loads `gate_proj`, `up_proj` (`(intermediate, hidden)`) and `down_proj`
    /// (`(hidden, intermediate)`) under `vb`.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::load(&vb, h, i, "gate_proj")?,
            up_proj: Linear::load(&vb, h, i, "up_proj")?,
            down_proj: Linear::load(&vb, i, h, "down_proj")?,
        })
    }

    /// Attaches `{prefix}.{gate,up,down}_proj.weight` from `blocks`; returns how many.
    pub(crate) fn use_blocks(&mut self, prefix: &str, blocks: &BlockMap) -> Result<usize> {
        let linears = [
            ("gate_proj", &mut self.gate_proj),
            ("up_proj", &mut self.up_proj),
            ("down_proj", &mut self.down_proj),
        ];
        attach_all(prefix, linears, blocks)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = ops::swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&gated)
    }
}
