//! `retro train` and `retro eval ppl` end to end on a small real DB (SmolLM2 tokenizer, MiniLM,
//! Faiss): a run killed with kill -9 and resumed gives the losses of an uninterrupted run, a TOML
//! config with flags overriding it, perplexity with and without retrieval, one-line errors.

mod common;

use common::{fails, ok, p, shared_data, small_db, tiny_llama_config};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Fixture {
    _tmp: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
}

/// A DB of 150 Wikipedia articles in chunks of 16 tokens, and a tiny model config for it.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A static is never dropped: keep its directory under target/, not in /tmp.
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let db = small_db(tmp.path());
        let config = tiny_llama_config(tmp.path(), 256);
        Fixture {
            _tmp: tmp,
            db,
            config,
        }
    })
}

fn train_args<'a>(f: &'a Fixture, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--mode",
        "pretrain",
        "--model",
        p(&f.config),
        "--db",
        p(&f.db),
        "--out",
        p(out),
        "--steps",
        steps,
        "--decay-steps",
        "12",
        "--batch",
        "2",
        "--seq-len",
        "64",
        "--lr",
        "3e-3",
        "--save-every",
        "1",
        "--eval-every",
        "4",
        "--eval-samples",
        "2",
    ]
}

fn losses(run: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap().to_bits(),
            )
        })
        .collect()
}

fn latest_step(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("latest"))
        .ok()
        .and_then(|s| s.trim().strip_prefix("step-").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn killed_and_resumed_run_equals_an_uninterrupted_one() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(&train_args(f, &straight, "12"));

    let killed = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_retro"))
        .args(train_args(f, &killed, "12"))
        .args(["--threads", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while latest_step(&killed) < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "training made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = latest_step(&killed);
    assert!(at_kill < 12, "the run finished before it could be killed");
    // The lines through the checkpoint, timings included: a resume that started over would
    // rewrite them with other timings.
    let lines_through = |step: u64| -> Vec<String> {
        std::fs::read_to_string(killed.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["step"].as_u64().unwrap() <= step
            })
            .map(str::to_string)
            .collect()
    };
    let before = lines_through(at_kill);
    assert!(!before.is_empty());
    ok(&["train", "--resume", p(&killed)]);
    assert_eq!(
        lines_through(at_kill),
        before,
        "resume rewrote the steps before the checkpoint"
    );
    assert_eq!(losses(&straight), losses(&killed));
    assert_eq!(losses(&killed).len(), 12);

    // Perplexity of the final model: JSON fields, and retrieval changes the result.
    let with: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "ppl",
        "--model",
        p(&killed),
        "--db",
        p(&f.db),
        "--seq-len",
        "64",
        "--json",
    ]))
    .unwrap();
    let without: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "ppl",
        "--model",
        p(&killed),
        "--db",
        p(&f.db),
        "--seq-len",
        "64",
        "--no-retrieval",
        "--json",
    ]))
    .unwrap();
    let ppl = with["ppl"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl.is_finite());
    assert!((with["loss"].as_f64().unwrap().exp() - ppl).abs() < 1e-6 * ppl);
    assert_eq!(with["tokens"], without["tokens"]);
    assert_ne!(with["loss"], without["loss"]);
    // The last validation line of training is the same evaluation as `eval ppl` on its samples.
    let val: Vec<f64> = std::fs::read_to_string(killed.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("val_loss").and_then(|x| x.as_f64()))
        .collect();
    let limited: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "ppl",
        "--model",
        p(&killed),
        "--db",
        p(&f.db),
        "--seq-len",
        "64",
        "--limit",
        "2",
        "--batch",
        "2",
        "--json",
    ]))
    .unwrap();
    assert!((val.last().unwrap() - limited["loss"].as_f64().unwrap()).abs() < 1e-5);

    // The same checkpoint with another tokenizer next to it is refused against this DB.
    let last = killed.join("checkpoints").join(
        std::fs::read_to_string(killed.join("latest"))
            .unwrap()
            .trim(),
    );
    // (A resumed run once copied its tokenizer from the checkpoint it resumed from, which it had
    // pruned by the end.)
    assert!(
        last.join("tokenizer.json").is_file(),
        "the resumed run's last checkpoint has no tokenizer"
    );
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(last.join(file), foreign.join(file)).unwrap();
    }
    std::fs::copy(
        shared_data().join("models/minilm-l6-v2/tokenizer.json"),
        foreign.join("tokenizer.json"),
    )
    .unwrap();
    fails(
        &[
            "eval",
            "ppl",
            "--model",
            p(&foreign),
            "--db",
            p(&f.db),
            "--seq-len",
            "64",
        ],
        "another tokenizer",
    );

    // Both runs' curves on one PNG.
    let png = tmp.path().join("loss.png");
    ok(&[
        "plot",
        &format!("straight={}", p(&straight)),
        p(&killed),
        "--out",
        p(&png),
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1100);
    assert!(
        bytes.len() > 10_000,
        "the plot is nearly empty ({} bytes)",
        bytes.len()
    );
    fails(
        &["plot", p(&tmp.path().join("nothing")), "--out", p(&png)],
        "metrics.jsonl",
    );
}

#[test]
fn retrofit_straight_from_a_gpt_starts_from_what_model_retrofit_makes() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let smol = shared_data().join("models/smollm2-135m-instruct");
    let made = tmp.path().join("made");
    #[rustfmt::skip]
    ok(&["model", "retrofit", "--from", p(&smol), "--out", p(&made), "--chunk-len", "16", "--retrieved-len", "32",
         "--seed", "7"]);
    // One step at learning rate 0 leaves the starting weights as they were.
    let run = tmp.path().join("run");
    #[rustfmt::skip]
    ok(&["train", "--mode", "retrofit", "--model", p(&smol), "--db", p(&f.db), "--out", p(&run), "--steps", "1",
         "--lr", "0", "--min-lr", "0", "--batch", "1", "--seq-len", "32", "--seed", "7", "--eval-every", "0",
         "--eval-samples", "1"]);
    let trained = run.join("checkpoints/step-00000001");
    assert_eq!(
        std::fs::read(made.join("config.json")).unwrap(),
        std::fs::read(trained.join("config.json")).unwrap()
    );
    assert!(
        std::fs::read(made.join("model.safetensors")).unwrap()
            == std::fs::read(trained.join("model.safetensors")).unwrap(),
        "retro train --mode retrofit from a GPT did not start from `retro model retrofit`'s weights"
    );
}

#[test]
fn toml_config_with_flags_overriding_it() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let toml = tmp.path().join("run.toml");
    std::fs::write(
        &toml,
        format!(
            "mode = \"pretrain\"\nmodel = {:?}\ndb = {:?}\nsteps = 5\nbatch = 2\nseq_len = 32\nlr = 1e-3\neval_every = 0\n",
            p(&f.config),
            p(&f.db)
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let summary: serde_json::Value = serde_json::from_str(&ok(&[
        "train",
        "--config",
        p(&toml),
        "--out",
        p(&run),
        "--steps",
        "2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(summary["step"], 2);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["options"]["steps"], 2);
    assert_eq!(record["options"]["seq_len"], 32);
    assert_eq!(record["options"]["lr"], 1e-3);

    std::fs::write(tmp.path().join("bad.toml"), "stepz = 3\n").unwrap();
    fails(
        &["train", "--config", p(&tmp.path().join("bad.toml"))],
        "bad.toml",
    );
    fails(
        &["train", "--resume", p(&run), "--batch", "3"],
        "different --batch",
    );
    fails(
        &[
            "train",
            "--mode",
            "retrofit",
            "--model",
            p(&f.config),
            "--db",
            p(&f.db),
            "--out",
            p(&tmp.path().join("x")),
        ],
        "tiny.json",
    );
    fails(
        &[
            "eval",
            "ppl",
            "--model",
            p(&tmp.path().join("nothing")),
            "--db",
            p(&f.db),
        ],
        "not a Retro checkpoint",
    );
}
