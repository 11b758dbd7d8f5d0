//! `retro chat` driven through piped stdin, on the seeded tiny Retro model with the SmolLM2 tokenizer and a real DB:
//! answers equal `retro generate` on the same ChatML prompt (history included), `/sources` lists the retrievals of
//! the last answer, `/reset` forgets, `/quit` leaves.

mod common;
mod tiny_retro;

use common::{ok, p};
use std::io::Write;
use std::process::{Command, Stdio};
use tiny_retro::fixture;

fn chat(extra: &[&str], input: &str) -> String {
    let f = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_retro"))
        .args([
            "chat",
            "--model",
            p(&f.model),
            "--max-new",
            "12",
            "--threads",
            "2",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn generate(prompt: &str, extra: &[&str]) -> serde_json::Value {
    let f = fixture();
    let out = ok(&[
        &[
            "generate",
            "--model",
            p(&f.model),
            "--prompt",
            prompt,
            "--max-new",
            "12",
            "--json",
        ][..],
        extra,
    ]
    .concat());
    serde_json::from_str(&out).unwrap()
}

const Q1: &str = "Where is the Eiffel Tower?";
const Q2: &str = "How tall is it?";

#[test]
fn chat_keeps_history_and_matches_generate() {
    let out = chat(&[], &format!("{Q1}\n{Q2}\n/sources\n/quit\nnot answered\n"));
    let a1 = generate(Q1, &["--template", "chatml", "--no-retrieval"])["text"]
        .as_str()
        .unwrap()
        .to_string();
    // The second turn sees the first exchange (the answer as the history keeps it: trimmed).
    let history = format!(
        "<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n\
<|im_start|>assistant\n",
        a1.trim()
    );
    let a2 = generate(&history, &["--no-retrieval"])["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        out,
        format!("{a1}\n{a2}\n(nothing was retrieved for the last answer)\n")
    );
}

#[test]
fn sources_reset_and_quit_with_a_db() {
    let f = fixture();
    let out = chat(
        &["--db", p(&f.db)],
        &format!("{Q1}\n/sources\n/reset\n/sources\n{Q2}\n/quit\n{Q1}\n"),
    );
    let g1 = generate(Q1, &["--template", "chatml", "--db", p(&f.db)]);
    let a1 = g1["text"].as_str().unwrap();
    let rest = out
        .strip_prefix(&format!("{a1}\n"))
        .unwrap_or_else(|| panic!("{out:?} should start with {a1:?}"));
    let mut lines = rest.lines();
    // One /sources line per neighbour of every retrieval, in order.
    let retrievals = g1["retrievals"].as_array().unwrap();
    assert!(!retrievals.is_empty());
    for r in retrievals {
        for n in r["neighbors"].as_array().unwrap() {
            let line = lines.next().unwrap();
            assert!(
                line.starts_with(&format!(
                    "[token {}] chunk {} doc {}",
                    r["position"], n["chunk"], n["doc"]
                )),
                "{line}"
            );
        }
    }
    assert_eq!(lines.next(), Some("(history cleared)"));
    assert_eq!(
        lines.next(),
        Some("(nothing was retrieved for the last answer)")
    );
    // After /reset the second question is answered as a first turn; after /quit nothing more.
    let a2 = generate(Q2, &["--template", "chatml", "--db", p(&f.db)]);
    let remaining: Vec<&str> = lines.collect();
    assert_eq!(remaining.join("\n"), a2["text"].as_str().unwrap());
}

#[test]
fn bad_flags_are_one_line_errors() {
    let f = fixture();
    common::fails(
        &["chat", "--model", p(&f.model), "--k", "1"],
        "--k needs --db",
    );
    common::fails(
        &["chat", "--model", p(&f.model), "--temperature=-1"],
        "temperature",
    );
    common::fails(&["chat", "--model", "no-such-model"], "no-such-model");
}
