//! AdamW's update done in place on the parameter and its moments, with no allocation: three
//! parallel passes (first moment, second moment, parameter). candle-nn's AdamW and the composed
//! version allocate about a dozen full-size tensors per parameter per step.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use crate::rows::{f32_slice, f32_slice_mut, ELEMS_PER_TASK};

/// One step's numbers: `lr`, the betas, `eps`, the bias corrections `1 − βᵗ` and the decay
/// factor `1 − lr · weight_decay` (1 for parameters without decay).
#[derive(Debug, Clone, Copy)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    pub decay_factor: f64,
}

/// `m ← β·m + (1−β)·g` (or with `g²`).
struct Moment {
    beta: f32,
    square: bool,
}

/// `p ← p·decay − lr · (m/bc1) / (sqrt(v/bc2) + eps)`.
struct Param {
    h: AdamWHyper,
}

fn check_len(op: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        bail!("{op}: {a} elements against {b}");
    }
    Ok(())
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "retro-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let m = f32_slice_mut(self.name(), s1, l1)?;
        let g = f32_slice(self.name(), s2, l2)?;
        check_len(self.name(), m.len(), g.len())?;
        let (b, c) = (self.beta, 1.0 - self.beta);
        let square = self.square;
        m.par_chunks_mut(ELEMS_PER_TASK)
            .zip(g.par_chunks(ELEMS_PER_TASK))
            .for_each(|(m, g)| {
                if square {
                    for (mi, &gi) in m.iter_mut().zip(g) {
                        *mi = b * *mi + c * (gi * gi);
                    }
                } else {
                    for (mi, &gi) in m.iter_mut().zip(g) {
                        *mi = b * *mi + c * gi;
                    }
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for Param {
    fn name(&self) -> &'static str {
        "retro-adamw-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = f32_slice_mut(self.name(), s1, l1)?;
        let m = f32_slice(self.name(), s2, l2)?;
        let v = f32_slice(self.name(), s3, l3)?;
        check_len(self.name(), p.len(), m.len())?;
        check_len(self.name(), p.len(), v.len())?;
        let h = self.h;
        let (inv_bc1, inv_bc2) = (
            (1.0 / h.bias_correction1) as f32,
            (1.0 / h.bias_correction2) as f32,
        );
        let (lr, eps, decay) = (h.lr as f32, h.eps as f32, h.decay_factor as f32);
        p.par_chunks_mut(ELEMS_PER_TASK)
            .zip(
                m.par_chunks(ELEMS_PER_TASK)
                    .zip(v.par_chunks(ELEMS_PER_TASK)),
            )
            .for_each(|(p, (m, v))| {
                for i in 0..p.len() {
                    let update = (m[i] * inv_bc1) / ((v[i] * inv_bc2).sqrt() + eps);
                    p[i] = p[i] * decay - lr * update;
                }
            });
        Ok(())
    }
}

/// One AdamW update of `param` with gradient `grad`, moments `m` and `v` updated in place. All
/// four are f32 CPU tensors of one shape; `param`, `m` and `v` must be contiguous and must not
/// share storage with anything that should keep the old values.
pub fn adamw_update(
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    h: AdamWHyper,
) -> Result<()> {
    let grad = grad.contiguous()?;
    m.inplace_op2(
        &grad,
        &Moment {
            beta: h.beta1 as f32,
            square: false,
        },
    )?;
    v.inplace_op2(
        &grad,
        &Moment {
            beta: h.beta2 as f32,
            square: true,
        },
    )?;
    param.inplace_op3(m, v, &Param { h })
}
