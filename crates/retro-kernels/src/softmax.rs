//! Softmax over the last dimension with backward `dx = y · (g − Σ g·y)`. candle's fused
//! `softmax_last_dim` has no backward, and the differentiable `softmax` is five ops (max, sub,
//! exp, sum, div) whose backward goes through each of them.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::fast_exp::exp;
use crate::rows::{dot, f32_slice, max, min_rows, sum};

struct Softmax;
struct SoftmaxBwd;

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
        let mut y = vec![0f32; x.len()];
        if d > 0 {
            y.par_chunks_mut(d)
                .zip(x.par_chunks(d))
                .with_min_len(min_rows(d))
                .for_each(|(yr, xr)| {
                    let m = max(xr);
                    for (yi, &xi) in yr.iter_mut().zip(xr) {
                        *yi = exp(xi - m);
                    }
                    let inv = 1.0 / sum(yr);
                    for yi in yr.iter_mut() {
                        *yi *= inv;
                    }
                });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?))
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
        let mut dx = vec![0f32; y.len()];
        if d > 0 {
            dx.par_chunks_mut(d)
                .zip(y.par_chunks(d).zip(g.par_chunks(d)))
                .with_min_len(min_rows(d))
                .for_each(|(dxr, (yr, gr))| {
                    let s = dot(gr, yr);
                    for i in 0..d {
                        dxr[i] = yr[i] * (gr[i] - s);
                    }
                });
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension of an f32 CPU tensor (made contiguous here).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}
