//! Writing results to stdout.

use anyhow::{Context, Result};
use std::io::Write;

/// Writes `text` to stdout and flushes it (so streamed tokens show at once); a closed pipe
/// (`| head`) is not an error.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}
