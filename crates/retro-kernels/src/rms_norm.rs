//! Llama RMSNorm `y = x / sqrt(mean(x²) + eps) · w` over the last dimension, with backward for
//! `x` and `w`. Forward and backward each read a row once or twice; the backward recomputes the
//! row's `rstd` (one dot product) instead of keeping it, and returns `dx` and `dw` from one op.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::rows::{dot, dot3, f32_slice, min_rows, unfilled};

struct RmsNorm {
    eps: f32,
}

struct RmsNormBwd {
    eps: f32,
}

#[inline]
fn rstd(row: &[f32], eps: f32) -> f32 {
    1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "retro-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s1, l1)?;
        let w = f32_slice(self.name(), s2, l2)?;
        let d = w.len();
        if l1.dims().last() != Some(&d) {
            bail!(
                "rms-norm: x {:?} does not end in the weight's size {d}",
                l1.dims()
            );
        }
        if d == 0 {
            return Ok((CpuStorage::F32(Vec::new()), l1.shape().clone()));
        }
        // SAFETY (unfilled): every row is written below (d > 0, so the rows cover y).
        let mut y = unsafe { unfilled(x.len()) };
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(min_rows(d))
            .for_each(|(yr, xr)| {
                let r = rstd(xr, self.eps);
                for ((yi, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
                    *yi = xi * r * wi;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(w, &g.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let (n, d) = (x.elem_count(), w.elem_count());
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, d)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "retro-rms-norm-bwd"
    }

    /// Output: `dx` (as many elements as `x`) followed by `dw` (`d`), flat.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s1, l1)?;
        let w = f32_slice(self.name(), s2, l2)?;
        let g = f32_slice(self.name(), s3, l3)?;
        let d = w.len();
        if g.len() != x.len() {
            bail!(
                "rms-norm backward: gradient has {} elements, x has {}",
                g.len(),
                x.len()
            );
        }
        if d == 0 {
            return Ok((
                CpuStorage::F32(vec![0f32; x.len()]),
                Shape::from(out_len(x.len(), d)),
            ));
        }
        // SAFETY (unfilled): every row of dx is written below and dw is copied in at the end.
        let mut out = unsafe { unfilled(x.len() + d) };
        let (dx, dw_out) = out.split_at_mut(x.len());
        let rows_per_task =
            min_rows(d).max(x.len() / d / (4 * rayon::current_num_threads()).max(1));
        let dw = dx
            .par_chunks_mut(rows_per_task * d)
            .zip(x.par_chunks(rows_per_task * d))
            .zip(g.par_chunks(rows_per_task * d))
            .map(|((dxb, xb), gb)| {
                let mut dw = vec![0f32; d];
                for ((dxr, xr), gr) in dxb.chunks_mut(d).zip(xb.chunks(d)).zip(gb.chunks(d)) {
                    let r = rstd(xr, self.eps);
                    // dx = r·g·w − x · r³ · Σ(g·w·x) / d
                    let c = r * r * r * dot3(gr, w, xr) / d as f32;
                    for i in 0..d {
                        dxr[i] = r * gr[i] * w[i] - xr[i] * c;
                        dw[i] += gr[i] * xr[i] * r;
                    }
                }
                dw
            })
            .reduce(
                || vec![0f32; d],
                |mut a, b| {
                    for (ai, bi) in a.iter_mut().zip(&b) {
                        *ai += bi;
                    }
                    a
                },
            );
        dw_out.copy_from_slice(&dw);
        Ok((CpuStorage::F32(out), Shape::from(out_len(x.len(), d))))
    }
}

fn out_len(n: usize, d: usize) -> usize {
    n + d
}

/// RMSNorm of `x` `(…, d)` with gain `weight` `(d,)`: f32 CPU tensors (made contiguous here).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}
