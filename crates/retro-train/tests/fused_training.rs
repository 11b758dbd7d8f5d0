//! Issue 6: a few AdamW steps of a tiny Retro model give the same losses and weights with the
//! fused CPU kernels (RMSNorm, SwiGLU, softmax, cross-entropy, in-place AdamW) as with candle's
//! composed ops (`RETRO_FUSED=0`). One test in its own binary, because it sets the variable.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use retro_model::tiny::{random_ids, random_retro_weights, tiny_retro_config};
use retro_model::weights::named_vars;
use retro_train::adamw::{AdamW, AdamWConfig};
use retro_train::loss::masked_nll_sum;

const V: usize = 97;

/// Losses of `steps` updates from the same seeded model and data, and the final weights.
fn run(steps: usize) -> Result<(Vec<f32>, HashMap<String, Tensor>)> {
    let dev = Device::Cpu;
    let cfg = tiny_retro_config();
    let (model, varmap) = random_retro_weights(&cfg, 5, &dev)?.build_trainable()?;
    let params = named_vars(&varmap);
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    // Batch 2, 17 tokens (16 inputs = 4 chunks of 4), 2 neighbours of 8 tokens per chunk.
    let (b, n) = (2usize, 16usize);
    let mut losses = Vec::new();
    for step in 0..steps {
        let toks = random_ids(V, b * (n + 1), 40 + step as u64);
        let rows: Vec<&[u32]> = toks.chunks(n + 1).collect();
        let ids: Vec<u32> = rows.iter().flat_map(|r| r[..n].to_vec()).collect();
        let tgt: Vec<u32> = rows.iter().flat_map(|r| r[1..].to_vec()).collect();
        let mask: Vec<f32> = (0..b * n)
            .map(|i| if i % 5 == 3 { 0.0 } else { 1.0 })
            .collect();
        let count = mask.iter().sum::<f32>() as f64;
        let ids = Tensor::from_vec(ids, (b, n), &dev)?;
        let tgt = Tensor::from_vec(tgt, (b, n), &dev)?;
        let mask = Tensor::from_vec(mask, (b, n), &dev)?;
        let nb = Tensor::from_vec(
            random_ids(V, b * 4 * 2 * 8, 90 + step as u64),
            (b, 4, 2, 8),
            &dev,
        )?;
        let logits = model.forward(&ids, Some(&nb))?;
        let loss = (masked_nll_sum(&logits, &tgt, &mask)? / count)?;
        losses.push(loss.to_scalar::<f32>()?);
        opt.backward_step(&loss, 3e-3)?;
    }
    let weights = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    Ok((losses, weights))
}

#[test]
fn fused_and_composed_training_agree() -> Result<()> {
    std::env::set_var("RETRO_FUSED", "1");
    let (fused, wf) = run(6)?;
    std::env::set_var("RETRO_FUSED", "0");
    let (composed, wc) = run(6)?;
    std::env::remove_var("RETRO_FUSED");
    eprintln!("fused losses {fused:?}\ncomposed     {composed:?}");
    assert!(
        fused[5] < fused[0] - 0.05,
        "the loss should fall: {fused:?}"
    );
    for (a, b) in fused.iter().zip(&composed) {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "losses differ: fused {fused:?}, composed {composed:?}"
        );
    }
    let mut worst = (0f32, String::new());
    for (k, a) in &wf {
        let d = (a - &wc[k])?.abs()?.max_all()?.to_scalar::<f32>()?;
        if d > worst.0 {
            worst = (d, k.clone());
        }
    }
    // Six steps of lr 3e-3: weights move by about 2e-2; they agree far below that.
    assert!(
        worst.0 < 1e-4,
        "weights differ by {} in {}",
        worst.0,
        worst.1
    );
    Ok(())
}
