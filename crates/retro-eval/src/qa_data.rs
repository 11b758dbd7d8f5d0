//! QA sets in the uniform schema of `shared/data/qa`: one JSON object per line (jsonl or jsonl.gz) with `id`,
//! `question`, `answers` (the first is the primary answer, the others aliases) and, for reading-comprehension sets,
//! the gold `context` (with its `title` when known).
//!
//! - BoolQ (task `boolq`): the gold label is `answers[0]` (`yes` / `no`, as in `boolq-dev`; `true` / `false` too) or,
//!   as in BoolQ's own files, `answer` (a JSON bool) with the context in `passage`; it becomes the answer `True` or
//!   `False`.
//! - QuAC and other dialogues (task `multiturn`): `history` lists the earlier turns `{"question", "answer"}`, oldest
//!   first; `question` is the turn to answer.

use anyhow::{anyhow, bail, Context, Result};
use retro_data::jsonl::open_text;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

use crate::qa_task::QaTask;
use crate::true_false::{parse_true_false, true_false_label};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaTurn {
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    pub id: String,
    pub question: String,
    pub answers: Vec<String>,
    pub context: Option<String>,
    pub title: Option<String>,
    /// The dialogue's earlier turns, oldest first (empty for single-question sets).
    pub history: Vec<QaTurn>,
}

/// A line as stored: the uniform schema, plus BoolQ's own `answer` / `passage`.
#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    id: String,
    question: String,
    #[serde(default)]
    answers: Option<Vec<String>>,
    #[serde(default)]
    answer: Option<bool>,
    #[serde(default, alias = "passage")]
    context: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    history: Vec<QaTurn>,
}

/// The first `limit` examples of `path` (all when `None`), read for `task`. A malformed line is an error naming the
/// file, the line and the field.
pub fn read_qa(path: &Path, limit: Option<usize>, task: QaTask) -> Result<Vec<QaExample>> {
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
        let row: Row = serde_json::from_str(&line).map_err(|e| {
            anyhow!(
                "{}: not a QA example ({{\"question\", \"answers\"}}): {e}",
                at()
            )
        })?;
        let answers = match (task, row.answers, row.answer) {
            (QaTask::Boolq, None, Some(label)) => vec![true_false_label(label).to_string()],
            (QaTask::Boolq, Some(answers), _) => {
                let Some(first) = answers.first() else {
                    bail!("{}: `answers` is empty", at());
                };
                match parse_true_false(first) {
                    Some(label) if first.split_whitespace().count() == 1 => {
                        vec![true_false_label(label).to_string()]
                    }
                    _ => bail!(
                        "{}: `answers`: {first:?} is not a True/False label (yes, no, true or false) for task boolq",
                        at()
                    ),
                }
            }
            (_, Some(answers), _) => answers,
            (_, None, _) => bail!("{}: no `answers`", at()),
        };
        if answers.is_empty() {
            bail!("{}: `answers` is empty", at());
        }
        out.push(QaExample {
            id: if row.id.is_empty() { at() } else { row.id },
            question: row.question,
            answers,
            context: row.context,
            title: row.title,
            history: row.history,
        });
    }
    Ok(out)
}
