//! jsonl and jsonl.gz corpora: one JSON object per line, the text in a named field, `id` and `title` kept.

use crate::corpus::{Content, Document, ReadOptions};
use anyhow::{anyhow, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A buffered reader of `path`, gunzipped when its name ends in `.gz`.
pub fn open_text(path: &Path) -> Result<BufReader<Box<dyn Read + Send>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(BufReader::with_capacity(1 << 20, reader))
}

pub struct JsonlReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
    line_no: usize,
    options: ReadOptions,
    /// Lines skipped because they were malformed (only with `skip_bad_lines`).
    pub skipped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JsonlReader {
    pub fn open(path: &Path, options: ReadOptions) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            lines: open_text(path)?.lines(),
            line_no: 0,
            options,
            skipped: Default::default(),
        })
    }

    fn parse(&self, line: &str) -> Result<Document> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow!("malformed JSON: {e}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| anyhow!("not a JSON object"))?;
        let field = &self.options.text_field;
        let text = match object.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(anyhow!("field {field:?} is not a string")),
            None => {
                return Err(anyhow!(
                    "no field {field:?} (choose another with --text-field)"
                ))
            }
        };
        let id = match object.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => format!("{}:{}", self.path.display(), self.line_no),
        };
        let title = object
            .get("title")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        Ok(Document {
            id,
            title,
            content: Content::Text(text),
        })
    }
}

impl Iterator for JsonlReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(e) => {
                    return Some(Err(anyhow!(
                        "{}:{}: read failed: {e}",
                        self.path.display(),
                        self.line_no + 1
                    )))
                }
            };
            self.line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            match self.parse(&line) {
                Ok(doc) => return Some(Ok(doc)),
                Err(_) if self.options.skip_bad_lines => {
                    self.skipped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    return Some(Err(anyhow!(
                        "{}:{}: {e} (pass --skip-bad-lines to skip such lines)",
                        self.path.display(),
                        self.line_no
                    )))
                }
            }
        }
    }
}
