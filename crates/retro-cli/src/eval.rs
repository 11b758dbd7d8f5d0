//! `retro eval …`: validation perplexity.

use anyhow::Result;
use clap::{Args, Subcommand};
use retro_model::candle_core::Device;
use retro_train::{checkpoint_perplexity, PplOptions, Split};
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
    let options = PplOptions {
        model: a.model,
        db: a.db,
        split: a.split,
        retrieval: !a.no_retrieval,
        seq_len: a.seq_len,
        batch: a.batch,
        limit: a.limit,
    };
    let progress = bar(0, "eval");
    let p = checkpoint_perplexity(&options, &Device::Cpu, &mut |done, total| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
    })?;
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
