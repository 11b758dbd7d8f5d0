//! Helpers shared by the CLI tests: the shared assets, running `retro`, and checking its errors.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/data`, next to the repository.
pub fn shared_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        dir.join("MANIFEST.md").is_file(),
        "{}: shared assets missing (see README)",
        dir.display()
    );
    dir
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs the `retro` binary with 2 threads.
pub fn retro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retro"))
        .args(args)
        .args(["--threads", "2"])
        .output()
        .unwrap()
}

/// Runs a command that must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = retro(args);
    assert!(
        out.status.success(),
        "retro {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail: exit code 2, one line on stderr containing `expected`, no panic.
pub fn fails(args: &[&str], expected: &str) {
    let out = retro(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "retro {args:?} should fail; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "retro {args:?} panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line error expected, got: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}
