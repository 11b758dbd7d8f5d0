//! SwiGLU `silu(a)·b`: forward and gradients equal candle's `silu(a) * b`; finite differences.

mod common;

use candle_core::{Result, Tensor, Var};
use common::{assert_close, assert_fd, finite_diff, rand, var};

fn composed(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(a)? * b
}

#[test]
fn equals_composed_on_awkward_shapes() -> Result<()> {
    for (i, shape) in [
        &[1usize][..],
        &[1, 1, 7],
        &[3, 5, 9],
        &[2, 100, 97],
        &[70_001],
    ]
    .iter()
    .enumerate()
    {
        let seed = 7 * i as u64;
        // Wide range: sigmoid saturates at both ends.
        let a = var(seed, shape, -30.0, 30.0)?;
        let b = var(seed + 1, shape, -2.0, 2.0)?;
        let r = rand(seed + 2, shape, -1.0, 1.0)?;
        let fused = retro_kernels::swiglu(a.as_tensor(), b.as_tensor())?;
        let slow = composed(a.as_tensor(), b.as_tensor())?;
        assert_close("forward", &fused, &slow, 1e-5)?;
        let gf = (fused * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        assert_close("da", gf.get(&a).unwrap(), gs.get(&a).unwrap(), 1e-5)?;
        assert_close("db", gf.get(&b).unwrap(), gs.get(&b).unwrap(), 1e-5)?;
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let a = rand(1, &[3, 7], -4.0, 4.0)?;
    let b = rand(2, &[3, 7], -2.0, 2.0)?;
    let r = rand(3, &[3, 7], -1.0, 1.0)?;
    let loss = |a: &Tensor, b: &Tensor| -> Result<f32> {
        (retro_kernels::swiglu(a, b)? * &r)?
            .sum_all()?
            .to_scalar::<f32>()
    };
    let (av, bv) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
    let g = (retro_kernels::swiglu(av.as_tensor(), bv.as_tensor())? * &r)?
        .sum_all()?
        .backward()?;
    assert_fd(
        "da",
        g.get(&av).unwrap(),
        &finite_diff(&a, 1e-2, |a| loss(a, &b))?,
        2e-3,
    )?;
    assert_fd(
        "db",
        g.get(&bv).unwrap(),
        &finite_diff(&b, 1e-2, |b| loss(&a, b))?,
        2e-3,
    )?;
    Ok(())
}

#[test]
fn rejects_different_shapes() -> Result<()> {
    let a = rand(1, &[2, 3], -1.0, 1.0)?;
    let b = rand(2, &[3, 2], -1.0, 1.0)?;
    assert!(retro_kernels::swiglu(&a, &b).is_err());
    Ok(())
}
