//! Masked token cross-entropy from logits: `Σ_r mask[r] · (lse(logits[r]) − logits[r, target[r]])`
//! as one op whose forward keeps each row's log-sum-exp, so the backward
//! `g · mask[r] · (softmax − onehot)` is one more pass with no max/sum. The composed version
//! (log_softmax, gather, mul, sum) writes several `(tokens, vocab)` temporaries each way.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::fast_exp::exp;
use crate::rows::{combine, f32_slice, max, u32_slice, unfilled, LANES};

struct MaskedNll {
    /// Row log-sum-exps of the last forward, for the backward.
    lse: Mutex<Option<Arc<Vec<f32>>>>,
}

struct MaskedNllBwd {
    lse: Arc<Vec<f32>>,
    grad: f32,
}

struct Inputs<'a> {
    logits: &'a [f32],
    targets: &'a [u32],
    mask: &'a [f32],
    vocab: usize,
}

fn inputs<'a>(
    op: &str,
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    s3: &'a CpuStorage,
    l3: &Layout,
) -> Result<Inputs<'a>> {
    let logits = f32_slice(op, s1, l1)?;
    let targets = u32_slice(op, s2, l2)?;
    let mask = f32_slice(op, s3, l3)?;
    let vocab = match l1.dims() {
        [_, v] => *v,
        d => bail!("{op}: logits must be (tokens, vocab), got {d:?}"),
    };
    let n = logits.len() / vocab.max(1);
    if targets.len() != n || mask.len() != n {
        bail!(
            "{op}: {n} logit rows but {} targets and {} mask values",
            targets.len(),
            mask.len()
        );
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("{op}: target {t} out of range for vocabulary {vocab}");
    }
    Ok(Inputs {
        logits,
        targets,
        mask,
        vocab,
    })
}

impl CustomOp3 for MaskedNll {
    fn name(&self) -> &'static str {
        "retro-masked-nll"
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
        let Inputs {
            logits,
            targets,
            mask,
            vocab,
        } = inputs(self.name(), s1, l1, s2, l2, s3, l3)?;
        let mut lse = vec![0f32; targets.len()];
        let total: f64 = if vocab == 0 {
            0.0
        } else {
            lse.par_iter_mut()
                .zip(logits.par_chunks(vocab))
                .zip(targets.par_iter().zip(mask.par_iter()))
                .with_min_len((8192 / vocab).max(1))
                .map(|((lse, row), (&t, &m))| {
                    if m == 0.0 {
                        return 0.0;
                    }
                    let mx = max(row);
                    let mut acc = [0f32; LANES];
                    let ch = row.chunks_exact(LANES);
                    let rem = ch.remainder();
                    for c in ch {
                        for k in 0..LANES {
                            acc[k] += exp(c[k] - mx);
                        }
                    }
                    for (k, &x) in rem.iter().enumerate() {
                        acc[k] += exp(x - mx);
                    }
                    let s = combine(&acc);
                    *lse = mx + s.ln();
                    (m * (*lse - row[t as usize])) as f64
                })
                .sum()
        };
        *self.lse.lock().unwrap() = Some(Arc::new(lse));
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(lse) = self.lse.lock().unwrap().clone() else {
            bail!("retro-masked-nll: backward before forward");
        };
        let grad = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let d = logits.apply_op3_no_bwd(targets, mask, &MaskedNllBwd { lse, grad })?;
        Ok((Some(d), None, None))
    }
}

impl CustomOp3 for MaskedNllBwd {
    fn name(&self) -> &'static str {
        "retro-masked-nll-bwd"
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
        let Inputs {
            logits,
            targets,
            mask,
            vocab,
        } = inputs(self.name(), s1, l1, s2, l2, s3, l3)?;
        // SAFETY (unfilled): each row is either zero-filled (masked out) or written whole below.
        let mut d = unsafe { unfilled(logits.len()) };
        if vocab > 0 {
            d.par_chunks_mut(vocab)
                .zip(logits.par_chunks(vocab))
                .zip(
                    targets
                        .par_iter()
                        .zip(mask.par_iter())
                        .zip(self.lse.par_iter()),
                )
                .with_min_len((8192 / vocab).max(1))
                .for_each(|((dr, row), ((&t, &m), &lse))| {
                    if m == 0.0 {
                        dr.fill(0.0);
                        return;
                    }
                    let scale = self.grad * m;
                    for (di, &x) in dr.iter_mut().zip(row) {
                        *di = scale * exp(x - lse);
                    }
                    dr[t as usize] -= scale;
                });
        }
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// `Σ mask · −log softmax(logits)[target]` as a scalar: `logits` `(…, vocab)` f32, `targets` `(…)`
/// u32, `mask` `(…)` f32, on the CPU. Rows with mask 0 are skipped. Gradient flows to `logits` only.
pub fn masked_nll_sum(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let vocab = logits.dim(D::Minus1)?;
    let logits = logits.contiguous()?.reshape(((), vocab))?;
    let targets = targets.flatten_all()?.contiguous()?;
    let mask = mask.flatten_all()?.contiguous()?;
    logits.apply_op3(
        &targets,
        &mask,
        MaskedNll {
            lse: Mutex::new(None),
        },
    )
}
