//! Helpers shared by the CLI tests: the shared assets, running `retro`, and checking its errors.

#![allow(dead_code)]

use std::io::{BufRead, Write};
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

/// A real retrieval DB in `dir/db`: the first 150 Wikipedia articles of the shared corpus, the SmolLM2 tokenizer,
/// chunks of 16 tokens, 10% validation documents, MiniLM embeddings, an exact (Flat) index, 10 saved neighbours.
pub fn small_db(dir: &Path) -> PathBuf {
    let corpus = dir.join("wiki.jsonl");
    let file = std::fs::File::open(shared_data().join("corpus/wiki-vital-en.jsonl.gz")).unwrap();
    let mut out = std::fs::File::create(&corpus).unwrap();
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(150)
    {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
    let db = dir.join("db");
    let tokenizer = shared_data().join("models/smollm2-135m-instruct/tokenizer.json");
    let embedder = shared_data().join("models/minilm-l6-v2");
    ok(&[
        "db",
        "build",
        "--corpus",
        p(&corpus),
        "--tokenizer",
        p(&tokenizer),
        "--embedder",
        p(&embedder),
        "--out",
        p(&db),
        "--chunk-len",
        "16",
        "--valid-fraction",
        "0.1",
        "--index",
        "Flat",
        "--query-k",
        "50",
        "--save-k",
        "10",
    ]);
    db
}

/// A tiny Llama config.json (hidden 64, 6 layers, SmolLM2's vocabulary so that the DB's tokens fit) in `dir`.
pub fn tiny_llama_config(dir: &Path, max_positions: usize) -> PathBuf {
    let config = dir.join("tiny.json");
    let json = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,
        "intermediate_size":128,"num_hidden_layers":6,"num_attention_heads":4,
        "num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":10000.0,
        "vocab_size":49152,"tie_word_embeddings":true,"max_position_embeddings":MAX}"#;
    std::fs::write(&config, json.replace("MAX", &max_positions.to_string())).unwrap();
    config
}
