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
use crate::rows::{f32_slice, matrix_dims};

/// The three products of a linear layer, as one custom op each.
#[derive(Clone, Copy)]
enum Product {
    /// `y = x·Wᵀ`; inputs `x` `(rows, in)`, `w` `(out, in)`.
    Forward,
    /// `dx = g·W`; inputs `g` `(rows, out)`, `w` `(out, in)`.
    GradInput,
    /// `dW = gᵀ·x`; inputs `g` `(rows, out)`, `x` `(rows, in)`.
    GradWeight,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        match self {
            Product::Forward => "retro-linear",
            Product::GradInput => "retro-linear-grad-input",
            Product::GradWeight => "retro-linear-grad-weight",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            f32_slice(self.name(), s1, l1)?,
            f32_slice(self.name(), s2, l2)?,
        );
        let ((ar, ac), (br, bc)) = (
            matrix_dims(self.name(), "first input", l1)?,
            matrix_dims(self.name(), "second input", l2)?,
        );
        // (m, n, k) of the product, its operands, and the two sizes that must agree.
        let ((m, n, k), lhs, rhs, agree) = match self {
            Product::Forward => (
                (ar, br, ac),
                Operand::rows(a, ac),
                Operand::transposed(b, bc),
                (ac, bc),
            ),
            Product::GradInput => (
                (ar, bc, ac),
                Operand::rows(a, ac),
                Operand::rows(b, bc),
                (ac, br),
            ),
            Product::GradWeight => (
                (ac, bc, ar),
                Operand::transposed(a, ac),
                Operand::rows(b, bc),
                (ar, br),
            ),
        };
        if agree.0 != agree.1 {
            bail!(
                "{}: shapes {:?} and {:?} do not fit",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        Ok((
            CpuStorage::F32(gemm_new(m, n, k, lhs, rhs)),
            Shape::from((m, n)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if !matches!(self, Product::Forward) {
            bail!("{}: no second-order gradients", self.name());
        }
        let g = g.contiguous()?;
        let dx = match x.track_op() {
            true => Some(g.apply_op2_no_bwd(w, &Product::GradInput)?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(g.apply_op2_no_bwd(x, &Product::GradWeight)?),
            false => None,
        };
        Ok((dx, dw))
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
        .apply_op2(&weight.contiguous()?, Product::Forward)?;
    let mut out_dims = lead.to_vec();
    out_dims.push(weight.dim(0)?);
    y.reshape(out_dims)
}
