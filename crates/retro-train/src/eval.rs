//! Token perplexity on a split's samples: exp of the mean cross-entropy over every loss-bearing
//! token, with the samples' neighbours as in training (or none).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use retro_data::ChunkDb;
use retro_db::Neighbors;
use retro_model::retro_config::is_retro_checkpoint;
use retro_model::{RetroModel, RetroWeights};
use serde::Serialize;

use crate::checkpoint::resolve_checkpoint;
use crate::loss::head_nll_sum;
use crate::options::resolve_seq_len;
use crate::samples::{SampleSet, SampleShape, Split};
use crate::source::SampleSource;
use crate::tokenizer_check::check_tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    /// Mean cross-entropy per token (nats).
    pub loss: f64,
    pub tokens: usize,
    pub samples: usize,
}

/// Perplexity over the first `limit` samples of `set` (all when `limit` is 0 or larger), in
/// batches of `batch`, with the set's neighbours if it has them; `on_batch(done, total)` reports
/// progress.
pub fn perplexity(
    model: &RetroModel,
    set: &dyn SampleSource,
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
        let indices: Vec<usize> = (done..done + take).collect();
        let b = set.batch(&indices, device)?;
        // Detached: nothing here needs a gradient, and the fused head computes none for it.
        let hidden = model
            .forward_hidden(&b.inputs, b.neighbors.as_ref())?
            .detach();
        let head = model.decoder().lm_head();
        nll += head_nll_sum(&hidden, head, &b.targets, &b.loss_mask)?.to_scalar::<f32>()? as f64;
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

/// What `retro eval ppl` evaluates.
#[derive(Debug, Clone)]
pub struct PplOptions {
    /// A Retro checkpoint, or a run directory (its latest checkpoint).
    pub model: PathBuf,
    pub db: PathBuf,
    pub split: Split,
    /// Feed the samples' precomputed neighbours (false: none, i.e. gate 0).
    pub retrieval: bool,
    /// None: 512 tokens or the model's context.
    pub seq_len: Option<usize>,
    pub batch: usize,
    /// First N samples only; 0 = all.
    pub limit: usize,
}

/// Perplexity of a checkpoint on a DB split, with neighbours as in training.
pub fn checkpoint_perplexity(
    o: &PplOptions,
    device: &Device,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    let dir = resolve_checkpoint(&o.model)?;
    if !(dir.is_dir() && is_retro_checkpoint(&dir)) {
        bail!(
            "{}: not a Retro checkpoint (make one with `retro model retrofit` or `retro train`)",
            dir.display()
        );
    }
    let weights = RetroWeights::load(&dir, device)?;
    let model = weights.build()?;
    let cfg = &weights.config;
    let db = ChunkDb::open(&o.db)?;
    // Checkpoints written late in a resumed run by older versions have no tokenizer: check the vocabulary only.
    let tokenizer_dir = dir
        .join("tokenizer.json")
        .is_file()
        .then_some(dir.as_path());
    check_tokenizer(tokenizer_dir, &db, &weights)?;
    let neighbors = if o.retrieval {
        Some(Neighbors::open(&db).context("evaluation with retrieval needs the DB's neighbours")?)
    } else {
        None
    };
    let seq_len = resolve_seq_len(
        o.seq_len,
        cfg.chunk_len,
        cfg.decoder.max_position_embeddings,
    )?;
    let shape = SampleShape::for_model(cfg, seq_len);
    let set = SampleSet::new(&db, neighbors.as_ref(), o.split, shape)?;
    if set.is_empty() {
        bail!(
            "the DB {} has no {:?} sample of {seq_len} tokens",
            o.db.display(),
            o.split
        );
    }
    perplexity(&model, &set, o.batch.max(1), o.limit, device, on_batch)
}
