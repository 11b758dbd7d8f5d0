//! SwiGLU gating `silu(a) · b` (Llama MLP), with backward for both inputs in one pass.
//! candle composes `silu` backward from several full-size tensors and scalar libm `exp`.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::fast_exp::exp;
use crate::rows::{f32_slice, unfilled, ELEMS_PER_TASK};

struct SwiGlu;
struct SwiGluBwd;

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

fn same_len(op: &str, a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() {
        bail!("{op}: inputs have {} and {} elements", a.len(), b.len());
    }
    Ok(())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "retro-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = f32_slice(self.name(), s1, l1)?;
        let b = f32_slice(self.name(), s2, l2)?;
        same_len(self.name(), a, b)?;
        if l1.dims() != l2.dims() {
            bail!("swiglu: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        // SAFETY (unfilled): the loop below writes every element.
        let mut y = unsafe { unfilled(a.len()) };
        y.par_chunks_mut(ELEMS_PER_TASK)
            .zip(a.par_chunks(ELEMS_PER_TASK))
            .zip(b.par_chunks(ELEMS_PER_TASK))
            .for_each(|((y, a), b)| {
                for ((yi, &ai), &bi) in y.iter_mut().zip(a).zip(b) {
                    *yi = ai * sigmoid(ai) * bi;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = a.apply_op3_no_bwd(b, &g.contiguous()?, &SwiGluBwd)?;
        let n = a.elem_count();
        let da = packed.narrow(0, 0, n)?.reshape(a.shape())?;
        let db = packed.narrow(0, n, n)?.reshape(b.shape())?;
        Ok((Some(da), Some(db)))
    }
}

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "retro-swiglu-bwd"
    }

    /// Output: `da` then `db`, flat.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = f32_slice(self.name(), s1, l1)?;
        let b = f32_slice(self.name(), s2, l2)?;
        let g = f32_slice(self.name(), s3, l3)?;
        same_len(self.name(), a, b)?;
        same_len(self.name(), a, g)?;
        let n = a.len();
        // SAFETY (unfilled): the loop below writes every element of `da` and `db`.
        let mut out = unsafe { unfilled(2 * n) };
        let (da, db) = out.split_at_mut(n);
        da.par_chunks_mut(ELEMS_PER_TASK)
            .zip(db.par_chunks_mut(ELEMS_PER_TASK))
            .zip(a.par_chunks(ELEMS_PER_TASK))
            .zip(
                b.par_chunks(ELEMS_PER_TASK)
                    .zip(g.par_chunks(ELEMS_PER_TASK)),
            )
            .for_each(|(((da, db), a), (b, g))| {
                for i in 0..a.len() {
                    let s = sigmoid(a[i]);
                    // silu'(a) = s · (1 + a · (1 − s))
                    da[i] = g[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
                    db[i] = g[i] * a[i] * s;
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}

/// `silu(a) · b` for f32 CPU tensors of one shape (made contiguous here).
pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, SwiGlu)
}
