//! Softmax over the last dimension with backward `dx = y · (g − Σ g·y)`. candle's fused
//! `softmax_last_dim` has no backward, and the differentiable `softmax` is five ops (max, sub,
//! exp, sum, div) whose backward goes through each of them.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::fast_exp::exp;
use crate::rows::{dot, f32_slice, max, min_rows, sum, unfilled};

struct Softmax;
struct SoftmaxBwd;
/// Softmax of `x + mask`, `mask` `(t, s)` broadcast over `x`'s leading dims.
struct MaskedSoftmax;

fn row_len(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "retro-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s, l)?;
        let d = row_len(l);
        if d == 0 {
            return Ok((CpuStorage::F32(vec![0f32; x.len()]), l.shape().clone()));
        }
        // SAFETY (unfilled): every row is written by `softmax_row`.
        let mut y = unsafe { unfilled(x.len()) };
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(min_rows(d))
            .for_each(|(yr, xr)| softmax_row(yr, xr));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?))
    }
}

#[inline]
fn softmax_row(yr: &mut [f32], xr: &[f32]) {
    let m = max(xr);
    for (yi, &xi) in yr.iter_mut().zip(xr) {
        *yi = exp(xi - m);
    }
    let inv = 1.0 / sum(yr);
    for yi in yr.iter_mut() {
        *yi *= inv;
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "retro-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s1, l1)?;
        let mask = f32_slice(self.name(), s2, l2)?;
        let dims = l1.dims();
        let ok = dims.len() >= 2 && l2.dims() == &dims[dims.len() - 2..];
        if !ok {
            bail!(
                "masked softmax: mask {:?} must be the last two dims of x {dims:?}",
                l2.dims()
            );
        }
        let d = row_len(l1);
        let mut y = vec![0f32; x.len()];
        if d > 0 && !mask.is_empty() {
            // One task per (…, t, s) slice would be too coarse for batch 1: rows, with the mask row
            // found from the row index.
            let t = mask.len() / d;
            y.par_chunks_mut(d)
                .zip(x.par_chunks(d))
                .enumerate()
                .with_min_len(min_rows(d))
                .for_each(|(r, (yr, xr))| {
                    let mr = &mask[(r % t) * d..(r % t + 1) * d];
                    for ((yi, &xi), &mi) in yr.iter_mut().zip(xr).zip(mr) {
                        *yi = xi + mi;
                    }
                    let m = max(yr);
                    for yi in yr.iter_mut() {
                        *yi = exp(*yi - m);
                    }
                    let inv = 1.0 / sum(yr);
                    for yi in yr.iter_mut() {
                        *yi *= inv;
                    }
                });
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?),
            None,
        ))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "retro-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(self.name(), s1, l1)?;
        let g = f32_slice(self.name(), s2, l2)?;
        if y.len() != g.len() {
            bail!(
                "softmax backward: gradient has {} elements, output {}",
                g.len(),
                y.len()
            );
        }
        let d = row_len(l1);
        if d == 0 {
            return Ok((CpuStorage::F32(vec![0f32; y.len()]), l1.shape().clone()));
        }
        // SAFETY (unfilled): every element of every row is written below.
        let mut dx = unsafe { unfilled(y.len()) };
        dx.par_chunks_mut(d)
            .zip(y.par_chunks(d).zip(g.par_chunks(d)))
            .with_min_len(min_rows(d))
            .for_each(|(dxr, (yr, gr))| {
                let s = dot(gr, yr);
                for i in 0..d {
                    dxr[i] = yr[i] * (gr[i] - s);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension of an f32 CPU tensor (made contiguous here).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// Softmax over the last dimension of `x + mask` (an additive attention mask `(t, s)` matching
/// `x`'s last two dims, broadcast over the rest), without materialising the sum or a gradient for
/// the mask: candle's backward of `broadcast_add` would allocate a full-size zero gradient for the
/// constant mask and add into it. f32 CPU tensors (made contiguous here).
pub fn masked_softmax_last_dim(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&mask.contiguous()?.detach(), MaskedSoftmax)
}
