//! Linear `x·Wᵀ`: forward and gradients equal candle's `x.matmul(&w.t())`; finite differences;
//! no weight gradient for a frozen weight.

mod common;

use candle_core::{Module, Result, Tensor, Var};
use common::{assert_close, assert_fd, finite_diff, rand, var};

fn composed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    candle_nn::Linear::new(w.clone(), None).forward(x)
}

#[test]
fn equals_composed_on_awkward_shapes() -> Result<()> {
    // (input shape, out features): one row, one feature, 3-D and 4-D inputs, sizes that fit no
    // micro-kernel tile, and a SmolLM2 projection.
    for (i, (x_shape, out)) in [
        (&[1usize, 1][..], 1usize),
        (&[1, 1, 7], 3),
        (&[3, 5, 9], 17),
        (&[2, 3, 4, 33], 65),
        (&[1, 130, 576], 192),
    ]
    .iter()
    .enumerate()
    {
        let seed = 11 * i as u64;
        let inp = *x_shape.last().unwrap();
        let x = var(seed, x_shape, -1.0, 1.0)?;
        let w = var(seed + 1, &[*out, inp], -0.5, 0.5)?;
        let mut y_shape = x_shape.to_vec();
        *y_shape.last_mut().unwrap() = *out;
        let r = rand(seed + 2, &y_shape, -1.0, 1.0)?;
        let fused = retro_kernels::linear(x.as_tensor(), w.as_tensor())?;
        let slow = composed(x.as_tensor(), w.as_tensor())?;
        assert_eq!(fused.dims(), &y_shape[..]);
        assert_close("forward", &fused, &slow, 1e-5)?;
        let gf = (fused * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        assert_close("dx", gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5)?;
        let dw = gf.get(&w).unwrap();
        assert!(
            dw.is_contiguous(),
            "the weight gradient is written in its final layout"
        );
        assert_close("dw", dw, gs.get(&w).unwrap(), 1e-5)?;
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let x = rand(1, &[2, 3, 5], -1.0, 1.0)?;
    let w = rand(2, &[4, 5], -1.0, 1.0)?;
    let r = rand(3, &[2, 3, 4], -1.0, 1.0)?;
    let loss = |x: &Tensor, w: &Tensor| -> Result<f32> {
        (retro_kernels::linear(x, w)? * &r)?
            .sum_all()?
            .to_scalar::<f32>()
    };
    let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
    let g = (retro_kernels::linear(xv.as_tensor(), wv.as_tensor())? * &r)?
        .sum_all()?
        .backward()?;
    let fd_x = finite_diff(&x, 1e-2, |x| loss(x, &w))?;
    assert_fd("dx", g.get(&xv).unwrap(), &fd_x, 2e-3)?;
    let fd_w = finite_diff(&w, 1e-2, |w| loss(&x, w))?;
    assert_fd("dw", g.get(&wv).unwrap(), &fd_w, 2e-3)?;
    Ok(())
}

#[test]
fn a_frozen_weight_gets_no_gradient_and_the_input_still_does() -> Result<()> {
    let x = var(1, &[3, 6], -1.0, 1.0)?;
    let frozen = rand(2, &[4, 6], -1.0, 1.0)?;
    let g = retro_kernels::linear(x.as_tensor(), &frozen)?
        .sum_all()?
        .backward()?;
    assert!(g.get(&frozen).is_none());
    // d/dx Σ x·Wᵀ = column sums of W, for every row.
    let want = frozen.sum_keepdim(0)?.broadcast_as((3, 6))?;
    assert_close("dx", g.get(&x).unwrap(), &want.contiguous()?, 1e-6)
}

#[test]
fn rejects_mismatched_features() -> Result<()> {
    let x = rand(1, &[2, 3], -1.0, 1.0)?;
    let w = rand(2, &[4, 5], -1.0, 1.0)?;
    let err = retro_kernels::linear(&x, &w).unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
    Ok(())
}

/// One-row products (a decoding step) big enough to be split over threads by columns: equal to
/// candle's product for column counts that are no multiple of the split, and for a 3-d input.
#[test]
fn one_row_products_split_over_threads_equal_composed() -> Result<()> {
    for (k, n) in [(300usize, 1000usize), (576, 4099), (64, 1025)] {
        let x = rand(k as u64, &[1, k], -1.0, 1.0)?;
        let w = rand(n as u64, &[n, k], -1.0, 1.0)?;
        let fast = retro_kernels::linear(&x, &w)?;
        assert_close(&format!("1 x {k} by {n}"), &fast, &composed(&x, &w)?, 1e-5)?;
        let x3 = x.reshape((1, 1, k))?;
        let fast3 = retro_kernels::linear(&x3, &w)?;
        assert_eq!(fast3.dims(), &[1, 1, n]);
        assert_eq!(
            fast3.flatten_all()?.to_vec1::<f32>()?,
            fast.flatten_all()?.to_vec1::<f32>()?
        );
    }
    Ok(())
}
