//! `BlockMatrix::matvec` against an f64 product with the dequantised weights, for every format,
//! at row counts that split unevenly over tasks and with codes and scales from a seeded generator.

use retro_kernels::{block_linear, BlockFormat, BlockMatrix, BLOCK};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

/// f32 → IEEE half bits (round toward zero; exactness does not matter for a test input).
fn to_half(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    assert!((1..31).contains(&exp), "test scale out of half range: {v}");
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

fn random_blocks(format: BlockFormat, rows: usize, cols: usize, rng: &mut Lcg) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rows * cols / BLOCK {
        out.extend(to_half(0.01 + 0.05 * rng.unit().abs()).to_le_bytes());
        if format == BlockFormat::Q4_1 {
            out.extend(to_half(-0.2 * (0.1 + rng.unit().abs())).to_le_bytes());
        }
        let code_bytes = format.block_bytes() - out.len() % format.block_bytes();
        out.extend((0..code_bytes).map(|_| rng.next() as u8));
    }
    out
}

#[test]
fn matvec_equals_the_dequantised_product() {
    let mut rng = Lcg(7);
    for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0] {
        for (rows, cols) in [
            (1, 32),
            (3, 64),
            (37, 96),
            (577, 576),
            (1536, 576),
            (200, 1536),
        ] {
            let data = random_blocks(format, rows, cols, &mut rng);
            let m = BlockMatrix::from_ggml(format, rows, cols, &data).unwrap();
            assert_eq!(m.dims(), (rows, cols));
            let w = m.dequantize();
            let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
            let y = m.matvec(&x);
            assert_eq!(y.len(), rows);
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[c] as f64)
                    .sum();
                let scale: f64 = (0..cols)
                    .map(|c| (w[r * cols + c] as f64 * x[c] as f64).abs())
                    .sum();
                assert!(
                    (y[r] as f64 - want).abs() <= 1e-5 * scale.max(1e-3),
                    "{format:?} ({rows}, {cols}) row {r}: {} vs {want}",
                    y[r]
                );
            }
        }
    }
}

#[test]
fn dequantize_follows_the_ggml_layouts() {
    // One Q4_1 block: d = 0.5, m = -1, byte j = code j (low) | code j+16 (high).
    let mut q41 = Vec::new();
    q41.extend(0x3800u16.to_le_bytes());
    q41.extend(0xbc00u16.to_le_bytes());
    q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let w = BlockMatrix::from_ggml(BlockFormat::Q4_1, 1, 32, &q41)
        .unwrap()
        .dequantize();
    for j in 0..16 {
        assert_eq!(w[j], 0.5 * j as f32 - 1.0);
        assert_eq!(w[j + 16], 0.5 * (15 - j) as f32 - 1.0);
    }
    // Q4_0: weight d·(q − 8).
    let mut q40 = Vec::new();
    q40.extend(0x4000u16.to_le_bytes()); // d = 2
    q40.extend((0..16u8).map(|j| j | (8 << 4)));
    let w = BlockMatrix::from_ggml(BlockFormat::Q4_0, 1, 32, &q40)
        .unwrap()
        .dequantize();
    for j in 0..16 {
        assert_eq!(w[j], 2.0 * (j as f32 - 8.0));
        assert_eq!(w[j + 16], 0.0);
    }
    // Q8_0: weight d·q, q signed.
    let mut q80 = Vec::new();
    q80.extend(0x3c00u16.to_le_bytes()); // d = 1
    q80.extend((0..32i8).map(|j| (j - 16) as u8));
    let w = BlockMatrix::from_ggml(BlockFormat::Q8_0, 1, 32, &q80)
        .unwrap()
        .dequantize();
    for (j, wj) in w.iter().enumerate() {
        assert_eq!(*wj, j as f32 - 16.0);
    }
}

#[test]
fn row_permutation_moves_whole_rows() {
    let mut rng = Lcg(3);
    for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
        let data = random_blocks(format, 4, 64, &mut rng);
        let m = BlockMatrix::from_ggml(format, 4, 64, &data).unwrap();
        let p = m.permute_rows(&[2, 0, 3, 1]).unwrap();
        let (a, b) = (m.dequantize(), p.dequantize());
        for (i, r) in [2usize, 0, 3, 1].into_iter().enumerate() {
            assert_eq!(&b[i * 64..(i + 1) * 64], &a[r * 64..(r + 1) * 64]);
        }
        assert!(m.permute_rows(&[0, 1, 2]).is_err());
        assert!(m.permute_rows(&[0, 1, 2, 4]).is_err());
    }
}

#[test]
fn bad_block_data_is_an_error() {
    assert!(BlockMatrix::from_ggml(BlockFormat::Q8_0, 2, 32, &[0u8; 67]).is_err());
    assert!(BlockMatrix::from_ggml(BlockFormat::Q4_1, 1, 48, &[0u8; 30]).is_err());
}

#[test]
fn block_linear_takes_one_row_only() {
    let mut rng = Lcg(11);
    let data = random_blocks(BlockFormat::Q8_0, 8, 64, &mut rng);
    let m = BlockMatrix::from_ggml(BlockFormat::Q8_0, 8, 64, &data).unwrap();
    let dev = candle_core::Device::Cpu;
    let x = candle_core::Tensor::ones((1, 1, 64), candle_core::DType::F32, &dev).unwrap();
    let y = block_linear(&x, &m).unwrap();
    assert_eq!(y.dims(), &[1, 1, 8]);
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        m.matvec(&[1.0; 64])
    );
    let two = candle_core::Tensor::ones((2, 64), candle_core::DType::F32, &dev).unwrap();
    assert!(block_linear(&two, &m).is_err());
}

#[test]
fn q8_0_rounding_stays_within_half_a_step() {
    let mut rng = Lcg(5);
    let (rows, cols) = (7, 96);
    let mut values: Vec<f32> = (0..rows * cols).map(|_| rng.unit() * 0.3).collect();
    values[40..72].fill(0.0); // an all-zero block
    let m = BlockMatrix::quantize_q8_0(rows, cols, &values).unwrap();
    assert_eq!(m.format(), BlockFormat::Q8_0);
    let back = m.dequantize();
    for (b, (v, w)) in values.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
        let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
        for (x, y) in v.iter().zip(w) {
            assert!(
                (x - y).abs() <= amax / 254.0 * 1.0001,
                "block {b}: {x} -> {y}"
            );
        }
        // The largest weight of a block is exact up to the scale's rounding.
        let top = v.iter().position(|x| x.abs() == amax).unwrap();
        assert!((w[top] - v[top]).abs() <= amax * 1e-6, "block {b}");
    }
    assert!(back[40..72].iter().all(|&y| y == 0.0));
    assert!(BlockMatrix::quantize_q8_0(1, 32, &[f32::NAN; 32]).is_err());
    assert!(BlockMatrix::quantize_q8_0(1, 48, &[0.0; 48]).is_err());
    assert!(BlockMatrix::quantize_q8_0(2, 32, &[0.0; 32]).is_err());
}
