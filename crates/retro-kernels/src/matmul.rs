//! A thin, checked wrapper around the `gemm` crate (the same gemm candle's CPU matmul calls) for
//! kernels that multiply strided views of their own buffers: transposed operands are read through
//! their strides, never copied.

use rayon::prelude::*;

use crate::rows::unfilled;

/// A row-major view of a `rows × cols` matrix inside `data`: element `(r, c)` is
/// `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Operand<'a> {
    pub fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `row_stride` apart.
    pub fn transposed(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: row_stride,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// How `gemm` writes its `m × n` result.
#[derive(Clone, Copy, PartialEq)]
pub enum Write {
    /// `dst = scale · lhs·rhs`
    Overwrite,
    /// `dst += scale · lhs·rhs`
    Accumulate,
}

/// `dst[i·dst_row_stride + j] (=|+=) scale · Σ_p lhs(i, p)·rhs(p, j)` for an `m × k` `lhs` and a
/// `k × n` `rhs`, on `threads` threads (1: the calling thread only, for use inside a rayon task).
///
/// Panics if an operand or `dst` is too short for its shape: every caller derives shapes and
/// strides from the same dims, so that is a bug here, not bad input.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_row_stride: usize,
    write: Write,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        m == 0 || (m - 1) * dst_row_stride + n <= dst.len(),
        "gemm: dst too short"
    );
    if k == 0 {
        if write == Write::Overwrite {
            for i in 0..m {
                dst[i * dst_row_stride..i * dst_row_stride + n].fill(0.0);
            }
        }
        return;
    }
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "gemm: operand too short");
    // SAFETY: the extents of dst, lhs and rhs were checked above; dst does not alias lhs or rhs
    // (it is a `&mut` borrow).
    unsafe {
        raw(
            (m, n, k),
            dst.as_mut_ptr(),
            dst_row_stride,
            write,
            lhs,
            rhs,
            scale,
            threads,
        )
    };
}

/// A fresh `m × n` row-major `lhs·rhs` on all of candle's threads, written by gemm into an
/// unzeroed buffer (candle zero-fills every matmul output that gemm then overwrites).
pub(crate) fn gemm_new(m: usize, n: usize, k: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    let len = m * n;
    if k == 0 || len == 0 {
        return vec![0.0; len];
    }
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "gemm: operand too short");
    let threads = candle_core::utils::get_num_threads();
    if m == 1 && threads > 1 && n * k >= GEMV_SPLIT_MIN_MACS {
        return gemv_split(n, k, lhs, rhs, threads);
    }
    let mut dst = Vec::<f32>::with_capacity(len);
    // SAFETY: operand extents checked above; gemm writes all `m·n` elements of the spare capacity
    // (`Write::Overwrite`) before `set_len` makes them part of the vector.
    unsafe {
        raw(
            (m, n, k),
            dst.as_mut_ptr(),
            n,
            Write::Overwrite,
            lhs,
            rhs,
            1.0,
            threads,
        );
        dst.set_len(len);
    }
    dst
}

/// Below this many multiply-adds a one-row product is not worth splitting over threads.
const GEMV_SPLIT_MIN_MACS: usize = 1 << 16;

/// A one-row product (`1 × k` by `k × n`; a decoding step's every projection) with its columns
/// split over `threads` rayon tasks, each a single-threaded gemm. The `gemm` crate runs a one-row
/// product on one thread whatever parallelism it is given (`perf`: decoding sat in its
/// single-threaded gemv, one core busy), and at one row the product only streams the weights, so
/// a second core's memory bandwidth is what makes it faster.
fn gemv_split(n: usize, k: usize, lhs: Operand, rhs: Operand, threads: usize) -> Vec<f32> {
    // Two tasks per thread evens out uneven cores; 16-column multiples keep the kernel's tiles whole.
    let cols = n.div_ceil(2 * threads).next_multiple_of(16);
    // SAFETY (unfilled): the tasks below cover every column, each written by gemm (`Overwrite`).
    let mut dst = unsafe { unfilled(n) };
    dst.par_chunks_mut(cols).enumerate().for_each(|(c, out)| {
        let first = c * cols;
        let rhs_cols = Operand {
            data: &rhs.data[first * rhs.col_stride..],
            ..rhs
        };
        gemm(
            (1, out.len(), k),
            out,
            out.len(),
            Write::Overwrite,
            lhs,
            rhs_cols,
            1.0,
            1,
        );
    });
    dst
}

/// The `gemm` crate's call. Safety: `dst` must be valid for writes of `m` rows of `n` elements
/// `dst_row_stride` apart (and for reads with `Write::Accumulate`); `lhs` and `rhs` must fit
/// `m × k` and `k × n` and not overlap `dst`.
#[allow(clippy::too_many_arguments)]
unsafe fn raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    write: Write,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
    threads: usize,
) {
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_stride as isize,
        write == Write::Accumulate,
        lhs.data.as_ptr(),
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.data.as_ptr(),
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        1.0,
        scale,
        false,
        false,
        false,
        parallelism,
    );
}
