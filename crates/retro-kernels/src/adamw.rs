//! AdamW's update in one pass: each element of the parameter, its two moments and its gradient is
//! read once and the three state values written once, with no allocation. candle-nn's AdamW and
//! the composed formula allocate about a dozen full-size tensors per parameter per step and sweep
//! memory once per tensor op; at SmolLM2's 150 M parameters the optimizer is memory-bound, so the
//! number of sweeps is its cost.
//!
//! The moments are plain `f32` slices owned by the caller, not tensors: a candle in-place op can
//! write only one tensor, and the update must write three.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Result, Tensor};
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

/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p·decay − lr · (m/bc1) / (sqrt(v/bc2) + eps)`.
struct Update<'a> {
    h: AdamWHyper,
    /// The first and second moments, written during the op (a `Mutex` because the op is `&self`).
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "retro-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let p = f32_slice_mut(self.name(), s1, l1)?;
        let g = f32_slice(self.name(), s2, l2)?;
        let mut moments = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let (m, v) = &mut *moments;
        for (what, len) in [("gradient", g.len()), ("m", m.len()), ("v", v.len())] {
            if len != p.len() {
                bail!(
                    "{}: {what} has {len} elements, the parameter {}",
                    self.name(),
                    p.len()
                );
            }
        }
        let h = self.h;
        let f = |x: f64| x as f32;
        let (b1, c1, b2, c2) = (f(h.beta1), f(1.0 - h.beta1), f(h.beta2), f(1.0 - h.beta2));
        let (inv_bc1, inv_bc2) = (f(1.0 / h.bias_correction1), f(1.0 / h.bias_correction2));
        let (lr, eps, decay) = (f(h.lr), f(h.eps), f(h.decay_factor));
        p.par_chunks_mut(ELEMS_PER_TASK)
            .zip(g.par_chunks(ELEMS_PER_TASK))
            .zip(
                m.par_chunks_mut(ELEMS_PER_TASK)
                    .zip(v.par_chunks_mut(ELEMS_PER_TASK)),
            )
            .for_each(|((p, g), (m, v))| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = b1 * *m + c1 * g;
                    *v = b2 * *v + c2 * (g * g);
                    let update = (*m * inv_bc1) / ((*v * inv_bc2).sqrt() + eps);
                    *p = *p * decay - lr * update;
                }
            });
        Ok(())
    }
}

/// One AdamW update of `param` (a contiguous f32 CPU tensor, written in place) with gradient
/// `grad` of the same shape, and its moments `m` and `v` (as many elements) updated in place.
pub fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    h: AdamWHyper,
) -> Result<()> {
    if param.dims() != grad.dims() {
        bail!(
            "retro-adamw: gradient shape {:?}, parameter {:?}",
            grad.dims(),
            param.dims()
        );
    }
    let grad = grad.contiguous()?;
    param.inplace_op2(
        &grad,
        &Update {
            h,
            moments: Mutex::new((m, v)),
        },
    )
}
