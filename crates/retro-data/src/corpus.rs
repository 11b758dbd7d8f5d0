//! Corpus inputs: which reader a path needs, and the documents they yield.
//!
//! A corpus path is a jsonl / jsonl.gz file (one document per line), a plain `.txt` file (one document), a Megatron
//! indexed dataset (`PREFIX`, `PREFIX.bin` or `PREFIX.idx`; already tokenised), or a directory, whose files are read in
//! name order.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A document's content: text to tokenise, or tokens from an already tokenised corpus.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The `id` field, or `FILE:LINE` / `FILE` / `PREFIX:INDEX` when the source has none.
    pub id: String,
    pub title: Option<String>,
    pub content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorpusFormat {
    Jsonl,
    Text,
    Megatron,
}

/// One input file (or Megatron prefix) and its format.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusSource {
    pub path: PathBuf,
    pub format: CorpusFormat,
}

/// How to read jsonl documents.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub text_field: String,
    /// Skip (and count) malformed lines instead of failing on the first.
    pub skip_bad_lines: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            skip_bad_lines: false,
        }
    }
}

/// Resolves corpus arguments into sources, expanding directories; fails on a missing path or unknown format.
pub fn resolve_sources(paths: &[PathBuf]) -> Result<Vec<CorpusSource>> {
    if paths.is_empty() {
        bail!("no corpus given: pass --corpus PATH (jsonl, jsonl.gz, txt, Megatron PREFIX.bin/.idx or a directory)");
    }
    let mut sources = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list directory", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            let mut seen_prefixes = std::collections::BTreeSet::new();
            for entry in entries {
                match detect_format(&entry) {
                    Some(CorpusFormat::Megatron) => {
                        let prefix = megatron_prefix(&entry);
                        if seen_prefixes.insert(prefix.clone()) {
                            sources.push(CorpusSource {
                                path: prefix,
                                format: CorpusFormat::Megatron,
                            });
                        }
                    }
                    Some(format) => sources.push(CorpusSource {
                        path: entry,
                        format,
                    }),
                    None => {}
                }
            }
            continue;
        }
        let prefix = megatron_prefix(path);
        let is_megatron =
            prefix.with_extension("idx").is_file() || path.with_extension("idx").is_file();
        if is_megatron && !path.is_file()
            || matches!(detect_format(path), Some(CorpusFormat::Megatron))
        {
            let prefix = if path.is_file() { prefix } else { path.clone() };
            if !with_suffix(&prefix, ".idx").is_file() || !with_suffix(&prefix, ".bin").is_file() {
                bail!(
                    "{}: Megatron dataset needs both {0}.bin and {0}.idx",
                    prefix.display()
                );
            }
            sources.push(CorpusSource {
                path: prefix,
                format: CorpusFormat::Megatron,
            });
            continue;
        }
        if !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        match detect_format(path) {
            Some(format) => sources.push(CorpusSource { path: path.clone(), format }),
            None => bail!(
                "{}: unknown corpus format (expected .jsonl, .jsonl.gz, .txt, or a Megatron .bin/.idx prefix)",
                path.display()
            ),
        }
    }
    if sources.is_empty() {
        bail!(
            "no corpus files found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(sources)
}

fn detect_format(path: &Path) -> Option<CorpusFormat> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") || name.ends_with(".json.gz") {
        Some(CorpusFormat::Jsonl)
    } else if name.ends_with(".txt") {
        Some(CorpusFormat::Text)
    } else if name.ends_with(".bin") || name.ends_with(".idx") {
        Some(CorpusFormat::Megatron)
    } else {
        None
    }
}

fn megatron_prefix(path: &Path) -> PathBuf {
    match path.extension().and_then(|e| e.to_str()) {
        Some("bin") | Some("idx") => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

pub(crate) fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens a source as an iterator of documents. Errors inside the iterator name the file and line.
pub fn read_documents(
    source: &CorpusSource,
    options: &ReadOptions,
) -> Result<Box<dyn Iterator<Item = Result<Document>> + Send>> {
    Ok(match source.format {
        CorpusFormat::Jsonl => Box::new(crate::jsonl::JsonlReader::open(
            &source.path,
            options.clone(),
        )?),
        CorpusFormat::Text => Box::new(std::iter::once(crate::text::read_text_document(
            &source.path,
        ))),
        CorpusFormat::Megatron => {
            Box::new(crate::megatron::IndexedDataset::open(&source.path)?.into_documents())
        }
    })
}
