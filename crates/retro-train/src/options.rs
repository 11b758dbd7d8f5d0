//! What a training run is told: [`TrainOverrides`] (every field optional, read from the command
//! line and from a TOML file with the same keys) resolved into [`TrainOptions`]. Command-line flags
//! override the file, the file overrides the defaults.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use retro_data::ChatTemplate;
use retro_model::Precision;
use serde::{Deserialize, Serialize};

use crate::sft::DataSpec;

/// What a run trains, and on what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new model from a config (`--model CONFIG.json`), with retrieval unless `--no-retrieval`.
    Pretrain,
    /// A Retro model from a `retro model retrofit` checkpoint, or straight from a GPT: every
    /// parameter trains (decoder unfrozen, reference §2) unless `--freeze-decoder`.
    Retrofit,
    /// The GPT-fit baseline: the same samples in the same order, no neighbours, decoder only.
    Gptfit,
    /// Instruction tuning on conversations (`--data`): loss on the last answer only, retrieval
    /// gated off, decoder only (reference §4).
    Sft,
}

/// How the new CCA output projections start (see `retro model retrofit --cca-init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CcaInitChoice {
    Random,
    Zero,
}

/// Every option of a run, each optional: the flags of `retro train` and the keys of its TOML file.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrainOverrides {
    /// pretrain | retrofit | gptfit | sft.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Starting weights: a Retro checkpoint or run directory, an HF directory, a GGUF (or a
    /// directory with one); for pretrain, a config.json (Retro or Llama).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The retrieval DB (chunks and, with retrieval, precomputed neighbours); not for sft.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// sft: conversations (jsonl / jsonl.gz) as FILE or FILE:WEIGHT, repeated to blend files by
    /// sampling weight.
    #[arg(long, value_name = "FILE[:WEIGHT]")]
    #[serde(default)]
    pub data: Vec<String>,
    /// sft: drop conversations whose `task` is TASK or a template of it (`TASK_...`); repeatable.
    #[arg(long, value_name = "TASK")]
    #[serde(default)]
    pub exclude_task: Vec<String>,
    /// sft: prompt template [default: chatml when the tokenizer has its tokens, else megatron].
    #[arg(long, value_enum)]
    pub template: Option<ChatTemplate>,
    /// The run directory: checkpoints, metrics.jsonl, run.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Optimizer steps [default: 1000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Samples per micro-batch [default: 4].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Tokens per sample, a multiple of the chunk length [default: 512, or the model's context].
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Peak learning rate [default: 1e-4].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate of the cosine decay [default: lr / 10].
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Linear warmup steps [default: 1% of steps, at least 1].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Step at which the cosine reaches min-lr [default: steps]; fixed at the start of a run so
    /// that a resumed run with more steps keeps the schedule it had.
    #[arg(long)]
    pub decay_steps: Option<u64>,
    /// Decoupled weight decay on matrices [default: 0.1].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip, 0 = off [default: 1.0].
    #[arg(long)]
    pub clip: Option<f64>,
    /// Seed of the sample order and of new weights [default: 1234].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validation loss every N steps, 0 = only at the end [default: 100].
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Validation samples per evaluation, 0 = all [default: 64].
    #[arg(long)]
    pub eval_samples: Option<usize>,
    /// Checkpoint every N steps (and at the end) [default: 100].
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Checkpoints kept on disk [default: 2].
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Train only the encoder and CCA (retrofit).
    #[arg(long)]
    #[serde(default)]
    pub freeze_decoder: bool,
    /// pretrain: train without neighbours (a plain GPT).
    #[arg(long)]
    #[serde(default)]
    pub no_retrieval: bool,
    /// retrofit: draw new encoder/CCA weights with this CCA output init, also when --model is
    /// already a Retro checkpoint [default for a GPT: random].
    #[arg(long, value_enum)]
    pub cca_init: Option<CcaInitChoice>,
    /// Std of new weights (Megatron's init_method_std) [default: 0.02].
    #[arg(long)]
    pub init_std: Option<f64>,
    /// pretrain / retrofit: rotary positions in the encoder's self-attention, so that the model can
    /// tell which neighbour token follows which. Not in the reference, whose encoder sees no
    /// positions (docs/deviations.md).
    #[arg(long)]
    #[serde(default)]
    pub encoder_rope: bool,
    /// Matrix products in f32, or in bf16 with weights, optimizer, norms and loss in f32 (for GPUs;
    /// on the CPU bf16 only rounds and is slower) [default: f32].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

/// A run's resolved options, saved in RUN/run.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub mode: Mode,
    pub model: PathBuf,
    /// The retrieval DB; None for sft.
    pub db: Option<PathBuf>,
    /// sft: the blend.
    #[serde(default)]
    pub data: Vec<DataSpec>,
    #[serde(default)]
    pub exclude_task: Vec<String>,
    /// sft: None = chosen from the tokenizer once it is loaded.
    #[serde(default)]
    pub template: Option<ChatTemplate>,
    pub out: PathBuf,
    pub steps: u64,
    pub batch: usize,
    pub grad_accum: usize,
    /// None = chosen from the model once it is loaded ([`TrainOptions::resolve_seq_len`]).
    pub seq_len: Option<usize>,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub decay_steps: u64,
    pub weight_decay: f64,
    pub clip: f64,
    pub seed: u64,
    pub eval_every: u64,
    pub eval_samples: usize,
    pub save_every: u64,
    pub keep_checkpoints: usize,
    pub freeze_decoder: bool,
    pub no_retrieval: bool,
    pub cca_init: Option<CcaInitChoice>,
    pub init_std: f64,
    /// Absent from the run.json of runs made before it existed, which had none.
    #[serde(default)]
    pub encoder_rope: bool,
    /// Absent from the run.json of runs made before it existed, which were f32.
    #[serde(default)]
    pub precision: Precision,
}

impl TrainOverrides {
    /// Reads a TOML file whose keys are the flags' long names with `_` for `-`.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines (it quotes the line); keep the first.
            let msg = e.to_string();
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                msg.lines().next().unwrap_or("invalid TOML")
            )
        })
    }

    /// `self` with every field that `over` sets replaced.
    pub fn overridden_by(self, over: TrainOverrides) -> Self {
        macro_rules! pick {
            ($($f:ident),*) => { Self { $($f: over.$f.or(self.$f),)*
                freeze_decoder: over.freeze_decoder || self.freeze_decoder,
                no_retrieval: over.no_retrieval || self.no_retrieval,
                encoder_rope: over.encoder_rope || self.encoder_rope,
                data: if over.data.is_empty() { self.data } else { over.data },
                exclude_task: if over.exclude_task.is_empty() { self.exclude_task } else { over.exclude_task },
            } };
        }
        pick!(
            mode,
            model,
            db,
            out,
            steps,
            batch,
            grad_accum,
            seq_len,
            lr,
            min_lr,
            warmup,
            decay_steps,
            weight_decay,
            clip,
            seed,
            eval_every,
            eval_samples,
            save_every,
            keep_checkpoints,
            cca_init,
            init_std,
            template,
            precision
        )
    }

    /// The full options, with defaults for what is not set; errors name the missing or bad field.
    pub fn resolve(self) -> Result<TrainOptions> {
        let need = |v: Option<PathBuf>, flag: &str| {
            v.with_context(|| format!("{flag} is required (or set it in the --config file)"))
        };
        let mode = self
            .mode
            .context("--mode is required: pretrain, retrofit, gptfit or sft")?;
        let steps = self.steps.unwrap_or(1000);
        let lr = self.lr.unwrap_or(1e-4);
        let o = TrainOptions {
            mode,
            model: need(self.model, "--model")?,
            db: match mode {
                Mode::Sft if self.db.is_some() => {
                    bail!("--db is not for --mode sft: instruction tuning reads --data")
                }
                Mode::Sft => None,
                _ => Some(need(self.db, "--db")?),
            },
            data: self.data.iter().map(|d| d.parse()).collect::<Result<_>>()?,
            exclude_task: self.exclude_task,
            template: self.template,
            out: need(self.out, "--out")?,
            steps,
            batch: self.batch.unwrap_or(4),
            grad_accum: self.grad_accum.unwrap_or(1),
            seq_len: self.seq_len,
            lr,
            min_lr: self.min_lr.unwrap_or(lr / 10.0),
            warmup: self.warmup.unwrap_or((steps / 100).max(1)),
            decay_steps: self.decay_steps.unwrap_or(steps),
            weight_decay: self.weight_decay.unwrap_or(0.1),
            clip: self.clip.unwrap_or(1.0),
            seed: self.seed.unwrap_or(1234),
            eval_every: self.eval_every.unwrap_or(100),
            eval_samples: self.eval_samples.unwrap_or(64),
            save_every: self.save_every.unwrap_or(100),
            keep_checkpoints: self.keep_checkpoints.unwrap_or(2),
            freeze_decoder: self.freeze_decoder,
            no_retrieval: self.no_retrieval,
            cca_init: self.cca_init,
            init_std: self.init_std.unwrap_or(0.02),
            encoder_rope: self.encoder_rope,
            precision: self.precision.unwrap_or_default(),
        };
        o.validate()?;
        Ok(o)
    }
}

impl TrainOptions {
    fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch == 0 || self.grad_accum == 0 {
            bail!("--steps, --batch and --grad-accum must be positive");
        }
        if self.save_every == 0 || self.keep_checkpoints == 0 {
            bail!("--save-every and --keep-checkpoints must be positive");
        }
        for (flag, v) in [
            ("--lr", self.lr),
            ("--min-lr", self.min_lr),
            ("--weight-decay", self.weight_decay),
            ("--clip", self.clip),
            ("--init-std", self.init_std),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{flag} must be a finite non-negative number, got {v}");
            }
        }
        if self.min_lr > self.lr {
            bail!("--min-lr {} is above --lr {}", self.min_lr, self.lr);
        }
        match self.mode {
            Mode::Gptfit if self.freeze_decoder => {
                bail!("--freeze-decoder with --mode gptfit leaves nothing to train")
            }
            Mode::Gptfit | Mode::Retrofit if self.no_retrieval => {
                bail!("--no-retrieval is for --mode pretrain (gptfit never retrieves)")
            }
            Mode::Pretrain | Mode::Gptfit if self.cca_init.is_some() => {
                bail!("--cca-init is for --mode retrofit")
            }
            Mode::Gptfit | Mode::Sft if self.encoder_rope => {
                bail!("--encoder-rope is for --mode pretrain and retrofit (it changes the model's encoder)")
            }
            _ => {}
        }
        match self.mode {
            Mode::Sft if self.data.is_empty() => {
                bail!("--mode sft needs at least one --data FILE[:WEIGHT]")
            }
            Mode::Sft if self.freeze_decoder || self.no_retrieval || self.cca_init.is_some() => {
                bail!("--freeze-decoder, --no-retrieval and --cca-init are not for --mode sft (it trains the decoder with retrieval gated off)")
            }
            Mode::Sft => {}
            _ if !self.data.is_empty()
                || !self.exclude_task.is_empty()
                || self.template.is_some() =>
            {
                bail!("--data, --exclude-task and --template are for --mode sft")
            }
            _ => {}
        }
        Ok(())
    }

    /// The DB a non-sft run reads.
    pub fn db_path(&self) -> Result<&Path> {
        self.db
            .as_deref()
            .with_context(|| format!("--mode {:?} needs --db", self.mode))
    }

    /// Whether samples carry neighbours.
    pub fn uses_retrieval(&self) -> bool {
        match self.mode {
            Mode::Pretrain => !self.no_retrieval,
            Mode::Retrofit => true,
            Mode::Gptfit | Mode::Sft => false,
        }
    }

    /// The sequence length for a model with chunks of `m` and context `max_positions`.
    pub fn resolve_seq_len(&self, m: usize, max_positions: usize) -> Result<usize> {
        resolve_seq_len(self.seq_len, m, max_positions)
    }

    /// Options a resumed run may change: the total steps, evaluation and checkpoint cadence.
    /// Anything else would make the resumed run a different run; this names the first such flag.
    pub fn check_resume_compatible(&self, given: &TrainOverrides) -> Result<()> {
        let differs = |name: &str, same: bool| -> Result<()> {
            if !same {
                bail!(
                    "cannot resume {} with a different {name} than it was started with (see its run.json)",
                    self.out.display()
                );
            }
            Ok(())
        };
        macro_rules! same {
            ($($f:ident => $flag:expr),*) => {
                $( if let Some(v) = &given.$f { differs($flag, *v == self.$f)?; } )*
            };
        }
        same!(mode => "--mode", model => "--model", batch => "--batch",
              grad_accum => "--grad-accum", lr => "--lr", min_lr => "--min-lr", warmup => "--warmup",
              decay_steps => "--decay-steps", weight_decay => "--weight-decay", clip => "--clip",
              seed => "--seed", init_std => "--init-std");
        if let Some(v) = &given.db {
            differs("--db", Some(v) == self.db.as_ref())?;
        }
        if !given.data.is_empty() {
            let data: Vec<DataSpec> = given
                .data
                .iter()
                .map(|d| d.parse())
                .collect::<Result<_>>()?;
            differs("--data", data == self.data)?;
        }
        if !given.exclude_task.is_empty() {
            differs("--exclude-task", given.exclude_task == self.exclude_task)?;
        }
        if let Some(v) = given.template {
            differs("--template", Some(v) == self.template)?;
        }
        if let Some(v) = given.seq_len {
            differs("--seq-len", Some(v) == self.seq_len)?;
        }
        if let Some(v) = given.precision {
            differs("--precision", v == self.precision)?;
        }
        if let Some(v) = given.cca_init {
            differs("--cca-init", Some(v) == self.cca_init)?;
        }
        differs(
            "--freeze-decoder",
            !given.freeze_decoder || self.freeze_decoder,
        )?;
        differs("--no-retrieval", !given.no_retrieval || self.no_retrieval)?;
        differs("--encoder-rope", !given.encoder_rope || self.encoder_rope)?;
        Ok(())
    }
}

/// `given`, checked, or the default: 512 tokens, or the model's context if shorter, in whole chunks
/// of `m`.
pub fn resolve_seq_len(given: Option<usize>, m: usize, max_positions: usize) -> Result<usize> {
    let n = given.unwrap_or((512.min(max_positions) / m) * m);
    if n == 0 || n % m != 0 {
        bail!("--seq-len {n} is not a positive multiple of the chunk length {m}");
    }
    if n > max_positions {
        bail!("--seq-len {n} exceeds the model context ({max_positions} positions)");
    }
    Ok(n)
}
