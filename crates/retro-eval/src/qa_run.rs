//! What an evaluation's output file was answered with, kept beside it (`OUT.run.json`), so that a rerun resumes only
//! the same evaluation: appending answers of another model, encoder setting, context count or prompt to the same file
//! would silently mix two runs in one score.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use retro_data::atomic_write::write_json_atomic;
use retro_data::ChatTemplate;
use serde::{Deserialize, Serialize};

use crate::qa::Encoder;
use crate::qa_task::QaTask;

pub const FORMAT: &str = "retro-qa-run";
pub const VERSION: u32 = 1;

/// The settings that decide an evaluation's answers (`--limit` is not one: a larger limit extends a run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaRun {
    pub format: String,
    pub version: u32,
    pub model: PathBuf,
    pub db: Option<PathBuf>,
    pub data: PathBuf,
    pub task: QaTask,
    pub contexts: usize,
    pub gold_context: bool,
    pub encoder: Encoder,
    pub template: ChatTemplate,
    pub max_new: usize,
}

impl QaRun {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &Path,
        db: Option<&Path>,
        data: &Path,
        task: QaTask,
        contexts: usize,
        gold_context: bool,
        encoder: Encoder,
        template: ChatTemplate,
        max_new: usize,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            model: canonical(model),
            db: db.map(canonical),
            data: canonical(data),
            task,
            contexts,
            gold_context,
            encoder,
            template,
            max_new,
        }
    }

    /// The record's path for the output file `out`.
    pub fn path_for(out: &Path) -> PathBuf {
        let mut name = out.as_os_str().to_owned();
        name.push(".run.json");
        PathBuf::from(name)
    }

    /// Checks the record of `out` against this run when `out` already holds answers (a record missing beside
    /// answers is from a version that wrote none, and is trusted), then writes this run's record.
    pub fn check_and_record(&self, out: &Path, has_answers: bool) -> Result<()> {
        let path = Self::path_for(out);
        if has_answers && path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let before: QaRun = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a QA run record", path.display()))?;
            if before.format != FORMAT || before.version != VERSION {
                bail!(
                    "{}: format {} version {}, expected {FORMAT} version {VERSION}",
                    path.display(),
                    before.format,
                    before.version
                );
            }
            if let Some(field) = self.first_difference(&before) {
                bail!(
                    "{}: answered with another {field} than this run ({}); use another --out to keep both",
                    out.display(),
                    path.display()
                );
            }
        }
        write_json_atomic(&path, self)
    }

    fn first_difference(&self, other: &QaRun) -> Option<&'static str> {
        [
            (self.model != other.model, "--model"),
            (self.db != other.db, "--db"),
            (self.data != other.data, "--data"),
            (self.task != other.task, "task"),
            (self.contexts != other.contexts, "--contexts"),
            (self.gold_context != other.gold_context, "--gold-context"),
            (self.encoder != other.encoder, "--encoder"),
            (self.template != other.template, "--template"),
            (self.max_new != other.max_new, "--max-new"),
        ]
        .into_iter()
        .find_map(|(differs, name)| differs.then_some(name))
    }
}

/// The path made absolute and resolved where it exists, so that two spellings of one file compare equal.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(encoder: Encoder, contexts: usize) -> QaRun {
        QaRun::new(
            Path::new("model"),
            Some(Path::new("db")),
            Path::new("nq.jsonl"),
            QaTask::Short,
            contexts,
            false,
            encoder,
            ChatTemplate::Chatml,
            64,
        )
    }

    #[test]
    fn a_run_resumes_only_with_the_same_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("answers.jsonl");
        run(Encoder::On, 5).check_and_record(&out, false).unwrap();
        assert!(QaRun::path_for(&out).is_file());
        run(Encoder::On, 5).check_and_record(&out, true).unwrap();
        let err = run(Encoder::Off, 5)
            .check_and_record(&out, true)
            .unwrap_err();
        assert!(format!("{err:#}").contains("another --encoder"), "{err:#}");
        let err = run(Encoder::On, 3)
            .check_and_record(&out, true)
            .unwrap_err();
        assert!(format!("{err:#}").contains("another --contexts"), "{err:#}");
        // Without answers yet, a new run replaces the record.
        run(Encoder::Off, 3).check_and_record(&out, false).unwrap();
        run(Encoder::Off, 3).check_and_record(&out, true).unwrap();
    }
}
