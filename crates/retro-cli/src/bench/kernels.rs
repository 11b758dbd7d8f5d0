//! `retro bench kernels`: each fused kernel of `retro_kernels` against candle's composed version
//! of the same function, forward + backward (loss = sum of the output), median of `--repeats` runs
//! after one warm-up. AdamW: one in-place step against the composed formula.

use std::time::Instant;

use anyhow::Result;
use retro_model::candle_core::{self as candle_core, DType, Device, Tensor, Var, D};

use super::KernelsBench;

fn median_ms(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn rand(shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    Ok(Tensor::rand(lo, hi, shape, &Device::Cpu)?)
}

/// Forward + backward of `f` on variables `xs`, loss = sum of the output.
fn fb(xs: &[&Var], f: &dyn Fn(&[&Tensor]) -> candle_core::Result<Tensor>) -> Result<()> {
    let ts: Vec<&Tensor> = xs.iter().map(|v| v.as_tensor()).collect();
    let y = f(&ts)?;
    let g = y.sum_all()?.backward()?;
    for v in xs {
        anyhow::ensure!(g.get(v.as_tensor()).is_some(), "no gradient");
    }
    Ok(())
}

pub fn run(a: KernelsBench) -> Result<()> {
    let r = a.repeats;
    let mut rows: Vec<(String, f64, f64)> = Vec::new();

    let x = Var::from_tensor(&rand(&[a.tokens, a.hidden], -2.0, 2.0)?)?;
    let w = Var::from_tensor(&rand(&[a.hidden], 0.5, 1.5)?)?;
    let fused = median_ms(r, || {
        fb(&[&x, &w], &|t| retro_kernels::rms_norm(t[0], t[1], 1e-5))
    })?;
    let composed = median_ms(r, || {
        fb(&[&x, &w], &|t| {
            candle_nn::ops::rms_norm_slow(t[0], t[1], 1e-5)
        })
    })?;
    rows.push((
        format!("rmsnorm_fb_{}x{}", a.tokens, a.hidden),
        fused,
        composed,
    ));

    let ga = Var::from_tensor(&rand(&[a.tokens, a.intermediate], -4.0, 4.0)?)?;
    let up = Var::from_tensor(&rand(&[a.tokens, a.intermediate], -2.0, 2.0)?)?;
    let fused = median_ms(r, || {
        fb(&[&ga, &up], &|t| retro_kernels::swiglu(t[0], t[1]))
    })?;
    let composed = median_ms(r, || {
        fb(&[&ga, &up], &|t| candle_nn::ops::silu(t[0])? * t[1])
    })?;
    rows.push((
        format!("swiglu_fb_{}x{}", a.tokens, a.intermediate),
        fused,
        composed,
    ));

    // The MLP's up projection: (tokens, hidden) · (intermediate, hidden)ᵀ.
    let lx = Var::from_tensor(&rand(&[a.tokens, a.hidden], -1.0, 1.0)?)?;
    let lw = Var::from_tensor(&rand(&[a.intermediate, a.hidden], -0.1, 0.1)?)?;
    let fused = median_ms(r, || {
        fb(&[&lx, &lw], &|t| retro_kernels::linear(t[0], t[1]))
    })?;
    let composed = median_ms(r, || {
        fb(&[&lx, &lw], &|t| {
            candle_nn::Module::forward(&candle_nn::Linear::new(t[1].clone(), None), t[0])
        })
    })?;
    rows.push((
        format!("linear_fb_{}x{}x{}", a.tokens, a.hidden, a.intermediate),
        fused,
        composed,
    ));

    // SmolLM2's causal self-attention: 9 query heads over 3 kv heads of 64, `t` tokens.
    let (heads, kv_heads, hd) = (9, 3, 64);
    let aq = Var::from_tensor(&rand(&[1, heads, a.t, hd], -1.0, 1.0)?)?;
    let ak = Var::from_tensor(&rand(&[1, kv_heads, a.t, hd], -1.0, 1.0)?)?;
    let av = Var::from_tensor(&rand(&[1, kv_heads, a.t, hd], -1.0, 1.0)?)?;
    let causal: Vec<f32> = (0..a.t * a.t)
        .map(|i| {
            if i % a.t > i / a.t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let causal = Tensor::from_vec(causal, (a.t, a.t), &Device::Cpu)?;
    let fused = median_ms(r, || {
        fb(&[&aq, &ak, &av], &|x| {
            retro_kernels::attention(x[0], x[1], x[2], true)
        })
    })?;
    let composed = median_ms(r, || {
        fb(&[&aq, &ak, &av], &|x| {
            // The grouped-query composition of retro_model's attention with RETRO_FUSED=0.
            let rep = heads / kv_heads;
            let q = (x[0] * (1.0 / (hd as f64).sqrt()))?.reshape((1, kv_heads, rep * a.t, hd))?;
            let scores = q
                .matmul(&x[1].t()?)?
                .reshape((1, kv_heads, rep, a.t, a.t))?;
            let probs = candle_nn::ops::softmax(&scores.broadcast_add(&causal)?, D::Minus1)?;
            probs
                .reshape((1, kv_heads, rep * a.t, a.t))?
                .matmul(x[2])?
                .reshape((1, heads, a.t, hd))
        })
    })?;
    rows.push((
        format!("attention_causal_fb_{heads}x{kv_heads}x{}x{hd}", a.t),
        fused,
        composed,
    ));

    let mask = causal;
    let s = Var::from_tensor(&rand(&[a.heads, a.t, a.t], -4.0, 4.0)?)?;
    let fused = median_ms(r, || {
        fb(&[&s], &|t| {
            retro_kernels::softmax_last_dim(&t[0].broadcast_add(&mask)?)
        })
    })?;
    let composed = median_ms(r, || {
        fb(&[&s], &|t| {
            candle_nn::ops::softmax(&t[0].broadcast_add(&mask)?, D::Minus1)
        })
    })?;
    rows.push((
        format!("softmax_causal_fb_{}x{}x{}", a.heads, a.t, a.t),
        fused,
        composed,
    ));

    let logits = Var::from_tensor(&rand(&[a.ce_rows, a.vocab], -4.0, 4.0)?)?;
    let targets = Tensor::arange(0u32, a.ce_rows as u32, &Device::Cpu)?;
    let targets = (targets * 7919.0)?.to_dtype(DType::F32)?;
    let targets = (&targets - ((&targets / a.vocab as f64)?.floor()? * a.vocab as f64)?)?
        .to_dtype(DType::U32)?;
    let ones = Tensor::ones(a.ce_rows, DType::F32, &Device::Cpu)?;
    let fused = median_ms(r, || {
        fb(&[&logits], &|t| {
            retro_kernels::masked_nll_sum(t[0], &targets, &ones)
        })
    })?;
    let composed = median_ms(r, || {
        fb(&[&logits], &|t| {
            let lp = candle_nn::ops::log_softmax(t[0], D::Minus1)?;
            let picked = lp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
            (picked * &ones)?.sum_all()?.neg()
        })
    })?;
    rows.push((
        format!("cross_entropy_fb_{}x{}", a.ce_rows, a.vocab),
        fused,
        composed,
    ));

    let p = rand(&[a.adamw_params], -1.0, 1.0)?;
    let g = rand(&[a.adamw_params], -0.1, 0.1)?;
    let h = retro_kernels::AdamWHyper {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        bias_correction1: 0.1,
        bias_correction2: 0.05,
        decay_factor: 1.0 - 1e-5,
    };
    let (mut m, mut v) = (vec![0f32; a.adamw_params], vec![0f32; a.adamw_params]);
    let fused = median_ms(r, || {
        Ok(retro_kernels::adamw_update(&p, &g, &mut m, &mut v, h)?)
    })?;
    let pv = Var::from_tensor(&p)?;
    let (mut mc, mut vc) = (p.zeros_like()?, p.zeros_like()?);
    let composed = median_ms(r, || {
        mc = ((&mc * h.beta1)? + (&g * (1.0 - h.beta1))?)?;
        vc = ((&vc * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
        let upd = ((&mc / h.bias_correction1)? / ((&vc / h.bias_correction2)?.sqrt()? + h.eps)?)?;
        pv.set(&((pv.as_tensor() * h.decay_factor)? - (upd * h.lr)?)?)?;
        Ok(())
    })?;
    rows.push((format!("adamw_step_{}", a.adamw_params), fused, composed));

    for (op, fused, composed) in &rows {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"op": op, "fused_ms": fused, "composed_ms": composed, "repeats": r})
            );
        } else {
            println!(
                "{op:40} fused {fused:9.2} ms  composed {composed:9.2} ms  ({:.1}x)",
                composed / fused
            );
        }
    }
    Ok(())
}
