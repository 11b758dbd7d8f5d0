//! RMSNorm: forward and both gradients equal candle's composed `rms_norm_slow`; finite differences.

mod common;

use candle_core::{Result, Tensor};
use common::{assert_close, assert_fd, finite_diff, rand, var};

const EPS: f64 = 1e-5;

fn check(shape: &[usize], seed: u64) -> Result<()> {
    let d = *shape.last().unwrap();
    let x = var(seed, shape, -2.0, 2.0)?;
    let w = var(seed + 1, &[d], 0.5, 1.5)?;
    let r = rand(seed + 2, shape, -1.0, 1.0)?;
    let fused = retro_kernels::rms_norm(x.as_tensor(), w.as_tensor(), EPS)?;
    let slow = candle_nn::ops::rms_norm_slow(x.as_tensor(), w.as_tensor(), EPS as f32)?;
    assert_close("forward", &fused, &slow, 1e-5)?;
    let gf = (fused * &r)?.sum_all()?.backward()?;
    let gs = (slow * &r)?.sum_all()?.backward()?;
    assert_close("dx", gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5)?;
    assert_close("dw", gf.get(&w).unwrap(), gs.get(&w).unwrap(), 1e-5)?;
    Ok(())
}

#[test]
fn equals_composed_on_awkward_shapes() -> Result<()> {
    // (d = 1 is left out: there y = sign(x)·w and dx is pure rounding noise in both versions.)
    for (i, shape) in [
        &[1usize, 1, 2][..],
        &[1, 1, 5],
        &[2, 3, 7],
        &[3, 17],
        &[2, 5, 130],
        &[4, 64, 96],
    ]
    .iter()
    .enumerate()
    {
        check(shape, 10 * i as u64)?;
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let x = rand(1, &[2, 3, 5], -2.0, 2.0)?;
    let w = rand(2, &[5], 0.5, 1.5)?;
    let r = rand(3, &[2, 3, 5], -1.0, 1.0)?;
    let loss = |x: &Tensor, w: &Tensor| -> Result<f32> {
        (retro_kernels::rms_norm(x, w, EPS)? * &r)?
            .sum_all()?
            .to_scalar::<f32>()
    };
    let xv = candle_core::Var::from_tensor(&x)?;
    let wv = candle_core::Var::from_tensor(&w)?;
    let g = (retro_kernels::rms_norm(xv.as_tensor(), wv.as_tensor(), EPS)? * &r)?
        .sum_all()?
        .backward()?;
    assert_fd(
        "dx",
        g.get(&xv).unwrap(),
        &finite_diff(&x, 1e-2, |x| loss(x, &w))?,
        2e-3,
    )?;
    assert_fd(
        "dw",
        g.get(&wv).unwrap(),
        &finite_diff(&w, 1e-2, |w| loss(&x, w))?,
        2e-3,
    )?;
    Ok(())
}

#[test]
fn non_contiguous_input_and_bad_shapes() -> Result<()> {
    let x = rand(4, &[6, 4], -1.0, 1.0)?;
    let w = rand(5, &[6], 0.5, 1.5)?;
    let xt = x.t()?; // (4, 6), strided
    let fused = retro_kernels::rms_norm(&xt, &w, EPS)?;
    let slow = candle_nn::ops::rms_norm_slow(&xt, &w, EPS as f32)?;
    assert_close("strided forward", &fused, &slow, 1e-5)?;
    let err = retro_kernels::rms_norm(&x, &w, EPS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rms-norm"), "{err}");
    Ok(())
}
