//! One-pass AdamW: three steps equal the formula written with candle tensor ops (decay and no
//! decay), the moments are updated in place, and mismatched shapes fail.

mod common;

use candle_core::{Result, Tensor};
use common::{assert_close, rand};
use retro_kernels::{adamw_update, AdamWHyper};

fn hyper(t: i32, lr: f64, decay: bool) -> AdamWHyper {
    let (beta1, beta2, wd) = (0.9, 0.95, 0.1);
    AdamWHyper {
        lr,
        beta1,
        beta2,
        eps: 1e-8,
        bias_correction1: 1.0 - f64::powi(beta1, t),
        bias_correction2: 1.0 - f64::powi(beta2, t),
        decay_factor: if decay { 1.0 - lr * wd } else { 1.0 },
    }
}

#[test]
fn three_steps_equal_the_composed_formula() -> Result<()> {
    for (shape, decay) in [
        (&[1usize][..], false),
        (&[3, 5][..], true),
        (&[40_001][..], true),
    ] {
        let p = rand(1, shape, -1.0, 1.0)?.copy()?;
        let n = p.elem_count();
        let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
        let (mut pr, mut mr, mut vr) = (p.copy()?, p.zeros_like()?, p.zeros_like()?);
        for t in 1..=3 {
            let g = rand(10 + t as u64, shape, -0.5, 0.5)?;
            let h = hyper(t, 1e-2, decay);
            adamw_update(&p, &g, &mut m, &mut v, h)?;
            mr = ((&mr * h.beta1)? + (&g * (1.0 - h.beta1))?)?;
            vr = ((&vr * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
            let upd =
                ((&mr / h.bias_correction1)? / ((&vr / h.bias_correction2)?.sqrt()? + h.eps)?)?;
            pr = ((&pr * h.decay_factor)? - (upd * h.lr)?)?;
        }
        assert_close("m", &Tensor::from_slice(&m, shape, p.device())?, &mr, 1e-5)?;
        assert_close("v", &Tensor::from_slice(&v, shape, p.device())?, &vr, 1e-5)?;
        assert_close("param", &p, &pr, 1e-5)?;
    }
    Ok(())
}

#[test]
fn strided_gradient_and_mismatched_shapes() -> Result<()> {
    let p = rand(1, &[4, 3], -1.0, 1.0)?.copy()?;
    let (mut m, mut v) = (vec![0f32; 12], vec![0f32; 12]);
    let g = rand(2, &[3, 4], -1.0, 1.0)?.t()?; // (4, 3) view, not contiguous
    adamw_update(&p, &g, &mut m, &mut v, hyper(1, 1e-3, true))?;
    let m_tensor = Tensor::from_slice(&m, (4, 3), p.device())?;
    assert_close(
        "m after one step",
        &m_tensor,
        &(g.contiguous()? * 0.1)?,
        1e-6,
    )?;
    let wrong = Tensor::zeros(12, candle_core::DType::F32, p.device())?;
    let err = adamw_update(&p, &wrong, &mut m, &mut v, hyper(2, 1e-3, true)).unwrap_err();
    assert!(err.to_string().contains("gradient shape"), "{err}");
    let err = adamw_update(&p, &g, &mut m[..5], &mut v, hyper(2, 1e-3, true)).unwrap_err();
    assert!(err.to_string().contains("m has 5 elements"), "{err}");
    Ok(())
}
