//! A run directory and its checkpoints.
//!
//! ```text
//! RUN/run.json                 the resolved options (format "retro-run", version 1)
//! RUN/metrics.jsonl            one JSON line per step, and per validation
//! RUN/latest                   the name of the newest complete checkpoint
//! RUN/checkpoints/step-00000100/
//!     config.json, model.safetensors, tokenizer.json …   a Retro checkpoint (`--model` reads it)
//!     training/optimizer.safetensors   AdamW moments, NAME.exp_avg / NAME.exp_avg_sq
//!     training/state.json              step, data position, tokens, seed ("retro-train-state")
//! ```
//!
//! A checkpoint is written into `step-N.tmp/` and renamed when complete, then `latest` is replaced
//! atomically, so a `kill -9` at any moment leaves the previous checkpoint as `latest`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use retro_data::atomic_write::{write_atomic, write_json_atomic};
use retro_model::retro_weights::write_tokenizer_files;
use retro_model::RetroWeights;
use serde::{Deserialize, Serialize};

use crate::options::TrainOptions;

pub const RUN_FORMAT: &str = "retro-run";
pub const STATE_FORMAT: &str = "retro-train-state";
pub const FORMAT_VERSION: u32 = 1;
pub const RUN_FILE: &str = "run.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LATEST_FILE: &str = "latest";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Kept apart from the model files, so that the checkpoint is a plain model directory.
pub const TRAINING_DIR: &str = "training";
pub const OPTIMIZER_FILE: &str = "training/optimizer.safetensors";
pub const STATE_FILE: &str = "training/state.json";

/// RUN/run.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: String,
    pub version: u32,
    pub options: TrainOptions,
}

/// Where training stands; saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format: String,
    pub version: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// Samples consumed: the data position the next step reads from.
    pub position: u64,
    /// Loss-bearing tokens trained on.
    pub tokens: u64,
    /// Wall time of the run so far (all sessions).
    pub elapsed_s: f64,
    /// The seed of the sample order (the only randomness after initialisation).
    pub seed: u64,
}

impl TrainState {
    pub fn new(seed: u64) -> Self {
        Self {
            format: STATE_FORMAT.into(),
            version: FORMAT_VERSION,
            step: 0,
            position: 0,
            tokens: 0,
            elapsed_s: 0.0,
            seed,
        }
    }
}

/// Reads RUN/run.json.
pub fn read_run_record(run: &Path) -> Result<RunRecord> {
    let path = run.join(RUN_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: missing; is {} a training run directory?",
            path.display(),
            run.display()
        )
    })?;
    let record: RunRecord = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a retro run record", path.display()))?;
    check_format(&path, &record.format, record.version, RUN_FORMAT)?;
    Ok(record)
}

pub fn write_run_record(run: &Path, options: &TrainOptions) -> Result<()> {
    std::fs::create_dir_all(run)
        .with_context(|| format!("{}: cannot create the run directory", run.display()))?;
    write_json_atomic(
        &run.join(RUN_FILE),
        &RunRecord {
            format: RUN_FORMAT.into(),
            version: FORMAT_VERSION,
            options: options.clone(),
        },
    )
}

/// The newest complete checkpoint of a run, if any.
pub fn latest_checkpoint(run: &Path) -> Result<Option<PathBuf>> {
    let latest = run.join(LATEST_FILE);
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest)
        .with_context(|| format!("{}: cannot read", latest.display()))?;
    let dir = run.join(CHECKPOINTS_DIR).join(name.trim());
    if !dir.is_dir() {
        bail!(
            "{}: names {}, which does not exist",
            latest.display(),
            dir.display()
        );
    }
    Ok(Some(dir))
}

/// A model path as given to `--model`: a run directory stands for its latest checkpoint.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.is_dir() && path.join(RUN_FILE).is_file() {
        return latest_checkpoint(path)?
            .with_context(|| format!("the run {} has no checkpoint yet", path.display()));
    }
    Ok(path.to_path_buf())
}

/// Everything a checkpoint holds besides the run's options.
pub struct Checkpoint<'a> {
    pub weights: &'a RetroWeights,
    pub optimizer: HashMap<String, Tensor>,
    pub state: &'a TrainState,
    /// The tokenizer files to write beside the weights
    /// ([`retro_model::retro_weights::read_tokenizer_files`]).
    pub tokenizer_files: &'a [(String, Vec<u8>)],
}

/// Writes checkpoint `step-N` atomically, points `latest` at it and keeps the newest `keep`.
pub fn save_checkpoint(run: &Path, ckpt: &Checkpoint, keep: usize) -> Result<PathBuf> {
    let dir = run.join(CHECKPOINTS_DIR);
    let name = format!("step-{:08}", ckpt.state.step);
    let final_dir = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| {
            format!(
                "{}: cannot remove a stale partial checkpoint",
                tmp.display()
            )
        })?;
    }
    ckpt.weights.save(&tmp)?;
    write_tokenizer_files(ckpt.tokenizer_files, &tmp)?;
    std::fs::create_dir_all(tmp.join(TRAINING_DIR))
        .with_context(|| format!("{}: cannot create", tmp.display()))?;
    let opt_path = tmp.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&ckpt.optimizer, &opt_path)
        .with_context(|| format!("{}: cannot write", opt_path.display()))?;
    write_json_atomic(&tmp.join(STATE_FILE), ckpt.state)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("{}: cannot replace", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("{}: cannot rename into place", final_dir.display()))?;
    write_atomic(&run.join(LATEST_FILE), format!("{name}\n").as_bytes())?;
    prune_checkpoints(&dir, keep)?;
    Ok(final_dir)
}

/// Removes all but the newest `keep` complete checkpoints, and partial ones.
fn prune_checkpoints(dir: &Path, keep: usize) -> Result<()> {
    let mut complete = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("step-") {
            continue;
        }
        if name.ends_with(".tmp") {
            std::fs::remove_dir_all(&path).ok();
        } else {
            complete.push(path);
        }
    }
    complete.sort();
    let excess = complete.len().saturating_sub(keep);
    for old in &complete[..excess] {
        std::fs::remove_dir_all(old)
            .with_context(|| format!("{}: cannot remove an old checkpoint", old.display()))?;
    }
    Ok(())
}

/// Reads a checkpoint's training state and optimizer moments.
pub fn load_training_state(
    ckpt: &Path,
    device: &Device,
) -> Result<(TrainState, HashMap<String, Tensor>)> {
    let state_path = ckpt.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).with_context(|| {
        format!(
            "{}: missing; not a training checkpoint",
            state_path.display()
        )
    })?;
    let state: TrainState = serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt training state", state_path.display()))?;
    check_format(&state_path, &state.format, state.version, STATE_FORMAT)?;
    let opt_path = ckpt.join(OPTIMIZER_FILE);
    let optimizer = candle_core::safetensors::load(&opt_path, device)
        .with_context(|| format!("{}: cannot read the optimizer state", opt_path.display()))?;
    Ok((state, optimizer))
}

/// Fails unless a file of ours declares `expected` at this build's [`FORMAT_VERSION`].
fn check_format(path: &Path, format: &str, version: u32, expected: &str) -> Result<()> {
    if format != expected || version != FORMAT_VERSION {
        bail!(
            "{}: format {format:?} version {version}, this build reads {expected:?} version {FORMAT_VERSION}",
            path.display()
        );
    }
    Ok(())
}
