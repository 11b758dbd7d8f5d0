//! `retro bench train-step`: whole training steps of a Retro checkpoint (forward, masked
//! cross-entropy, backward, AdamW over every parameter) with the time of each phase, for
//! bench/train_step_vs_torch.py. The fused CPU kernels are used unless `RETRO_FUSED=0`. The
//! "loss" phase is the output head and the cross-entropy, and with the fused kernels it includes
//! their backward (computed with the forward, `retro_train::loss::head_nll_sum`); "forward" and
//! "backward" are the rest of the model.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};
use retro_model::candle_core::{Device, Tensor};
use retro_model::weights::named_vars;
use retro_model::{in_compute_pool, RetroWeights};
use retro_train::adamw::{AdamW, AdamWConfig};
use retro_train::loss::head_nll_sum;

use super::{seeded_inputs, TrainStepBench};

pub fn run(args: TrainStepBench) -> Result<()> {
    if args.seq < 2 || args.batch == 0 || args.steps == 0 {
        bail!("--seq must be at least 2, --batch and --steps at least 1");
    }
    let device = Device::Cpu;
    let start = Instant::now();
    let weights = RetroWeights::load(&args.model, &device)?;
    let cfg = weights.config.clone();
    let (model, varmap) = weights.build_trainable()?;
    drop(weights);
    let params = named_vars(&varmap);
    let n_params: usize = params.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    let load_s = start.elapsed().as_secs_f64();

    let (b, n) = (args.batch, args.seq);
    let l = n.div_ceil(cfg.chunk_len);
    let nb_shape = (l, cfg.num_neighbors, cfg.retrieved_len);
    let (ids, nb) = seeded_inputs(b, n, cfg.decoder.vocab_size, nb_shape, args.seed);
    // Position i predicts token i+1; the last position of each row has no target (mask 0).
    let targets: Vec<u32> = ids
        .chunks(n)
        .flat_map(|r| r[1..].iter().copied().chain([0]))
        .collect();
    let mask: Vec<f32> = (0..b * n)
        .map(|i| if i % n == n - 1 { 0.0 } else { 1.0 })
        .collect();
    let count = (b * (n - 1)) as f64;
    let ids = Tensor::from_vec(ids, (b, n), &device)?;
    let targets = Tensor::from_vec(targets, (b, n), &device)?;
    let mask = Tensor::from_vec(mask, (b, n), &device)?;
    let nb = Tensor::from_vec(nb, (b, l, nb_shape.1, nb_shape.2), &device)?;
    let neighbors = (!args.no_retrieval).then_some(&nb);

    let mut rows = Vec::new();
    let mut losses = Vec::new();
    // The steps run as one task of candle's rayon pool, as the training loop's do.
    in_compute_pool(&device, || -> Result<()> {
        for step in 0..args.warmup + args.steps {
            let t0 = Instant::now();
            let hidden = model.forward_hidden(&ids, neighbors)?;
            let t1 = Instant::now();
            let head = model.decoder().lm_head();
            let loss = (head_nll_sum(&hidden, head, &targets, &mask)? / count)?;
            losses.push(loss.to_scalar::<f32>()?);
            let t2 = Instant::now();
            let grads = loss.backward()?;
            let t3 = Instant::now();
            let map: HashMap<String, Tensor> = params
                .iter()
                .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), g.clone())))
                .collect();
            drop((hidden, loss, grads));
            opt.step(&map, args.lr)?;
            drop(map);
            let t4 = Instant::now();
            if step >= args.warmup {
                let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
                rows.push([ms(t0, t4), ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4)]);
            }
        }
        Ok(())
    })?;
    let best = rows
        .iter()
        .copied()
        .min_by(|a, b| a[0].total_cmp(&b[0]))
        .unwrap();
    let fused = retro_kernels::allowed_by_env();
    let report = serde_json::json!({
        "impl": if fused { "ours-fused" } else { "ours-composed" },
        "batch": b, "seq": n, "retrieval": !args.no_retrieval, "steps": args.steps, "warmup": args.warmup,
        "params": n_params, "tensors": params.len(), "load_s": load_s,
        "step_ms": rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        "best_ms": best[0], "best_forward_ms": best[1], "best_loss_ms": best[2],
        "best_backward_ms": best[3], "best_adamw_ms": best[4], "losses": losses,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{b} × {n} tokens, {} parameters: best step {:.0} ms (forward {:.0}, loss {:.0}, backward {:.0}, AdamW {:.0}); losses {losses:?}",
            n_params, best[0], best[1], best[2], best[3], best[4]
        );
    }
    Ok(())
}
