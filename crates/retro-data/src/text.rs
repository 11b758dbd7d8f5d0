//! Plain-text corpora: one `.txt` file is one document, its id the path and its title the file stem.

use crate::corpus::{Content, Document};
use anyhow::{Context, Result};
use std::path::Path;

pub fn read_text_document(path: &Path) -> Result<Document> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    Ok(Document {
        id: path.display().to_string(),
        title: path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        content: Content::Text(text),
    })
}
