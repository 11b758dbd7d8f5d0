//! Numerical kernels that pick between candle's fused CPU/GPU kernels and plain tensor ops.
//!
//! candle's fused `rms_norm`, `softmax_last_dim`, `rope` and `rope_i` are built with
//! `apply_op*_no_bwd`: their output carries no autograd history, so a gradient silently stops at
//! them. The model must stay trainable (issue 3: weights are dequantised to f32 "so that it can be
//! trained"), so every kernel here uses the fused version only when nothing upstream is tracked
//! (`Tensor::track_op() == false`, i.e. inference on plain tensors) and the differentiable
//! composition of basic ops otherwise. `tests/tiny.rs` checks that both paths give the same logits.
//!
//! On the CPU with f32 tensors, RMSNorm, softmax, RoPE and the SwiGLU gate use `retro_kernels`' fused
//! ops instead, which have a backward and so serve training and inference alike (issue 6;
//! `docs/kernels.md`). `RETRO_FUSED=0` in the environment turns them off, e.g. to compare.

use candle_core::{Result, Tensor, D};

fn tracked(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension (Llama RMSNorm, no mean removal,
/// no bias).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if retro_kernels::enabled(&[x, weight]) {
        retro_kernels::rms_norm(x, weight, eps)
    } else if tracked(&[x, weight]) {
        candle_nn::ops::rms_norm_slow(x, weight, eps as f32)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if retro_kernels::enabled(&[x]) {
        retro_kernels::softmax_last_dim(x)
    } else if tracked(&[x]) {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Softmax over the last dimension of `x + mask`, `mask` an additive `(t, s)` attention mask that
/// broadcasts over `x`'s leading dimensions. The fused kernel neither materialises the sum nor
/// builds the full-size zero gradient that candle's `broadcast_add` backward gives the mask.
pub fn masked_softmax_last_dim(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = x.rank();
    let fits = n >= 2 && mask.dims() == &x.dims()[n - 2..];
    if fits && retro_kernels::enabled(&[x, mask]) {
        retro_kernels::masked_softmax_last_dim(x, mask)
    } else {
        softmax_last_dim(&x.broadcast_add(mask)?)
    }
}

/// The SwiGLU gate `silu(gate) · up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if retro_kernels::enabled(&[gate, up]) {
        retro_kernels::swiglu(gate, up)
    } else {
        candle_nn::ops::silu(gate)? * up
    }
}

/// RoPE with pairs `(2i, 2i+1)`. `x`: `(batch, heads, seq, head_dim)`; `cos`/`sin`:
/// `(seq, head_dim/2)` for the positions of `x`.
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if retro_kernels::enabled(&[x, cos, sin]) {
        retro_kernels::rope(x, cos, sin, true)
    } else if tracked(&[x]) {
        candle_nn::rotary_emb::rope_i_slow(x, cos, sin)
    } else {
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos.contiguous()?, &sin.contiguous()?)
    }
}

/// RoPE with pairs `(i, i + head_dim/2)` (HF "rotate half"). Shapes as in [`rope_interleaved`].
pub fn rope_rotate_half(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if retro_kernels::enabled(&[x, cos, sin]) {
        retro_kernels::rope(x, cos, sin, false)
    } else if tracked(&[x]) {
        candle_nn::rotary_emb::rope_slow(x, cos, sin)
    } else {
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos.contiguous()?, &sin.contiguous()?)
    }
}
