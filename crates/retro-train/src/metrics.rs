//! RUN/metrics.jsonl: one JSON line per optimizer step and one per validation, in step order.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use retro_data::atomic_write::write_atomic;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Loss-bearing tokens in this step.
    pub tokens: usize,
    pub tokens_per_s: f64,
    /// Seconds since the run started (all sessions).
    pub elapsed: f64,
    /// The process's peak resident memory so far, in MiB (Linux `VmHWM`; absent elsewhere and in
    /// runs written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub val_loss: f64,
    pub val_ppl: f64,
    pub val_tokens: usize,
}

/// Appends metric lines, flushing each one.
pub struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path` for appending after dropping every line past `keep_through_step` (the lines a
    /// killed run wrote after its last checkpoint, which the resumed run writes again).
    pub fn open(path: &Path, keep_through_step: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step")?.as_u64())
                        .is_some_and(|s| s <= keep_through_step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            write_atomic(path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open for appending", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record)? + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

/// The step lines of a metrics file (validation lines skipped).
pub fn read_step_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    read_lines(path, |v| v.get("loss").is_some())
}

/// The validation lines of a metrics file.
pub fn read_eval_metrics(path: &Path) -> Result<Vec<EvalMetrics>> {
    read_lines(path, |v| v.get("val_loss").is_some())
}

fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: malformed JSON", path.display(), i + 1))?;
        if keep(&v) {
            out.push(
                serde_json::from_value(v)
                    .with_context(|| format!("{}:{}: unexpected fields", path.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

/// The process's peak resident set size in MiB, from `/proc/self/status` (`VmHWM`); None where
/// that file does not exist.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
