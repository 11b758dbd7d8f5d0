//! Rotary position embedding with backward, both pairings: rotate-half (`(i, i + d/2)`, HF) and
//! interleaved (`(2i, 2i+1)`). candle's fused `rope`/`rope_i` have no backward and `rope_slow`
//! is a concat, two broadcast muls, a narrow/neg/cat for the rotation and an add, each way. The
//! backward of a rotation by θ is the rotation by −θ: the same op with `sin` negated.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::rows::{f32_slice, unfilled};

struct Rope {
    interleaved: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "retro-rope"
    }

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
        let cos = f32_slice(self.name(), s2, l2)?;
        let sin = f32_slice(self.name(), s3, l3)?;
        let (t, d) = match l1.dims() {
            [_, _, t, d] => (*t, *d),
            dims => bail!("rope: x must be (batch, heads, seq, head_dim), got {dims:?}"),
        };
        let half = d / 2;
        if d % 2 != 0 || cos.len() != t * half || sin.len() != t * half {
            bail!(
                "rope: head_dim {d} must be even and cos/sin (seq {t}, {half}), got {:?} and {:?}",
                l2.dims(),
                l3.dims()
            );
        }
        if t * d == 0 {
            return Ok((CpuStorage::F32(vec![0f32; x.len()]), l1.shape().clone()));
        }
        // SAFETY (unfilled): every position of every head is written below (d even, both halves).
        let mut y = unsafe { unfilled(x.len()) };
        y.par_chunks_mut(t * d)
            .zip(x.par_chunks(t * d))
            .for_each(|(ys, xs)| {
                for p in 0..t {
                    let (c, s) = (
                        &cos[p * half..(p + 1) * half],
                        &sin[p * half..(p + 1) * half],
                    );
                    let (yr, xr) = (&mut ys[p * d..(p + 1) * d], &xs[p * d..(p + 1) * d]);
                    if self.interleaved {
                        for i in 0..half {
                            let (a, b) = (xr[2 * i], xr[2 * i + 1]);
                            yr[2 * i] = a * c[i] - b * s[i];
                            yr[2 * i + 1] = b * c[i] + a * s[i];
                        }
                    } else {
                        let (x1, x2) = xr.split_at(half);
                        let (y1, y2) = yr.split_at_mut(half);
                        for i in 0..half {
                            y1[i] = x1[i] * c[i] - x2[i] * s[i];
                            y2[i] = x2[i] * c[i] + x1[i] * s[i];
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = Rope {
            interleaved: self.interleaved,
        };
        let dx = g.contiguous()?.apply_op3_no_bwd(cos, &sin.neg()?, &op)?;
        Ok((Some(dx), None, None))
    }
}

/// RoPE of `x` `(batch, heads, seq, head_dim)` with `cos`/`sin` `(seq, head_dim/2)`: pairs
/// `(2i, 2i+1)` when `interleaved`, else `(i, i + head_dim/2)`. f32 CPU tensors; gradient to `x`
/// only (the tables are constants).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &cos.contiguous()?.detach(),
        &sin.contiguous()?.detach(),
        Rope { interleaved },
    )
}
