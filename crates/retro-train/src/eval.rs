//! Token perplexity on a split's samples: exp of the mean cross-entropy over every loss-bearing
//! token, with the samples' neighbours as in training (or none).

use anyhow::Result;
use candle_core::Device;
use retro_model::RetroModel;
use serde::Serialize;

use crate::batch::Batch;
use crate::loss::masked_nll_sum;
use crate::samples::SampleSet;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    /// Mean cross-entropy per token (nats).
    pub loss: f64,
    pub tokens: usize,
    pub samples: usize,
}

/// Perplexity over the first `limit` samples of `set` (all when `limit` is 0 or larger), in
/// batches of `batch`; `on_batch(done, total)` reports progress.
pub fn perplexity(
    model: &RetroModel,
    set: &SampleSet,
    retrieval: bool,
    batch: usize,
    limit: usize,
    device: &Device,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    let n = if limit == 0 {
        set.len()
    } else {
        limit.min(set.len())
    };
    let (mut nll, mut tokens) = (0f64, 0usize);
    let mut done = 0;
    while done < n {
        let take = batch.min(n - done);
        let samples: Vec<_> = (done..done + take).map(|i| set.get(i)).collect();
        let b = Batch::new(&samples, set.shape(), retrieval, device)?;
        let logits = model.forward(&b.inputs, b.neighbors.as_ref())?;
        nll += masked_nll_sum(&logits, &b.targets, &b.loss_mask)?.to_scalar::<f32>()? as f64;
        tokens += b.tokens;
        done += take;
        on_batch(done, n);
    }
    let loss = if tokens > 0 {
        nll / tokens as f64
    } else {
        f64::NAN
    };
    Ok(Perplexity {
        ppl: loss.exp(),
        loss,
        tokens,
        samples: n,
    })
}
