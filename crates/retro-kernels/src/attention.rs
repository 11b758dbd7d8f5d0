//! Scaled dot-product attention, causal or unmasked, with grouped-query heads, as one op with a
//! hand-written backward.
//!
//! Composed from candle ops, attention writes the scores, the masked softmax, and in backward the
//! probabilities' gradient and the scores' gradient as separate `(batch, heads, t, s)` tensors,
//! each through its own pass, and for a causal mask it multiplies the whole `t × s` square although
//! half of it is masked. Here each rayon task takes a block of 64 query rows of one head: the
//! scores go through gemm straight into the probability buffer, are soft-maxed in place, and only
//! the keys a block can see (up to its last row's position) enter the two gemms. The softmax
//! output is the only `t × s` tensor kept for backward (inside the op, taken by the backward).
//! Backward runs in two passes that write disjoint blocks: per query block `dP = dO·Vᵀ`,
//! `dS = P ⊙ (dP − rowsum(dP ⊙ P))·scale` and `dQ = dS·K`; per key block of a kv head, summed over
//! its query heads, `dK = dSᵀ·Q` and `dV = Pᵀ·dO`, skipping the query rows that cannot see the
//! block. Inner gemms run single-threaded inside the tasks.
//!
//! Head layout (HF `repeat_kv`): query head `h` uses kv head `h / (heads / kv_heads)`. Causal:
//! query `i` sits at position `i + s − t` and sees keys `0..=i + s − t` (a KV cache's prefix
//! included), as `retro_model::decoder::causal_mask` builds it.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::fast_exp::exp;
use crate::matmul::{gemm, Operand, Write};
use crate::rows::{dot, f32_slice, max, sum, unfilled};

/// Query rows per forward task and per first backward pass; key rows per second backward pass.
const BLOCK: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    s: usize,
    head_dim: usize,
    causal: bool,
}

impl Dims {
    fn of(q: &[usize], k: &[usize], v: &[usize], causal: bool) -> Result<Self> {
        let [b, h, t, d]: [usize; 4] = q.try_into().map_err(|_| shape_err("q", q))?;
        let [kb, kh, s, kd]: [usize; 4] = k.try_into().map_err(|_| shape_err("k", k))?;
        if v != k {
            bail!("attention: v has shape {v:?}, k {k:?}");
        }
        if kb != b || kd != d || kh == 0 || h % kh != 0 {
            bail!("attention: q {q:?} and k/v {k:?} do not fit (batch, heads, seq, head_dim) with heads a multiple of kv heads");
        }
        if s == 0 || d == 0 {
            bail!("attention: no keys or an empty head dimension (k {k:?})");
        }
        if causal && s < t {
            bail!("attention: causal attention needs at least as many keys ({s}) as queries ({t})");
        }
        Ok(Self {
            batch: b,
            heads: h,
            kv_heads: kh,
            t,
            s,
            head_dim: d,
            causal,
        })
    }

    fn group_size(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Query row `i` sees keys `0..visible(i)`.
    fn visible(&self, i: usize) -> usize {
        match self.causal {
            true => (i + 1 + self.s - self.t).min(self.s),
            false => self.s,
        }
    }

    /// The first query row that sees key `j`.
    fn first_row_seeing(&self, j: usize) -> usize {
        match self.causal {
            true => j.saturating_sub(self.s - self.t),
            false => 0,
        }
    }

    /// The kv head `(batch · kv_heads + g)` that query head `bh = batch · heads + h` reads.
    fn kv_of(&self, bh: usize) -> usize {
        let (b, h) = (bh / self.heads, bh % self.heads);
        b * self.kv_heads + h / self.group_size()
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }
}

fn shape_err(name: &str, dims: &[usize]) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "attention: {name} must be (batch, heads, seq, head_dim), got {dims:?}"
    ))
}

/// `y = softmax(y)` over one row, with the rows helpers' lane order (bit-stable under trailing
/// masked keys).
#[inline]
fn softmax_in_place(y: &mut [f32]) {
    let m = max(y);
    for v in y.iter_mut() {
        *v = exp(*v - m);
    }
    let inv = 1.0 / sum(y);
    for v in y.iter_mut() {
        *v *= inv;
    }
}

/// Unfilled buffers for [`forward`]'s `probs` and `out`.
///
/// # Safety
/// Only for [`forward`], which writes every element of both: each row of `probs` by the Q·Kᵀ gemm
/// up to its visible keys (at least one) and zeros after them, `out` by the P·V gemm.
unsafe fn forward_outputs(d: &Dims) -> (Vec<f32>, Vec<f32>) {
    let rows = d.batch * d.heads * d.t;
    unsafe { (unfilled(rows * d.s), unfilled(rows * d.head_dim)) }
}

/// Fills `probs` `(b, heads, t, s)` and `out` `(b, heads, t, head_dim)`.
fn forward(d: &Dims, q: &[f32], k: &[f32], v: &[f32], probs: &mut [f32], out: &mut [f32]) {
    let (t, s, hd) = (d.t, d.s, d.head_dim);
    let scale = d.scale();
    probs
        .par_chunks_mut(t * s)
        .zip(out.par_chunks_mut(t * hd))
        .enumerate()
        .for_each(|(bh, (p_head, o_head))| {
            let q_head = &q[bh * t * hd..(bh + 1) * t * hd];
            let g = d.kv_of(bh);
            let (k_g, v_g) = (
                &k[g * s * hd..(g + 1) * s * hd],
                &v[g * s * hd..(g + 1) * s * hd],
            );
            p_head
                .par_chunks_mut(BLOCK * s)
                .zip(o_head.par_chunks_mut(BLOCK * hd))
                .enumerate()
                .for_each(|(block, (p, o))| {
                    let (r0, rows) = (block * BLOCK, p.len() / s);
                    let keys = d.visible(r0 + rows - 1);
                    let q_rows = Operand::rows(&q_head[r0 * hd..], hd);
                    let k_t = Operand::transposed(k_g, hd);
                    gemm(
                        (rows, keys, hd),
                        p,
                        s,
                        Write::Overwrite,
                        q_rows,
                        k_t,
                        scale,
                        1,
                    );
                    for (r, row) in p.chunks_mut(s).enumerate() {
                        let n = d.visible(r0 + r);
                        softmax_in_place(&mut row[..n]);
                        row[n..].fill(0.0);
                    }
                    let v_rows = Operand::rows(v_g, hd);
                    gemm(
                        (rows, hd, keys),
                        o,
                        hd,
                        Write::Overwrite,
                        Operand::rows(p, s),
                        v_rows,
                        1.0,
                        1,
                    );
                });
        });
}

struct Grads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

fn backward(d: &Dims, q: &[f32], k: &[f32], v: &[f32], probs: &[f32], dout: &[f32]) -> Grads {
    let (t, s, hd) = (d.t, d.s, d.head_dim);
    let scale = d.scale();
    // SAFETY (unfilled): every row of `ds` is written by the dO·Vᵀ gemm up to its visible keys
    // and zero-filled after them; `dq` by a gemm with at least one key (`Overwrite`).
    let mut ds = unsafe { unfilled(d.batch * d.heads * t * s) };
    let mut dq = unsafe { unfilled(d.batch * d.heads * t * hd) };
    // Pass 1, per block of query rows: dP = dO·Vᵀ, then dS in place, then dQ = dS·K.
    ds.par_chunks_mut(t * s)
        .zip(dq.par_chunks_mut(t * hd))
        .enumerate()
        .for_each(|(bh, (ds_head, dq_head))| {
            let p_head = &probs[bh * t * s..(bh + 1) * t * s];
            let do_head = &dout[bh * t * hd..(bh + 1) * t * hd];
            let g = d.kv_of(bh);
            let (k_g, v_g) = (
                &k[g * s * hd..(g + 1) * s * hd],
                &v[g * s * hd..(g + 1) * s * hd],
            );
            ds_head
                .par_chunks_mut(BLOCK * s)
                .zip(dq_head.par_chunks_mut(BLOCK * hd))
                .enumerate()
                .for_each(|(block, (dsb, dqb))| {
                    let (r0, rows) = (block * BLOCK, dsb.len() / s);
                    let keys = d.visible(r0 + rows - 1);
                    let do_rows = Operand::rows(&do_head[r0 * hd..], hd);
                    let v_t = Operand::transposed(v_g, hd);
                    gemm(
                        (rows, keys, hd),
                        dsb,
                        s,
                        Write::Overwrite,
                        do_rows,
                        v_t,
                        1.0,
                        1,
                    );
                    for (r, row) in dsb.chunks_mut(s).enumerate() {
                        let n = d.visible(r0 + r);
                        let p = &p_head[(r0 + r) * s..(r0 + r) * s + n];
                        let c = dot(&row[..n], p);
                        for (x, &pj) in row[..n].iter_mut().zip(p) {
                            *x = pj * (*x - c) * scale;
                        }
                        row[n..].fill(0.0);
                    }
                    let k_rows = Operand::rows(k_g, hd);
                    gemm(
                        (rows, hd, keys),
                        dqb,
                        hd,
                        Write::Overwrite,
                        Operand::rows(dsb, s),
                        k_rows,
                        1.0,
                        1,
                    );
                });
        });
    // Pass 2, per block of keys of one kv head, summed over the query heads that read it:
    // dK = dSᵀ·Q and dV = Pᵀ·dO over the query rows that can see the block.
    // SAFETY (unfilled): the first query head of each group writes every block with `Overwrite`
    // (zeros where no query row sees the block).
    let mut dk = unsafe { unfilled(d.batch * d.kv_heads * s * hd) };
    let mut dv = unsafe { unfilled(d.batch * d.kv_heads * s * hd) };
    let group = d.group_size();
    dk.par_chunks_mut(s * hd)
        .zip(dv.par_chunks_mut(s * hd))
        .enumerate()
        .for_each(|(bg, (dk_g, dv_g))| {
            let (b, g) = (bg / d.kv_heads, bg % d.kv_heads);
            dk_g.par_chunks_mut(BLOCK * hd)
                .zip(dv_g.par_chunks_mut(BLOCK * hd))
                .enumerate()
                .for_each(|(block, (dkb, dvb))| {
                    let (c0, cols) = (block * BLOCK, dkb.len() / hd);
                    let r0 = d.first_row_seeing(c0).min(t);
                    for r in 0..group {
                        let bh = b * d.heads + g * group + r;
                        let head = |len: usize| bh * len..(bh + 1) * len;
                        let ds_head = &ds[head(t * s)];
                        let p_head = &probs[head(t * s)];
                        let q_head = &q[head(t * hd)];
                        let do_head = &dout[head(t * hd)];
                        let write = if r == 0 {
                            Write::Overwrite
                        } else {
                            Write::Accumulate
                        };
                        let shape = (cols, hd, t - r0);
                        let ds_t = Operand::transposed(&ds_head[r0 * s + c0..], s);
                        let q_rows = Operand::rows(&q_head[r0 * hd..], hd);
                        gemm(shape, dkb, hd, write, ds_t, q_rows, 1.0, 1);
                        let p_t = Operand::transposed(&p_head[r0 * s + c0..], s);
                        let do_rows = Operand::rows(&do_head[r0 * hd..], hd);
                        gemm(shape, dvb, hd, write, p_t, do_rows, 1.0, 1);
                    }
                });
        });
    Grads { dq, dk, dv }
}

struct Attention {
    dims: Dims,
    /// The forward's softmax output, kept for the backward (which takes it) when a gradient may
    /// be asked for.
    saved_probs: Mutex<Option<Vec<f32>>>,
    save: bool,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "retro-attention"
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
        let d = self.dims;
        if Dims::of(l1.dims(), l2.dims(), l3.dims(), d.causal)? != d {
            bail!("attention: inputs changed shape after the op was built");
        }
        let (q, k, v) = (
            f32_slice(self.name(), s1, l1)?,
            f32_slice(self.name(), s2, l2)?,
            f32_slice(self.name(), s3, l3)?,
        );
        let (mut probs, mut out) = unsafe { forward_outputs(&d) };
        forward(&d, q, k, v, &mut probs, &mut out);
        if self.save {
            *self.saved_probs.lock().unwrap_or_else(|e| e.into_inner()) = Some(probs);
        }
        Ok((CpuStorage::F32(out), Shape::from(l1.dims())))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims;
        let dout = dout.contiguous()?;
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (gs, gl) = dout.storage_and_layout();
        let (q_, k_, v_, g_) = (
            cpu_f32(&qs, ql)?,
            cpu_f32(&ks, kl)?,
            cpu_f32(&vs, vl)?,
            cpu_f32(&gs, gl)?,
        );
        let saved = self
            .saved_probs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let probs = match saved {
            Some(p) => p,
            None => {
                // A second backward through the same graph: recompute the probabilities.
                let (mut p, mut o) = unsafe { forward_outputs(&d) };
                forward(&d, q_, k_, v_, &mut p, &mut o);
                p
            }
        };
        let grads = backward(&d, q_, k_, v_, &probs, g_);
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(grads.dq, q.shape(), dev)?),
            Some(Tensor::from_vec(grads.dk, k.shape(), dev)?),
            Some(Tensor::from_vec(grads.dv, v.shape(), dev)?),
        ))
    }
}

fn cpu_f32<'a>(s: &'a Storage, l: &Layout) -> Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => f32_slice("attention backward", c, l),
        _ => bail!("attention backward: tensors must be on the CPU"),
    }
}

/// Attention of `q` `(batch, heads, t, head_dim)` over `k`, `v` `(batch, kv_heads, s, head_dim)`
/// (`heads` a multiple of `kv_heads`), scaled by `1/√head_dim`, causal or not (module docs);
/// returns `(batch, heads, t, head_dim)`. f32 CPU tensors; made contiguous here.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let dims = Dims::of(q.dims(), k.dims(), v.dims(), causal)?;
    let save = q.track_op() || k.track_op() || v.track_op();
    let op = Attention {
        dims,
        saved_probs: Mutex::new(None),
        save,
    };
    if dims.t == 0 {
        return Tensor::zeros(q.shape(), q.dtype(), q.device());
    }
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
