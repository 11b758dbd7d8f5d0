//! The machinery can use retrieval at all: on random tokens, which no decoder can predict, a tiny Retro model whose
//! neighbours hold each chunk's continuation (the m-1 shift lets chunk u's neighbours serve the tokens of chunk u+1,
//! reference §3.5) learns to copy it, and its loss falls far below ln(vocab); with neighbours of unrelated random
//! tokens it stays at ln(vocab). Issue 4's sanity check at unit scale
//! (experiments/retrofit/duplicates.sh is the same question at the experiment's scale).

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use retro_model::tiny::{random_ids, random_retro_weights, tiny_retro_config};
use retro_model::weights::named_vars;
use retro_train::adamw::{AdamW, AdamWConfig};
use retro_train::loss::masked_nll_sum;

const V: usize = 97;

/// Mean loss of the last `tail` of `steps` updates on fresh random sequences; `copy` gives each chunk's neighbours
/// its own tokens and continuation, else unrelated random tokens.
fn train(steps: usize, tail: usize, copy: bool) -> Result<f32> {
    let dev = Device::Cpu;
    let cfg = tiny_retro_config();
    let (m, k, r) = (cfg.chunk_len, cfg.num_neighbors, cfg.retrieved_len);
    let (model, varmap) = random_retro_weights(&cfg, 5, &dev)?.build_trainable()?;
    let params = named_vars(&varmap);
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    let (b, chunks) = (16usize, 4usize);
    let n = chunks * m;
    let mut losses = Vec::new();
    for step in 0..steps {
        // n + m tokens per row: the inputs, the target after the last input, and the last chunk's continuation.
        let toks = random_ids(V, b * (n + m), 1000 + step as u64);
        let rows: Vec<&[u32]> = toks.chunks(n + m).collect();
        let ids: Vec<u32> = rows.iter().flat_map(|row| row[..n].to_vec()).collect();
        let tgt: Vec<u32> = rows.iter().flat_map(|row| row[1..=n].to_vec()).collect();
        // The first m-1 positions precede any neighbour (the shift), so only the rest can copy.
        let mask: Vec<f32> = (0..b * n)
            .map(|i| if i % n >= m - 1 { 1.0 } else { 0.0 })
            .collect();
        let count = mask.iter().sum::<f32>() as f64;
        let mut nb = Vec::with_capacity(b * chunks * k * r);
        let unrelated = random_ids(V, b * chunks * k * r, 5000 + step as u64);
        for (i, row) in rows.iter().enumerate() {
            for c in 0..chunks {
                for slot in 0..k {
                    if copy {
                        nb.extend_from_slice(&row[c * m..c * m + r]);
                    } else {
                        let at = ((i * chunks + c) * k + slot) * r;
                        nb.extend_from_slice(&unrelated[at..at + r]);
                    }
                }
            }
        }
        let ids = Tensor::from_vec(ids, (b, n), &dev)?;
        let tgt = Tensor::from_vec(tgt, (b, n), &dev)?;
        let mask = Tensor::from_vec(mask, (b, n), &dev)?;
        let nb = Tensor::from_vec(nb, (b, chunks, k, r), &dev)?;
        let logits = model.forward(&ids, Some(&nb))?;
        let loss = (masked_nll_sum(&logits, &tgt, &mask)? / count)?;
        losses.push(loss.to_scalar::<f32>()?);
        let g = loss.backward()?;
        let grads: HashMap<String, Tensor> = params
            .iter()
            .filter_map(|(k, v)| g.get(v.as_tensor()).map(|t| (k.clone(), t.clone())))
            .collect();
        opt.step(&grads, 3e-3)?;
    }
    Ok(losses[steps - tail..].iter().sum::<f32>() / tail as f32)
}

#[test]
fn a_tiny_retro_learns_to_copy_the_continuation_from_its_neighbours() -> Result<()> {
    let chance = (V as f32).ln();
    let with_copies = train(400, 20, true)?;
    let unrelated = train(400, 20, false)?;
    eprintln!("ln V {chance}, copies {with_copies}, unrelated {unrelated}");
    assert!(
        unrelated > chance - 0.1,
        "random tokens cannot be predicted: {unrelated} vs {chance}"
    );
    // Measured: 2.47 after 400 steps and still falling (0.4 of the way from chance towards zero), so a nat below
    // chance leaves a wide margin while no model that ignores its neighbours can get there.
    assert!(
        with_copies < chance - 1.0,
        "retrieval was not used: {with_copies} vs {chance}"
    );
    Ok(())
}
