//! QA sets in the uniform schema of `shared/data/qa`: one JSON object per line (jsonl or jsonl.gz) with `id`,
//! `question`, `answers` (the first is the primary answer, the others aliases) and, for reading-comprehension sets,
//! the gold `context` (with its `title` when known).

use anyhow::{anyhow, bail, Context, Result};
use retro_data::jsonl::open_text;
use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QaExample {
    #[serde(default)]
    pub id: String,
    pub question: String,
    pub answers: Vec<String>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// The first `limit` examples of `path` (all when `None`). A malformed line is an error naming the file and line.
pub fn read_qa(path: &Path, limit: Option<usize>) -> Result<Vec<QaExample>> {
    let mut out = Vec::new();
    for (i, line) in open_text(path)?.lines().enumerate() {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.with_context(|| format!("{}: cannot read", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut example: QaExample = serde_json::from_str(&line).map_err(|e| {
            anyhow!(
                "{}: not a QA example ({{\"question\", \"answers\"}}): {e}",
                at()
            )
        })?;
        if example.answers.is_empty() {
            bail!("{}: `answers` is empty", at());
        }
        if example.id.is_empty() {
            example.id = at();
        }
        out.push(example);
    }
    Ok(out)
}
