//! `retro generate` on the real SmolLM2-135M-Instruct GGUF (../shared/data/models/smollm2-135m-instruct): the greedy
//! answer of its reference_generation.json, as JSON and streamed, decoding with the GGUF's blocks and with f32
//! weights, and one-line errors.

mod common;

use common::retro;
use std::path::{Path, PathBuf};

fn smollm2() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/models/smollm2-135m-instruct");
    assert!(
        dir.join("reference_generation.json").is_file(),
        "{}: shared model missing (see README)",
        dir.display()
    );
    dir
}

const QUESTION: &str = "What is the capital of France?";

/// The reference's first item is this question in ChatML without a system turn; greedy decoding must give its tokens.
#[test]
fn smollm2_answers_the_reference_question() {
    let model = smollm2();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("reference_generation.json")).unwrap(),
    )
    .unwrap();
    let item = &reference["items"][0];
    assert_eq!(
        item["prompt"],
        format!("<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    );
    let expect_ids: Vec<u64> = item["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();

    let m = model.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--template",
        "chatml",
        "--prompt",
        QUESTION,
        "--max-new",
        "12",
    ];
    // auto (the default) decodes with the GGUF's own blocks, f32 with the dequantised weights: both
    // give the reference's tokens.
    let out = retro(
        &[
            &args[..],
            &["--json", "--no-retrieval", "--decode-weights", "f32"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f32_json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = retro(&[&args[..], &["--json", "--no-retrieval"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tokens"], f32_json["tokens"]);
    let text = json["text"].as_str().unwrap();
    assert!(
        text.starts_with("The capital of France is Paris"),
        "{text:?}"
    );
    let tokens: Vec<u64> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // The reference stops at <|im_end|> (id 2), which is one of our stop tokens too.
    assert_eq!(tokens, expect_ids);
    assert_eq!(json["retrievals"], serde_json::json!([]));

    // Streamed: the same text on stdout.
    let out = retro(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), text);
}

#[test]
fn bad_requests_are_one_line_errors() {
    let model = smollm2();
    let m = model.to_str().unwrap();
    for (extra, expected) in [
        (&["--db", "no-such-db"][..], "needs a Retro checkpoint"),
        (&["--temperature=-1"][..], "temperature"),
        (&["--temperature", "1", "--top-p", "0"][..], "top-p"),
    ] {
        let out = retro(
            &[
                &["generate", "--model", m, "--prompt", "Hi", "--max-new", "2"][..],
                extra,
            ]
            .concat(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(expected),
            "{expected:?} in {stderr}"
        );
    }
}
