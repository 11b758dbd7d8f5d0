//! Helpers shared by the kernel tests: seeded random tensors, tolerant comparison, and a central
//! finite-difference gradient.

#![allow(dead_code)]

use candle_core::{Device, Result, Tensor, Var, D};

/// Deterministic uniform values in `[lo, hi)` (64-bit LCG), so failures reproduce.
pub fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

pub fn rand(seed: u64, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(uniform(seed, n, lo, hi), shape, &Device::Cpu)
}

pub fn var(seed: u64, shape: &[usize], lo: f32, hi: f32) -> Result<Var> {
    Var::from_tensor(&rand(seed, shape, lo, hi)?)
}

/// Asserts `|got − want| ≤ tol · (|want| + mean |want|)` element-wise (relative, with the
/// tensor's mean magnitude as the floor so that values near zero do not demand exact equality).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) -> Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let g = got.flatten_all()?.to_vec1::<f32>()?;
    let w = want.flatten_all()?.to_vec1::<f32>()?;
    let mean = w.iter().map(|x| x.abs()).sum::<f32>() / w.len().max(1) as f32;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a - b).abs() <= tol * (b.abs() + mean);
        assert!(
            ok,
            "{what}: element {i}: got {a}, want {b} (mean |want| {mean})"
        );
    }
    Ok(())
}

/// `d f / d x[i]` by central differences (step `h`) for every element of `x`.
pub fn finite_diff(x: &Tensor, h: f32, f: impl Fn(&Tensor) -> Result<f32>) -> Result<Vec<f32>> {
    let base = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += h;
        let mut minus = base.clone();
        minus[i] -= h;
        let fp = f(&Tensor::from_vec(plus, x.shape(), x.device())?)?;
        let fm = f(&Tensor::from_vec(minus, x.shape(), x.device())?)?;
        out.push((fp - fm) / (2.0 * h));
    }
    Ok(out)
}

/// Asserts an analytic gradient matches finite differences to `tol` (absolute + relative).
pub fn assert_fd(what: &str, analytic: &Tensor, fd: &[f32], tol: f32) -> Result<()> {
    let a = analytic.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a.len(), fd.len());
    for (i, (x, y)) in a.iter().zip(fd).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: analytic {x}, finite difference {y}"
        );
    }
    Ok(())
}

/// The masked cross-entropy composed from candle ops, as retro-train computes it without the
/// fused kernels: `−Σ mask · log_softmax(logits)[target]`.
pub fn composed_nll(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let lp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = lp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    (picked * mask)?.sum_all()?.neg()
}

/// Seeded targets `(b, n)` u32 below `vocab`, and a mask `(b, n)` with about a third of the
/// positions out (the first always in); with `fractional`, about one in eight weighs 0.5.
pub fn targets_and_mask(
    seed: u64,
    (b, n): (usize, usize),
    vocab: usize,
    fractional: bool,
) -> Result<(Tensor, Tensor)> {
    let t: Vec<u32> = uniform(seed, b * n, 0.0, vocab as f32)
        .iter()
        .map(|&x| (x as u32).min(vocab as u32 - 1))
        .collect();
    let m: Vec<f32> = uniform(seed + 1, b * n, 0.0, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &u)| match u {
            _ if i == 0 => 1.0,
            u if u <= 0.33 => 0.0,
            u if fractional && u < 0.45 => 0.5,
            _ => 1.0,
        })
        .collect();
    Ok((
        Tensor::from_vec(t, (b, n), &Device::Cpu)?,
        Tensor::from_vec(m, (b, n), &Device::Cpu)?,
    ))
}
