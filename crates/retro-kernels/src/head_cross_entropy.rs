//! The output head and the masked token cross-entropy as one op, `Σ_r mask[r] · (lse(z_r) −
//! z_r[target[r]])` with `z = hidden · Wᵀ`, computed in blocks of rows so that the
//! `(tokens, vocab)` logits are never written whole.
//!
//! At the retro-fitting experiment's size (hidden 128, vocabulary 49,152, 2,048 tokens a batch)
//! the logits and their gradient are 400 MB each, written and read back by separate passes, and the
//! head's element-wise work was the largest non-matmul share of a train step (docs/benchmarks.md,
//! issue 6). Here each block's logits go from gemm into one reused tile, are turned into
//! `mask · (softmax − onehot)` in place (one `exp` per logit instead of two), and the tile is
//! consumed at once by the two gradient products `dH = dZ·W` and `dW += dZᵀ·H`.
//!
//! The gradients are computed in the forward pass (as Liger-Kernel's fused linear cross-entropy
//! does): the loss is a scalar, so its backward only scales them by the incoming gradient, and no
//! product is recomputed. That is three head products, as unfused. When neither input tracks a
//! gradient (evaluation) only the loss is computed. Rows with mask 0 are left out of the products
//! altogether, which is most rows in instruction tuning (loss on the last answer only).

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::fast_exp::exp;
use crate::matmul::{gemm, Operand, Write};
use crate::rows::{combine, f32_slice, matrix_dims, max, unfilled, LANES};

/// Logits per block, at most: 32M f32 (128 MB), rounded down to whole 64-row blocks (640 rows at
/// vocabulary 49,152). Each block adds its `dZᵀ·H` into the whole `dW` (`vocab × dim`), so small
/// blocks re-read and re-write `dW` many times, and a row count that is not a multiple of the gemm
/// micro-kernel's 64 rows runs the slower edge kernels: at the experiment's size 85-row blocks
/// made the step 10% slower than unfused, while 512–1024 rows made it about 5% faster
/// (docs/benchmarks.md).
const TILE_ELEMS: usize = 1 << 25;

/// Gradients computed by the forward pass, unscaled, for the backward to scale and hand out.
struct Grads {
    hidden: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
}

struct HeadNll {
    targets: Vec<u32>,
    mask: Vec<f32>,
    want_hidden: bool,
    want_weight: bool,
    rows_per_block: Option<usize>,
    grads: Mutex<Option<Grads>>,
}

/// `row ← exp(row − mx)`, returning the sum (lane order as in [`combine`]).
fn exp_in_place(row: &mut [f32], mx: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            c[k] = exp(c[k] - mx);
            acc[k] += c[k];
        }
    }
    for (k, x) in chunks.into_remainder().iter_mut().enumerate() {
        *x = exp(*x - mx);
        acc[k] += *x;
    }
    combine(&acc)
}

impl HeadNll {
    /// One block's logit rows (in `tile`) → their losses; with `gradient`, the rows become
    /// `mask · (softmax − onehot)`, the loss's gradient with respect to the logits.
    fn rows_loss(
        &self,
        tile: &mut [f32],
        vocab: usize,
        rows: &[usize],
        gradient: bool,
    ) -> Vec<f64> {
        let mut losses = vec![0f64; rows.len()];
        tile.par_chunks_mut(vocab)
            .zip(rows.par_iter())
            .zip(losses.par_iter_mut())
            .with_min_len((8192 / vocab).max(1))
            .for_each(|((z, &r), loss)| {
                let (t, m) = (self.targets[r] as usize, self.mask[r]);
                let picked = z[t];
                let mx = max(z);
                let s = exp_in_place(z, mx);
                *loss = (m * (mx + s.ln() - picked)) as f64;
                if gradient {
                    let scale = m / s;
                    z.iter_mut().for_each(|x| *x *= scale);
                    z[t] -= m;
                }
            });
        losses
    }
}

impl CustomOp2 for HeadNll {
    fn name(&self) -> &'static str {
        "retro-head-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (hidden, weight) = (f32_slice(op, s1, l1)?, f32_slice(op, s2, l2)?);
        let ((n, dim), (vocab, wdim)) = (
            matrix_dims(op, "hidden", l1)?,
            matrix_dims(op, "weight", l2)?,
        );
        if dim != wdim {
            bail!(
                "{op}: hidden states {:?} do not fit the head's weight {:?}",
                l1.dims(),
                l2.dims()
            );
        }
        if self.targets.len() != n || self.mask.len() != n {
            bail!(
                "{op}: {n} hidden rows but {} targets and {} mask values",
                self.targets.len(),
                self.mask.len()
            );
        }
        if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            bail!("{op}: target {t} out of range for vocabulary {vocab}");
        }
        let active: Vec<usize> = (0..n).filter(|&r| self.mask[r] != 0.0).collect();
        let gradient = self.want_hidden || self.want_weight;
        let mut d_weight = match (self.want_weight, active.is_empty() || dim == 0) {
            (false, _) => Vec::new(),
            (true, true) => vec![0f32; vocab * dim],
            // SAFETY (unfilled): the first block's dW product overwrites all of it.
            (true, false) => unsafe { unfilled(vocab * dim) },
        };
        let mut d_active = match self.want_hidden {
            // SAFETY (unfilled): every block's dH product overwrites its rows.
            true => unsafe { unfilled(active.len() * dim) },
            false => Vec::new(),
        };
        let mut losses = Vec::with_capacity(active.len());
        if vocab > 0 && !active.is_empty() {
            // The active rows, packed, so that every product runs over whole blocks of them.
            let packed: Vec<f32> = active
                .iter()
                .flat_map(|&r| hidden[r * dim..(r + 1) * dim].iter().copied())
                .collect();
            let block = self
                .rows_per_block
                .unwrap_or((TILE_ELEMS / vocab / 64 * 64).max(64))
                .min(active.len());
            let threads = candle_core::utils::get_num_threads();
            // SAFETY (unfilled): each block's logits are written by gemm before anything reads them.
            let mut tile = unsafe { unfilled(block * vocab) };
            for (b, first) in (0..active.len()).step_by(block).enumerate() {
                let rows = block.min(active.len() - first);
                let h = &packed[first * dim..(first + rows) * dim];
                let z = &mut tile[..rows * vocab];
                let (h_op, w_op) = (Operand::rows(h, dim), Operand::rows(weight, dim));
                gemm(
                    (rows, vocab, dim),
                    z,
                    vocab,
                    Write::Overwrite,
                    h_op,
                    Operand::transposed(weight, dim),
                    1.0,
                    threads,
                );
                losses.extend(self.rows_loss(z, vocab, &active[first..first + rows], gradient));
                if self.want_hidden {
                    let dh = &mut d_active[first * dim..(first + rows) * dim];
                    gemm(
                        (rows, dim, vocab),
                        dh,
                        dim,
                        Write::Overwrite,
                        Operand::rows(z, vocab),
                        w_op,
                        1.0,
                        threads,
                    );
                }
                if self.want_weight {
                    let write = if b == 0 {
                        Write::Overwrite
                    } else {
                        Write::Accumulate
                    };
                    gemm(
                        (vocab, dim, rows),
                        &mut d_weight,
                        dim,
                        write,
                        Operand::transposed(z, vocab),
                        h_op,
                        1.0,
                        threads,
                    );
                }
            }
        }
        if gradient {
            let d_hidden = self.want_hidden.then(|| {
                let mut dh = vec![0f32; n * dim];
                for (i, &r) in active.iter().enumerate() {
                    dh[r * dim..(r + 1) * dim].copy_from_slice(&d_active[i * dim..(i + 1) * dim]);
                }
                dh
            });
            *self.grads.lock().unwrap() = Some(Grads {
                hidden: d_hidden,
                weight: self.want_weight.then_some(d_weight),
            });
        }
        // Summed in row order, so that the loss does not depend on how rayon split the rows.
        let total: f64 = losses.iter().sum();
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(grads) = self.grads.lock().unwrap().take() else {
            bail!("retro-head-nll: backward without a forward that computed gradients, or twice");
        };
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let scaled = |v: Option<Vec<f32>>, like: &Tensor| -> Result<Option<Tensor>> {
            let Some(mut v) = v else { return Ok(None) };
            if g != 1.0 {
                v.par_iter_mut().for_each(|x| *x *= g);
            }
            Ok(Some(Tensor::from_vec(v, like.shape(), like.device())?))
        };
        Ok((scaled(grads.hidden, hidden)?, scaled(grads.weight, weight)?))
    }
}

/// `Σ mask · −log softmax(hidden · weightᵀ)[target]` as a scalar, without materialising the
/// logits: `hidden` `(…, dim)` f32, `weight` `(vocab, dim)` f32 (HF layout), `targets` `(…)` u32,
/// `mask` `(…)` f32, on the CPU. Equals [`crate::linear`] followed by [`crate::masked_nll_sum`].
/// Gradients reach `hidden` and `weight` if they track them.
pub fn linear_masked_nll_sum(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    head_nll(hidden, weight, targets, mask, None)
}

/// [`linear_masked_nll_sum`] with a chosen number of rows per block (tests use small blocks to
/// cover the block edges and the `dW` accumulation).
pub fn linear_masked_nll_sum_blocked(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    rows_per_block: usize,
) -> Result<Tensor> {
    head_nll(hidden, weight, targets, mask, Some(rows_per_block.max(1)))
}

fn head_nll(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    rows_per_block: Option<usize>,
) -> Result<Tensor> {
    let dim = hidden.dim(D::Minus1)?;
    let hidden = hidden.contiguous()?.reshape(((), dim))?;
    let op = HeadNll {
        targets: targets.flatten_all()?.to_vec1::<u32>()?,
        mask: mask.flatten_all()?.to_vec1::<f32>()?,
        want_hidden: hidden.track_op(),
        want_weight: weight.track_op(),
        rows_per_block,
        grads: Mutex::new(None),
    };
    hidden.apply_op2(&weight.contiguous()?, op)
}
