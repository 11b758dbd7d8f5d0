//! The fused output head + masked cross-entropy: loss and both gradients equal the composed
//! version (`hidden·Wᵀ`, log_softmax, gather, mask, sum) in f64, for any rows per block; finite
//! differences; a frozen weight gets no gradient; evaluation (nothing tracked) gives the same loss.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, assert_fd, composed_nll, finite_diff, rand, targets_and_mask, var};

fn composed(hidden: &Tensor, weight: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    composed_nll(&hidden.broadcast_matmul(&weight.t()?)?, targets, mask)
}

fn f64_var(v: &Var) -> Result<Var> {
    Var::from_tensor(&v.as_tensor().to_dtype(DType::F64)?)
}

#[test]
fn equals_composed_for_any_block_size() -> Result<()> {
    for (i, &(b, n, dim, vocab, block)) in [
        (1usize, 1usize, 1usize, 1usize, None),
        (1, 3, 4, 7, Some(1)),
        (2, 5, 8, 11, Some(2)),
        (3, 9, 16, 257, Some(4)),
        (2, 64, 32, 1000, Some(7)),
        (2, 64, 32, 1000, None),
    ]
    .iter()
    .enumerate()
    {
        let seed = 17 * i as u64;
        let hidden = var(seed, &[b, n, dim], -1.5, 1.5)?;
        let weight = var(seed + 1, &[vocab, dim], -1.5, 1.5)?;
        let (targets, mask) = targets_and_mask(seed + 2, (b, n), vocab, true)?;
        let fused = match block {
            Some(rows) => retro_kernels::linear_masked_nll_sum_blocked(
                hidden.as_tensor(),
                weight.as_tensor(),
                &targets,
                &mask,
                rows,
            )?,
            None => retro_kernels::linear_masked_nll_sum(
                hidden.as_tensor(),
                weight.as_tensor(),
                &targets,
                &mask,
            )?,
        };
        let (h64, w64) = (f64_var(&hidden)?, f64_var(&weight)?);
        let slow = composed(
            h64.as_tensor(),
            w64.as_tensor(),
            &targets,
            &mask.to_dtype(DType::F64)?,
        )?;
        let what = format!("case {i} {:?}", (b, n, dim, vocab, block));
        assert_close(&what, &fused, &slow.to_dtype(DType::F32)?, 1e-5)?;
        // Divided by a count, as the trainer does, so the incoming gradient is not 1.
        let gf = (fused / 7.0)?.backward()?;
        let gs = (slow / 7.0)?.backward()?;
        for (name, v, v64) in [("dhidden", &hidden, &h64), ("dweight", &weight, &w64)] {
            let want = gs.get(v64).unwrap().to_dtype(DType::F32)?;
            assert_close(&format!("{what} {name}"), gf.get(v).unwrap(), &want, 1e-5)?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let hidden = rand(3, &[2, 3, 4], -1.0, 1.0)?;
    let weight = rand(4, &[6, 4], -1.0, 1.0)?;
    let (targets, mask) = targets_and_mask(5, (2, 3), 6, true)?;
    let loss = |h: &Tensor, w: &Tensor| -> Result<f32> {
        retro_kernels::linear_masked_nll_sum_blocked(h, w, &targets, &mask, 2)?.to_scalar::<f32>()
    };
    let (hv, wv) = (Var::from_tensor(&hidden)?, Var::from_tensor(&weight)?);
    let g = retro_kernels::linear_masked_nll_sum_blocked(
        hv.as_tensor(),
        wv.as_tensor(),
        &targets,
        &mask,
        2,
    )?
    .backward()?;
    let fd_h = finite_diff(&hidden, 1e-2, |h| loss(h, &weight))?;
    let fd_w = finite_diff(&weight, 1e-2, |w| loss(&hidden, w))?;
    assert_fd("dhidden", g.get(&hv).unwrap(), &fd_h, 2e-3)?;
    assert_fd("dweight", g.get(&wv).unwrap(), &fd_w, 2e-3)?;
    Ok(())
}

#[test]
fn frozen_weight_evaluation_and_all_masked() -> Result<()> {
    let hidden = var(8, &[2, 10, 8], -1.0, 1.0)?;
    let weight = rand(9, &[50, 8], -1.0, 1.0)?;
    let (targets, mask) = targets_and_mask(10, (2, 10), 50, true)?;
    // A frozen weight (a plain tensor): only the hidden states get a gradient.
    let fused = retro_kernels::linear_masked_nll_sum(hidden.as_tensor(), &weight, &targets, &mask)?;
    let slow = composed(hidden.as_tensor(), &weight, &targets, &mask)?;
    assert_close("loss", &fused, &slow, 1e-5)?;
    let (gf, gs) = (fused.backward()?, slow.backward()?);
    assert_close(
        "dhidden",
        gf.get(&hidden).unwrap(),
        gs.get(&hidden).unwrap(),
        1e-4,
    )?;
    // Evaluation: nothing tracks a gradient; the loss is the same.
    let eval = retro_kernels::linear_masked_nll_sum(
        &hidden.as_tensor().detach(),
        &weight,
        &targets,
        &mask,
    )?;
    assert_eq!(eval.to_scalar::<f32>()?, fused.to_scalar::<f32>()?);
    // Every row masked out: loss 0 and zero gradients, not garbage from unfilled buffers.
    let w = var(11, &[50, 8], -1.0, 1.0)?;
    let none = mask.zeros_like()?;
    let loss =
        retro_kernels::linear_masked_nll_sum(hidden.as_tensor(), w.as_tensor(), &targets, &none)?;
    assert_eq!(loss.to_scalar::<f32>()?, 0.0);
    let g = loss.backward()?;
    for t in [g.get(&hidden).unwrap(), g.get(&w).unwrap()] {
        assert_eq!(t.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    }
    Ok(())
}

#[test]
fn bad_shapes_and_targets_are_errors() -> Result<()> {
    let hidden = rand(1, &[1, 2, 4], -1.0, 1.0)?;
    let weight = rand(2, &[5, 4], -1.0, 1.0)?;
    let mask = Tensor::new(&[[1f32, 1.0]], &Device::Cpu)?;
    let first_line = |e: candle_core::Error| e.to_string().lines().next().unwrap_or("").to_string();
    let bad_target = Tensor::new(&[[1u32, 5]], &Device::Cpu)?;
    let err =
        retro_kernels::linear_masked_nll_sum(&hidden, &weight, &bad_target, &mask).unwrap_err();
    assert!(
        first_line(err).contains("target 5 out of range for vocabulary 5"),
        "wrong message"
    );
    let targets = Tensor::new(&[[1u32, 2]], &Device::Cpu)?;
    let narrow = rand(3, &[5, 3], -1.0, 1.0)?;
    let err = retro_kernels::linear_masked_nll_sum(&hidden, &narrow, &targets, &mask).unwrap_err();
    assert!(
        first_line(err).contains("do not fit the head's weight"),
        "wrong message"
    );
    Ok(())
}
