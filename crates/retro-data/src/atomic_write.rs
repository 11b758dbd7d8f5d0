//! Writes that a reader never sees half-done: write to `NAME.tmp`, fsync, rename over `NAME`.
//!
//! A job killed with `kill -9` leaves at most a stray `.tmp` file, which the next run overwrites; it never leaves a
//! truncated file under the final name that a later run would take as finished (tantivy's `atomic_write` does the same).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary path that `path` is written under before the rename.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_path(path);
    let mut file =
        File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("{}: write failed", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("{}: sync failed", tmp.display()))?;
    drop(file);
    commit_temporary(path)
}

/// Renames the finished `NAME.tmp` over `NAME`.
pub fn commit_temporary(path: &Path) -> Result<()> {
    let tmp = temporary_path(path);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot rename from {}", path.display(), tmp.display()))
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}
