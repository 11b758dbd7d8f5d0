//! RoPE, both pairings: forward and gradient equal candle-nn's `rope_slow` / `rope_i_slow`
//! (the differentiable versions the model used); finite differences; bad shapes fail.

mod common;

use candle_core::{Result, Tensor, Var};
use common::{assert_close, assert_fd, finite_diff, rand, var};

fn tables(t: usize, half: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let ang = rand(seed, &[t, half], -3.0, 3.0)?;
    Ok((ang.cos()?, ang.sin()?))
}

fn composed(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    if interleaved {
        candle_nn::rotary_emb::rope_i_slow(x, cos, sin)
    } else {
        candle_nn::rotary_emb::rope_slow(x, cos, sin)
    }
}

#[test]
fn equals_composed_on_awkward_shapes() -> Result<()> {
    for interleaved in [false, true] {
        for (i, &(b, h, t, d)) in [
            (1usize, 1usize, 1usize, 2usize),
            (1, 1, 7, 6),
            (2, 3, 5, 8),
            (1, 9, 33, 64),
        ]
        .iter()
        .enumerate()
        {
            let seed = 17 * i as u64;
            let x = var(seed, &[b, h, t, d], -2.0, 2.0)?;
            let (cos, sin) = tables(t, d / 2, seed + 1)?;
            let r = rand(seed + 2, &[b, h, t, d], -1.0, 1.0)?;
            let fused = retro_kernels::rope(x.as_tensor(), &cos, &sin, interleaved)?;
            let slow = composed(x.as_tensor(), &cos, &sin, interleaved)?;
            assert_close("forward", &fused, &slow, 1e-5)?;
            let gf = (fused * &r)?.sum_all()?.backward()?;
            let gs = (slow * &r)?.sum_all()?.backward()?;
            assert_close("dx", gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5)?;
        }
    }
    Ok(())
}

#[test]
fn gradient_matches_finite_differences() -> Result<()> {
    for interleaved in [false, true] {
        let x = rand(1, &[1, 2, 3, 4], -2.0, 2.0)?;
        let (cos, sin) = tables(3, 2, 2)?;
        let r = rand(3, &[1, 2, 3, 4], -1.0, 1.0)?;
        let loss = |x: &Tensor| -> Result<f32> {
            (retro_kernels::rope(x, &cos, &sin, interleaved)? * &r)?
                .sum_all()?
                .to_scalar::<f32>()
        };
        let xv = Var::from_tensor(&x)?;
        let g = (retro_kernels::rope(xv.as_tensor(), &cos, &sin, interleaved)? * &r)?
            .sum_all()?
            .backward()?;
        assert_fd(
            "dx",
            g.get(&xv).unwrap(),
            &finite_diff(&x, 1e-2, loss)?,
            2e-3,
        )?;
    }
    Ok(())
}

#[test]
fn rejects_bad_shapes() -> Result<()> {
    let (cos, sin) = tables(3, 2, 2)?;
    assert!(retro_kernels::rope(&rand(1, &[1, 2, 4, 4], -1.0, 1.0)?, &cos, &sin, false).is_err());
    assert!(retro_kernels::rope(&rand(1, &[2, 3, 4], -1.0, 1.0)?, &cos, &sin, false).is_err());
    Ok(())
}
