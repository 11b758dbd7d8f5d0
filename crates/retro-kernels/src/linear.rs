//! A bias-free linear layer `y = x·Wᵀ` (`W` `(out, in)`, HF layout) whose backward writes both
//! gradients in their final layout.
//!
//! candle computes `x.matmul(&w.t())`; its backward gives the transposed weight `xᵀ·g` `(in, out)`,
//! then the transpose's backward turns that into an `(out, in)` view that the gradient store copies
//! into a contiguous tensor: a strided (cache-unfriendly) copy of every weight gradient, every step.
//! Here `dW = gᵀ·x` is computed directly as `(out, in)` (gemm reads `g` transposed through its
//! strides), `dx = g·W` as `(rows, in)`, and no gradient is computed for an input that nothing
//! tracks (a frozen weight). Outputs are written by gemm into fresh, unzeroed buffers: candle
//! zero-fills every matmul output first although gemm overwrites it.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::matmul::{gemm_new, Operand};
use crate::rows::f32_slice;

/// `x` `(rows, in)` and `w` `(out, in)` from a custom op's inputs, checked.
fn operands<'a>(
    op: &str,
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> Result<(&'a [f32], &'a [f32])> {
    Ok((f32_slice(op, s1, l1)?, f32_slice(op, s2, l2)?))
}

fn matrix_dims(op: &str, l: &Layout) -> Result<(usize, usize)> {
    match l.dims() {
        [r, c] => Ok((*r, *c)),
        d => bail!("{op}: expected a matrix, got shape {d:?}"),
    }
}

/// `y = x·Wᵀ`; inputs `x` `(rows, in)`, `w` `(out, in)`.
struct Linear;
/// `dx = g·W`; inputs `g` `(rows, out)`, `w` `(out, in)`.
struct LinearGradInput;
/// `dW = gᵀ·x`; inputs `g` `(rows, out)`, `x` `(rows, in)`.
struct LinearGradWeight;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "retro-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = operands(self.name(), s1, l1, s2, l2)?;
        let ((rows, inp), (out, w_in)) =
            (matrix_dims(self.name(), l1)?, matrix_dims(self.name(), l2)?);
        if inp != w_in {
            bail!("linear: input has {inp} features, weight {out}x{w_in} expects {w_in}");
        }
        let x = Operand::rows(x, inp);
        let wt = Operand::transposed(w, inp);
        Ok((
            CpuStorage::F32(gemm_new(rows, out, inp, x, wt)),
            Shape::from((rows, out)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = match x.track_op() {
            true => Some(g.apply_op2_no_bwd(w, &LinearGradInput)?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(g.apply_op2_no_bwd(x, &LinearGradWeight)?),
            false => None,
        };
        Ok((dx, dw))
    }
}

impl CustomOp2 for LinearGradInput {
    fn name(&self) -> &'static str {
        "retro-linear-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, w) = operands(self.name(), s1, l1, s2, l2)?;
        let ((rows, out), (w_out, inp)) =
            (matrix_dims(self.name(), l1)?, matrix_dims(self.name(), l2)?);
        if out != w_out {
            bail!("linear backward: gradient has {out} columns, weight {w_out} rows");
        }
        let g = Operand::rows(g, out);
        let w = Operand::rows(w, inp);
        Ok((
            CpuStorage::F32(gemm_new(rows, inp, out, g, w)),
            Shape::from((rows, inp)),
        ))
    }
}

impl CustomOp2 for LinearGradWeight {
    fn name(&self) -> &'static str {
        "retro-linear-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, x) = operands(self.name(), s1, l1, s2, l2)?;
        let ((rows, out), (x_rows, inp)) =
            (matrix_dims(self.name(), l1)?, matrix_dims(self.name(), l2)?);
        if rows != x_rows {
            bail!("linear backward: gradient has {rows} rows, input {x_rows}");
        }
        let gt = Operand::transposed(g, out);
        let x = Operand::rows(x, inp);
        Ok((
            CpuStorage::F32(gemm_new(out, inp, rows, gt, x)),
            Shape::from((out, inp)),
        ))
    }
}

/// `x·Wᵀ` for f32 CPU tensors: `x` `(..., in)`, `weight` `(out, in)`; returns `(..., out)`.
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&inp, lead)) = dims.split_last() else {
        bail!("linear: input must have at least one dimension");
    };
    let rows: usize = lead.iter().product();
    let y = x
        .contiguous()?
        .reshape((rows, inp))?
        .apply_op2(&weight.contiguous()?, Linear)?;
    let mut out_dims = lead.to_vec();
    out_dims.push(weight.dim(0)?);
    y.reshape(out_dims)
}
