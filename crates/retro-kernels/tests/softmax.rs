//! Softmax over the last dimension: forward and gradient equal candle's differentiable
//! `softmax`, with causal `-inf` masks and one-element rows; finite differences.

mod common;

use candle_core::{Device, Result, Tensor, D};
use common::{assert_close, assert_fd, finite_diff, rand, var};

/// `(…, t, t)` additive causal mask: 0 on and below the diagonal, −∞ above.
fn causal(t: usize) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(m, (t, t), &Device::Cpu)
}

#[test]
fn equals_composed_on_attention_shapes() -> Result<()> {
    // (batch, heads, t, s): batch 1, one head, odd lengths, a one-column row.
    for (i, shape) in [
        &[1usize, 1, 1, 1][..],
        &[1, 1, 5, 5],
        &[2, 3, 9, 9],
        &[1, 2, 33, 33],
        &[4, 7, 1],
        &[3, 300],
    ]
    .iter()
    .enumerate()
    {
        let seed = 11 * i as u64;
        let x = var(seed, shape, -8.0, 8.0)?;
        let r = rand(seed + 1, shape, -1.0, 1.0)?;
        let n = shape.len();
        let masked = if n == 4 && shape[2] == shape[3] {
            x.as_tensor().broadcast_add(&causal(shape[3])?)?
        } else {
            x.as_tensor().clone()
        };
        let fused = retro_kernels::softmax_last_dim(&masked)?;
        let slow = candle_nn::ops::softmax(&masked, D::Minus1)?;
        assert_close("forward", &fused, &slow, 1e-5)?;
        let gf = (fused * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        assert_close("dx", gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5)?;
    }
    Ok(())
}

#[test]
fn masked_entries_are_exactly_zero() -> Result<()> {
    let x = rand(3, &[1, 1, 4, 4], -1.0, 1.0)?.broadcast_add(&causal(4)?)?;
    let y = retro_kernels::softmax_last_dim(&x)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for (i, v) in y.iter().enumerate() {
        if i % 4 > i / 4 {
            assert_eq!(*v, 0.0, "element {i}");
        }
    }
    Ok(())
}

#[test]
fn gradient_matches_finite_differences() -> Result<()> {
    let x = rand(1, &[2, 3, 6], -3.0, 3.0)?;
    let r = rand(2, &[2, 3, 6], -1.0, 1.0)?;
    let loss = |x: &Tensor| -> Result<f32> {
        (retro_kernels::softmax_last_dim(x)? * &r)?
            .sum_all()?
            .to_scalar::<f32>()
    };
    let xv = candle_core::Var::from_tensor(&x)?;
    let g = (retro_kernels::softmax_last_dim(xv.as_tensor())? * &r)?
        .sum_all()?
        .backward()?;
    assert_fd(
        "dx",
        g.get(&xv).unwrap(),
        &finite_diff(&x, 1e-2, loss)?,
        2e-3,
    )?;
    Ok(())
}

#[test]
fn masked_equals_broadcast_add_then_softmax() -> Result<()> {
    // (batch, kv heads, rep, t, s) with a (t, s) mask, as the attention calls it; and t != s.
    for (i, shape) in [
        &[1usize, 1, 1, 1, 1][..],
        &[1, 3, 3, 9, 9],
        &[2, 1, 2, 5, 7],
    ]
    .iter()
    .enumerate()
    {
        let seed = 29 * i as u64;
        let n = shape.len();
        let (t, s) = (shape[n - 2], shape[n - 1]);
        let x = var(seed, shape, -6.0, 6.0)?;
        let mask: Vec<f32> = (0..t * s)
            .map(|k| {
                if k % s > k / s + (s - t) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu)?;
        let r = rand(seed + 1, shape, -1.0, 1.0)?;
        let fused = retro_kernels::masked_softmax_last_dim(x.as_tensor(), &mask)?;
        let slow = candle_nn::ops::softmax(&x.as_tensor().broadcast_add(&mask)?, D::Minus1)?;
        assert_close("forward", &fused, &slow, 1e-5)?;
        let gf = (fused * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        assert_close("dx", gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5)?;
    }
    let x = rand(1, &[2, 3, 4], -1.0, 1.0)?;
    assert!(retro_kernels::masked_softmax_last_dim(&x, &rand(2, &[4, 3], 0.0, 0.0)?).is_err());
    Ok(())
}
