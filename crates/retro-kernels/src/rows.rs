//! Shared plumbing: borrowing a contiguous f32 (or u32) slice from a custom op's input, the
//! number of rows a rayon task should take, and multi-accumulator reductions that vectorise.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};

pub(crate) fn f32_slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => bail!("{op}: input must be contiguous"),
        _ => bail!("{op}: input must be f32, got {:?}", s.dtype()),
    }
}

pub(crate) fn u32_slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::U32(_), None) => bail!("{op}: input must be contiguous"),
        _ => bail!("{op}: input must be u32, got {:?}", s.dtype()),
    }
}

pub(crate) fn f32_slice_mut<'a>(
    op: &str,
    s: &'a mut CpuStorage,
    l: &Layout,
) -> Result<&'a mut [f32]> {
    let dtype = s.dtype();
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        (CpuStorage::F32(_), None) => bail!("{op}: output must be contiguous"),
        _ => bail!("{op}: output must be f32, got {dtype:?}"),
    }
}

/// The `(rows, cols)` of a custom op's matrix input `what`, or an error naming the op and input.
pub(crate) fn matrix_dims(op: &str, what: &str, l: &Layout) -> Result<(usize, usize)> {
    match l.dims() {
        [r, c] => Ok((*r, *c)),
        d => bail!("{op}: {what} must be a matrix, got shape {d:?}"),
    }
}

/// A vector of `len` f32 that is not zero-filled first, for a kernel output whose every element
/// the kernel writes before anything reads it (each caller says which writes cover it). Zeroing
/// a fresh output that is then overwritten was about half of SwiGLU's time and 2% of a train
/// step (docs/benchmarks.md); candle's own `alloc_uninit` skips it the same way.
///
/// # Safety
/// Every element must be written before it is read.
#[allow(clippy::uninit_vec)]
pub(crate) unsafe fn unfilled(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 is Copy, has no drop and every bit pattern is a value; the caller writes each
    // element before reading it.
    unsafe { v.set_len(len) };
    v
}

/// Rows per rayon task so that a task holds at least about 16K elements.
pub(crate) fn min_rows(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// Elements per rayon task for element-wise loops.
pub(crate) const ELEMS_PER_TASK: usize = 16_384;

pub(crate) const LANES: usize = 8;

/// The lanes' sum in a fixed order. Every reduction here puts element `i` in lane `i % 8`, also
/// for the tail, so appending zeros (masked keys, padding) leaves the result bit-identical, as it
/// does for candle's sequential sums.
#[inline]
pub(crate) fn combine(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `Σ a[i]·b[i]` with eight independent accumulators (so LLVM may vectorise it).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    for (k, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[k] += x * y;
    }
    combine(&acc)
}

/// `Σ a[i]·b[i]·c[i]`, vectorisable like [`dot`].
#[inline]
pub(crate) fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut acc = [0f32; LANES];
    let full = n / LANES * LANES;
    for i in (0..full).step_by(LANES) {
        for k in 0..LANES {
            acc[k] += a[i + k] * b[i + k] * c[i + k];
        }
    }
    for i in full..n {
        acc[i - full] += a[i] * b[i] * c[i];
    }
    combine(&acc)
}

/// Largest element (NaN-ignoring), vectorisable.
#[inline]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let ch = a.chunks_exact(LANES);
    let rem = ch.remainder();
    for x in ch {
        for k in 0..LANES {
            acc[k] = if x[k] > acc[k] { x[k] } else { acc[k] };
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in rem {
        m = m.max(x);
    }
    m
}

/// `Σ a[i]`, vectorisable like [`dot`].
#[inline]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let ch = a.chunks_exact(LANES);
    let rem = ch.remainder();
    for x in ch {
        for k in 0..LANES {
            acc[k] += x[k];
        }
    }
    for (k, &x) in rem.iter().enumerate() {
        acc[k] += x;
    }
    combine(&acc)
}
