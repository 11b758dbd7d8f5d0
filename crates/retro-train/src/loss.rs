//! Token cross-entropy with per-token weights. On the CPU with f32 logits it is one fused op
//! (`retro_kernels::masked_nll_sum`, which keeps each row's log-sum-exp for its backward); elsewhere,
//! or with `RETRO_FUSED=0`, it is composed from candle ops. [`head_nll_sum`] starts from the final
//! hidden states and fuses the output head in too (`retro_kernels::linear_masked_nll_sum`), so the
//! `(tokens, vocab)` logits are never written whole.

use candle_core::{DType, Module, Result, Tensor, D};
use retro_model::linear::Linear;
use retro_model::{precision, Precision};

/// [`masked_nll_sum`] of the logits `head(hidden)`: `hidden` `(b, n, dim)` (the model's final
/// normalised states), `targets` and `mask` `(b, n)`. On the CPU in f32 the head and the loss are
/// one op that computes the gradients in blocks of rows; elsewhere (another device, bf16 products,
/// `RETRO_FUSED=0`) it is the head followed by [`masked_nll_sum`].
pub fn head_nll_sum(
    hidden: &Tensor,
    head: &Linear,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let weight = head.weight();
    if precision() == Precision::F32
        && retro_kernels::enabled(&[hidden, weight, mask])
        && targets.device().is_cpu()
    {
        let targets = targets.to_dtype(DType::U32)?;
        return retro_kernels::linear_masked_nll_sum(hidden, weight, &targets, mask);
    }
    masked_nll_sum(&head.forward(hidden)?, targets, mask)
}

/// Sum over positions of `mask · -log softmax(logits)[target]`: `logits` `(b, n, vocab)`,
/// `targets` `(b, n)` u32, `mask` `(b, n)` f32. A scalar; divide by the token count (of the whole
/// optimizer step, so that accumulated micro-batches equal one large batch).
pub fn masked_nll_sum(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if retro_kernels::enabled(&[logits, mask]) && targets.device().is_cpu() {
        return retro_kernels::masked_nll_sum(logits, &targets.to_dtype(DType::U32)?, mask);
    }
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    (picked * mask)?.sum_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_the_formula_and_ignores_masked_positions() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[[1.0f32, 2.0, 0.5], [0.0, 0.0, 3.0]]], &dev)?;
        let targets = Tensor::new(&[[1u32, 0]], &dev)?;
        let mask = Tensor::new(&[[1.0f32, 0.0]], &dev)?;
        let got = masked_nll_sum(&logits, &targets, &mask)?.to_scalar::<f32>()?;
        let lse = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
        assert!((got as f64 - (lse - 2.0)).abs() < 1e-5);
        let both = Tensor::new(&[[1.0f32, 1.0]], &dev)?;
        let got2 = masked_nll_sum(&logits, &targets, &both)?.to_scalar::<f32>()?;
        let lse2 = (2.0 + 3f64.exp()).ln();
        assert!((got2 as f64 - (lse - 2.0) - lse2).abs() < 1e-5);
        Ok(())
    }
}
