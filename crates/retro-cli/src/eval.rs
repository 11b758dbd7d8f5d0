//! `retro eval …`: validation perplexity.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use retro_data::ChunkDb;
use retro_db::Neighbors;
use retro_model::candle_core::Device;
use retro_model::retro_config::is_retro_checkpoint;
use retro_model::RetroWeights;
use retro_train::{perplexity, resolve_checkpoint, SampleSet, SampleShape, Split};
use std::path::PathBuf;

use crate::progress::bar;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Token perplexity on a DB split's samples, with their precomputed neighbours as in training
    /// (or none with --no-retrieval).
    Ppl(PplArgs),
}

#[derive(Args)]
pub struct PplArgs {
    /// A Retro checkpoint, or a training run directory (its latest checkpoint).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    db: PathBuf,
    /// train or valid.
    #[arg(long, default_value = "valid")]
    split: Split,
    /// Feed no neighbours (the Retro model as a plain GPT, i.e. gate 0).
    #[arg(long)]
    no_retrieval: bool,
    /// Tokens per sample [default: 512, or the model's context].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Evaluate only the first N samples (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Print {"ppl", "loss", "tokens", "samples"}.
    #[arg(long)]
    json: bool,
}

pub fn run(command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Ppl(a) => ppl(a),
    }
}

fn ppl(a: PplArgs) -> Result<()> {
    let device = Device::Cpu;
    let dir = resolve_checkpoint(&a.model)?;
    if !(dir.is_dir() && is_retro_checkpoint(&dir)) {
        anyhow::bail!(
            "{}: not a Retro checkpoint (make one with `retro model retrofit` or `retro train`)",
            dir.display()
        );
    }
    let weights = RetroWeights::load(&dir, &device)?;
    let model = weights.build()?;
    let cfg = &weights.config;
    let db = ChunkDb::open(&a.db)?;
    let neighbors = if a.no_retrieval {
        None
    } else {
        Some(Neighbors::open(&db).context("evaluation with retrieval needs the DB's neighbours")?)
    };
    let max = cfg.decoder.max_position_embeddings;
    let seq_len = a
        .seq_len
        .unwrap_or((512.min(max) / cfg.chunk_len) * cfg.chunk_len);
    let shape = SampleShape {
        seq_len,
        chunk_len: cfg.chunk_len,
        num_neighbors: cfg.num_neighbors,
        retrieved_len: cfg.retrieved_len,
    };
    let set = SampleSet::new(&db, neighbors.as_ref(), a.split, shape)?;
    if set.is_empty() {
        anyhow::bail!(
            "the DB {} has no {:?} sample of {seq_len} tokens",
            a.db.display(),
            a.split
        );
    }
    let total = if a.limit == 0 {
        set.len()
    } else {
        a.limit.min(set.len())
    };
    let progress = bar(total as u64, "eval");
    let p = perplexity(
        &model,
        &set,
        !a.no_retrieval,
        a.batch.max(1),
        a.limit,
        &device,
        &mut |done, _| progress.set_position(done as u64),
    )?;
    progress.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "perplexity {:.3} (loss {:.4} over {} tokens of {} samples)",
            p.ppl, p.loss, p.tokens, p.samples
        );
    }
    Ok(())
}
