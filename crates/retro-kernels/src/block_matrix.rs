//! A weight matrix kept in llama.cpp's 32-weight blocks (`Q4_0`, `Q4_1`, `Q8_0`), multiplied by
//! one f32 row without dequantising: the decoding step's every projection (issue 3).
//!
//! At one row a product only streams its weights, so decoding speed is bytes per weight: f32
//! weights cost 4 bytes, a `Q4_1` block 5 bits. The GGUF that a model came from already holds its
//! weights in these blocks, and the f32 weights the model trains on are exactly their dequantised
//! values (`crate::gguf` in retro-model), so multiplying the blocks gives the same product up to
//! the order of float additions, not an approximation of it.
//!
//! Hand-written because candle's `QMatMul` rounds the activation row to 8-bit blocks first (a
//! second quantisation the f32 model does not have) and was slower than our f32 path on this
//! machine (134 against 35 ms per SmolLM2 token, docs/benchmarks.md). Here the activations stay
//! f32: for a block `b` with scale `d`, offset `m` and codes `q`,
//! `Σ_j (d·q_j + m)·x_j = d·Σ_j q_j·x_j + m·Σ_j x_j`, and `Σ_j x_j` is shared by every row.

use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

/// Weights per block in every format here (ggml's `QK4_0`, `QK4_1`, `QK8_0`).
pub const BLOCK: usize = 32;

/// The ggml block formats kept for decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// `{f16 d; u8 qs[16]}`: weight `d·(q − 8)`, 4-bit codes.
    Q4_0,
    /// `{f16 d; f16 m; u8 qs[16]}`: weight `d·q + m`, 4-bit codes.
    Q4_1,
    /// `{f16 d; i8 qs[32]}`: weight `d·q`.
    Q8_0,
}

impl BlockFormat {
    /// Bytes of one block in a GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }
}

/// The codes of a [`BlockMatrix`], with each block's scale (and offset) widened to f32 once at
/// load rather than converted from f16 at every product.
#[derive(Debug, Clone)]
enum Codes {
    /// 4-bit codes, two per byte as ggml packs them: byte `j` of a block holds code `j` in its low
    /// nibble and code `j + 16` in its high one. `Q4_0` is stored as `Q4_1` with `m = −8·d`.
    Nibbles {
        scales: Vec<f32>,
        offsets: Vec<f32>,
        codes: Vec<u8>,
    },
    /// Signed 8-bit codes.
    Bytes { scales: Vec<f32>, codes: Vec<i8> },
}

/// A `rows × cols` matrix (`cols` a multiple of [`BLOCK`]) in ggml blocks, row-major, each row its
/// own run of blocks, as a GGUF tensor of shape `(rows, cols)` stores it.
#[derive(Debug, Clone)]
pub struct BlockMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    codes: Codes,
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// IEEE half → f32 (exact), as ggml's `GGML_FP16_TO_FP32`.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal half: normalise the mantissa.
            let shift = man.leading_zeros() - 21;
            let man = (man << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (man << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

impl BlockMatrix {
    /// Reads the blocks of a GGUF tensor of shape `(rows, cols)`.
    pub fn from_ggml(format: BlockFormat, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) {
            bail!("block matrix: {cols} columns is not a multiple of {BLOCK}");
        }
        let blocks = rows * cols / BLOCK;
        let want = blocks * format.block_bytes();
        if data.len() != want {
            bail!(
                "block matrix {format:?} ({rows}, {cols}): {} bytes, expected {want}",
                data.len()
            );
        }
        let mut scales = Vec::with_capacity(blocks);
        let codes = match format {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let mut offsets = Vec::with_capacity(blocks);
                let mut codes = Vec::with_capacity(blocks * BLOCK / 2);
                for block in data.chunks_exact(format.block_bytes()) {
                    let d = f16_at(block, 0);
                    let (m, qs) = match format {
                        BlockFormat::Q4_1 => (f16_at(block, 2), &block[4..]),
                        _ => (-8.0 * d, &block[2..]),
                    };
                    scales.push(d);
                    offsets.push(m);
                    codes.extend_from_slice(qs);
                }
                Codes::Nibbles {
                    scales,
                    offsets,
                    codes,
                }
            }
            BlockFormat::Q8_0 => {
                let mut codes = Vec::with_capacity(blocks * BLOCK);
                for block in data.chunks_exact(format.block_bytes()) {
                    scales.push(f16_at(block, 0));
                    codes.extend(block[2..].iter().map(|&b| b as i8));
                }
                Codes::Bytes { scales, codes }
            }
        };
        Ok(Self {
            format,
            rows,
            cols,
            codes,
        })
    }

    /// Rounds a row-major `rows × cols` f32 matrix to `Q8_0` blocks as llama.cpp's
    /// `quantize_row_q8_0` does (scale `max|w|/127` per block of 32, codes rounded to nearest), but
    /// keeps each scale in f32 rather than f16. Lossy: each weight moves by at most half a step,
    /// `max|w|/254` of its block.
    pub fn quantize_q8_0(rows: usize, cols: usize, values: &[f32]) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) {
            bail!("block matrix: {cols} columns is not a multiple of {BLOCK}");
        }
        if values.len() != rows * cols {
            bail!(
                "block matrix ({rows}, {cols}): {} values given",
                values.len()
            );
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            bail!("block matrix: cannot round the non-finite weight {bad}");
        }
        let blocks = rows * cols / BLOCK;
        let mut scales = Vec::with_capacity(blocks);
        let mut codes = Vec::with_capacity(rows * cols);
        for block in values.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            scales.push(d);
            codes.extend(block.iter().map(|v| (v * inv).round() as i8));
        }
        Ok(Self {
            format: BlockFormat::Q8_0,
            rows,
            cols,
            codes: Codes::Bytes { scales, codes },
        })
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The same matrix with its rows in the order `order` (row `i` of the result is row
    /// `order[i]` of this one): RoPE layout changes permute the rows of q/k projections.
    pub fn permute_rows(&self, order: &[usize]) -> Result<Self> {
        if order.len() != self.rows || order.iter().any(|&r| r >= self.rows) {
            bail!(
                "block matrix: a row order of {} rows does not fit {}",
                order.len(),
                self.rows
            );
        }
        let per_row = self.cols / BLOCK;
        fn gather<T: Copy>(v: &[T], order: &[usize], width: usize) -> Vec<T> {
            order
                .iter()
                .flat_map(|&r| v[r * width..(r + 1) * width].iter().copied())
                .collect()
        }
        let codes = match &self.codes {
            Codes::Nibbles {
                scales,
                offsets,
                codes,
            } => Codes::Nibbles {
                scales: gather(scales, order, per_row),
                offsets: gather(offsets, order, per_row),
                codes: gather(codes, order, self.cols / 2),
            },
            Codes::Bytes { scales, codes } => Codes::Bytes {
                scales: gather(scales, order, per_row),
                codes: gather(codes, order, self.cols),
            },
        };
        Ok(Self { codes, ..*self })
    }

    /// The f32 values, row-major (what a GGUF loader's dequantisation gives).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (b, w) in out.chunks_exact_mut(BLOCK).enumerate() {
            match &self.codes {
                Codes::Nibbles {
                    scales,
                    offsets,
                    codes,
                } => {
                    let qs = &codes[b * BLOCK / 2..(b + 1) * BLOCK / 2];
                    for j in 0..BLOCK / 2 {
                        w[j] = (qs[j] & 15) as f32 * scales[b] + offsets[b];
                        w[j + BLOCK / 2] = (qs[j] >> 4) as f32 * scales[b] + offsets[b];
                    }
                }
                Codes::Bytes { scales, codes } => {
                    for (wj, &q) in w.iter_mut().zip(&codes[b * BLOCK..(b + 1) * BLOCK]) {
                        *wj = q as f32 * scales[b];
                    }
                }
            }
        }
        out
    }

    /// `y = W·x` for one f32 row `x` of `cols` values, on the rayon pool.
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "block matrix: input length");
        let per_row = self.cols / BLOCK;
        let mut y = vec![0f32; self.rows];
        // Rows per task: about two tasks per thread (uneven cores), but no task under ~64k weights,
        // where rayon's hand-off costs more than it saves.
        let tasks = (2 * rayon::current_num_threads()).max(1);
        let min_rows = (1 << 16) / self.cols.max(1);
        let chunk = self.rows.div_ceil(tasks).max(min_rows).max(1);
        match &self.codes {
            Codes::Nibbles {
                scales,
                offsets,
                codes,
            } => {
                let block_sums: Vec<f32> = x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
                y.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| {
                    for (i, yi) in out.iter_mut().enumerate() {
                        let r = c * chunk + i;
                        let blocks = r * per_row..(r + 1) * per_row;
                        *yi = nibble_row_dot(
                            &codes[r * self.cols / 2..(r + 1) * self.cols / 2],
                            &scales[blocks.clone()],
                            &offsets[blocks],
                            x,
                            &block_sums,
                        );
                    }
                });
            }
            Codes::Bytes { scales, codes } => {
                y.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| {
                    for (i, yi) in out.iter_mut().enumerate() {
                        let r = c * chunk + i;
                        *yi = byte_row_dot(
                            &codes[r * self.cols..(r + 1) * self.cols],
                            &scales[r * per_row..(r + 1) * per_row],
                            x,
                        );
                    }
                });
            }
        }
        y
    }
}

/// `Σ_b d_b·Σ_j q_bj·x_bj + m_b·Σ_j x_bj` over one row's 4-bit blocks. The per-block products go
/// into 16 lanes scaled by `d_b` and are summed once at the end, so the inner loops are plain
/// lane-wise multiply-adds that LLVM turns into AVX2 (byte → int → float conversions and FMAs).
#[inline(always)]
fn nibble_row_dot(
    codes: &[u8],
    scales: &[f32],
    offsets: &[f32],
    x: &[f32],
    block_sums: &[f32],
) -> f32 {
    const HALF: usize = BLOCK / 2;
    let mut acc = [0f32; HALF];
    for ((qs, xb), &d) in codes
        .chunks_exact(HALF)
        .zip(x.chunks_exact(BLOCK))
        .zip(scales)
    {
        let qs: &[u8; HALF] = qs.try_into().expect("16 code bytes");
        let (lo, hi) = xb.split_at(HALF);
        let mut t = [0f32; HALF];
        for j in 0..HALF {
            t[j] = (qs[j] & 15) as f32 * lo[j] + (qs[j] >> 4) as f32 * hi[j];
        }
        for j in 0..HALF {
            acc[j] += d * t[j];
        }
    }
    let offset_part: f32 = offsets.iter().zip(block_sums).map(|(m, s)| m * s).sum();
    acc.iter().sum::<f32>() + offset_part
}

/// `Σ_b d_b·Σ_j q_bj·x_bj` over one row's 8-bit blocks; lanes as in [`nibble_row_dot`].
#[inline(always)]
fn byte_row_dot(codes: &[i8], scales: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; BLOCK];
    for ((qs, xb), &d) in codes
        .chunks_exact(BLOCK)
        .zip(x.chunks_exact(BLOCK))
        .zip(scales)
    {
        let mut t = [0f32; BLOCK];
        for j in 0..BLOCK {
            t[j] = qs[j] as f32 * xb[j];
        }
        for j in 0..BLOCK {
            acc[j] += d * t[j];
        }
    }
    acc.iter().sum()
}

/// `x·Wᵀ` for an f32 CPU `x` of shape `(..., cols)` with one row in all, `W` in blocks; returns
/// `(..., rows)`. No gradient: this is for decoding.
pub fn block_linear(x: &Tensor, w: &BlockMatrix) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&inp, lead)) = dims.split_last() else {
        bail!("block linear: input must have at least one dimension");
    };
    if lead.iter().product::<usize>() != 1 || inp != w.cols {
        bail!(
            "block linear: input {dims:?} is not one row of {} values",
            w.cols
        );
    }
    let row = x.flatten_all()?.to_vec1::<f32>()?;
    let y = w.matvec(&row);
    let mut out_dims = lead.to_vec();
    out_dims.push(w.rows);
    Tensor::from_vec(y, out_dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversion_matches_the_half_crate_semantics() {
        // 1.0, -2.0, 65504 (max), smallest subnormal, a subnormal, 0.5, -0
        let cases = [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x0200, 3.051_757_8e-5),
            (0x3800, 0.5),
            (0x8000, -0.0),
        ];
        for (h, want) in cases {
            assert_eq!(half_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
        }
        assert!(half_to_f32(0x7e00).is_nan());
        assert_eq!(half_to_f32(0xfc00), f32::NEG_INFINITY);
    }
}
