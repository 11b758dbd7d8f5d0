//! `retro train`: pretrain, retro-fit or GPT-fit a model on a retrieval DB, instruction-tune it on conversations, or
//! resume a run.

use anyhow::{bail, Result};
use clap::Args;
use indicatif::ProgressBar;
use retro_train::metrics::{EvalMetrics, StepMetrics};
use retro_train::{Observer, RunInfo, TrainOverrides};
use std::path::{Path, PathBuf};

use crate::progress::bar;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    options: TrainOverrides,
    /// A TOML file with any of the options above (keys with `_` for `-`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint (then --steps, --eval-every,
    /// --eval-samples, --save-every and --keep-checkpoints may change; nothing else).
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
    /// Print a JSON summary at the end.
    #[arg(long)]
    json: bool,
}

/// A progress bar over the steps, with the latest loss and validation.
struct ProgressObserver {
    bar: Option<ProgressBar>,
    last_val: Option<f64>,
}

impl Observer for ProgressObserver {
    fn started(&mut self, info: &RunInfo) {
        eprintln!(
            "training {} trainable parameters ({} frozen), {} train / {} valid samples of {} tokens, retrieval {}",
            info.trainable_params,
            info.frozen_params,
            info.train_samples,
            info.valid_samples,
            info.seq_len,
            if info.retrieval { "on" } else { "off" }
        );
        let b = bar(info.total_steps, "train");
        b.set_position(info.start_step);
        b.reset_eta();
        self.bar = Some(b);
    }

    fn step(&mut self, m: &StepMetrics) {
        if let Some(b) = &self.bar {
            let val = self
                .last_val
                .map(|v| format!(" val {v:.3}"))
                .unwrap_or_default();
            b.set_message(format!("loss {:.3}{val} lr {:.2e}", m.loss, m.lr));
            b.set_position(m.step);
        }
    }

    fn eval(&mut self, m: &EvalMetrics) {
        self.last_val = Some(m.val_loss);
    }

    fn checkpoint(&mut self, dir: &Path) {
        tracing::info!("checkpoint {}", dir.display());
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let from_file = match &a.config {
        Some(path) => TrainOverrides::from_toml_file(path)?,
        None => TrainOverrides::default(),
    };
    let given = from_file.overridden_by(a.options);
    let mut observer = ProgressObserver {
        bar: None,
        last_val: None,
    };
    let report = match &a.resume {
        Some(run_dir) => {
            if given.out.as_ref().is_some_and(|o| o != run_dir) {
                bail!("--resume {} with a different --out", run_dir.display());
            }
            retro_train::resume(run_dir, given, &mut observer)?
        }
        None => retro_train::train(given.resolve()?, &mut observer)?,
    };
    if let Some(b) = &observer.bar {
        b.finish();
    }
    let summary = serde_json::json!({
        "step": report.step,
        "loss": report.last_loss,
        "val_loss": report.last_eval.as_ref().map(|e| e.val_loss),
        "val_ppl": report.last_eval.as_ref().map(|e| e.val_ppl),
        "checkpoint": report.checkpoint.display().to_string(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "step {}: loss {}{}; checkpoint {}",
            report.step,
            report
                .last_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or_else(|| "-".into()),
            report
                .last_eval
                .map(|e| format!(", validation loss {:.4} (ppl {:.2})", e.val_loss, e.val_ppl))
                .unwrap_or_default(),
            report.checkpoint.display()
        );
    }
    Ok(())
}
