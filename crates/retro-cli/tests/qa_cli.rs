//! `retro eval qa` end to end: contexts come from the DB's search, an interrupted evaluation resumes to the results of
//! an uninterrupted one, the encoder changes answers when on (and does not when its CCA is zero), SmolLM2-Instruct
//! answers from gold contexts, BoolQ is scored by True/False accuracy, a QuAC dialogue is searched with all its
//! questions, and bad input gives one-line errors. Also `retro generate --context-k`, which puts the same passages
//! into a free prompt.

mod common;

use common::{fails, ok, p, shared_data, small_db, tiny_llama_config};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Fixture {
    _tmp: tempfile::TempDir,
    db: PathBuf,
    /// A tiny Retro model pretrained 2 steps on the DB (random encoder and CCA).
    retro: PathBuf,
    /// The same decoder with its CCA output projections zeroed: exactly its decoder.
    zero_cca: PathBuf,
    /// The same decoder with a new encoder and CCA drawn with std 1 (instead of 0.02), so that what the encoder
    /// reads visibly changes the answers of a model too small to answer anything.
    loud_cca: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A static is never dropped: keep its directory under target/, not in /tmp.
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let db = small_db(tmp.path());
        let config = tiny_llama_config(tmp.path(), 512);
        let run = tmp.path().join("run");
        #[rustfmt::skip]
        ok(&["train", "--mode", "pretrain", "--model", p(&config), "--db", p(&db), "--out", p(&run),
             "--steps", "2", "--batch", "2", "--seq-len", "64", "--eval-every", "0", "--eval-samples", "1"]);
        // Retro-fits that keep the decoder (learning rate 0) and draw a new encoder and CCA.
        let refit = |name: &str, extra: &[&str]| {
            let out = tmp.path().join(name);
            #[rustfmt::skip]
            let mut args = vec!["train", "--mode", "retrofit", "--model", p(&run), "--db", p(&db), "--out", p(&out),
                "--steps", "1", "--lr", "0", "--min-lr", "0", "--batch", "1", "--seq-len", "64",
                "--eval-every", "0", "--eval-samples", "1"];
            args.extend_from_slice(extra);
            ok(&args);
            out
        };
        let zero_cca = refit("zero", &["--cca-init", "zero"]);
        let loud_cca = refit("loud", &["--cca-init", "random", "--init-std", "1.0"]);
        Fixture {
            _tmp: tmp,
            retro: run,
            zero_cca,
            loud_cca,
            db,
        }
    })
}

fn nq() -> PathBuf {
    shared_data().join("qa/nq-open-dev.jsonl.gz")
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn qa(model: &Path, out: &Path, limit: &str, encoder: &str) -> serde_json::Value {
    let f = fixture();
    #[rustfmt::skip]
    let stdout = ok(&["eval", "qa", "--model", p(model), "--db", p(&f.db), "--data", p(&nq()), "--contexts", "2",
                      "--limit", limit, "--max-new", "6", "--encoder", encoder, "--out", p(out), "--json"]);
    serde_json::from_str(&stdout).unwrap()
}

fn predictions(path: &Path) -> Vec<String> {
    read_lines(path)
        .iter()
        .map(|r| r["prediction"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn contexts_come_from_the_db_and_an_interrupted_run_resumes_to_the_same_results() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight.jsonl");
    let summary = qa(&f.retro, &straight, "4", "off");
    assert_eq!(summary["n"], 4);
    let lines = read_lines(&straight);
    assert_eq!(lines.len(), 4);
    for r in &lines {
        let question = r["question"].as_str().unwrap();
        #[rustfmt::skip]
        let hits: Vec<serde_json::Value> = serde_json::from_str(&ok(&["db", "search", p(&f.db), question, "-k", "2", "--json"])).unwrap();
        let contexts = r["contexts"].as_array().unwrap();
        assert_eq!(contexts.len(), 2);
        for (c, hit) in contexts.iter().zip(&hits) {
            let c = c.as_str().unwrap();
            let title = hit["title"].as_str().unwrap_or("");
            assert!(c.starts_with(&format!("title: {title}, source: ")), "{c:?}");
            assert!(
                c.contains(hit["text"].as_str().unwrap().trim()),
                "context {c:?} lacks its hit's text {:?}",
                hit["text"]
            );
        }
        let (em, f1) = (r["em"].as_f64().unwrap(), r["f1"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&f1) && (em == 0.0 || f1 == 1.0));
    }

    // Two questions done, then a line cut short by a kill: the rerun drops it and answers the rest.
    let resumed = tmp.path().join("resumed.jsonl");
    qa(&f.retro, &resumed, "2", "off");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&resumed)
        .unwrap()
        .write_all(b"{\"id\": \"nq-open-dev-000")
        .unwrap();
    let summary_resumed = qa(&f.retro, &resumed, "4", "off");
    assert_eq!(read_lines(&resumed), lines);
    assert_eq!(summary_resumed, summary);
    // Answers of another setting are not appended to the same file.
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&f.retro), "--db", p(&f.db), "--data", p(&nq()), "--contexts", "2",
            "--limit", "5", "--max-new", "6", "--encoder", "on", "--out", p(&resumed)],
          "another --encoder");
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&f.retro), "--db", p(&f.db), "--data", p(&nq()), "--contexts", "1",
            "--limit", "5", "--max-new", "6", "--encoder", "off", "--out", p(&resumed)],
          "another --contexts");
    assert_eq!(read_lines(&resumed), lines);
}

#[test]
fn the_gold_context_comes_first_then_the_db_hits() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gold-then-db.jsonl");
    let data = shared_qa("nq-openbook-short.jsonl.gz");
    // SmolLM2 (the DB's tokenizer): the gold paragraphs overflow the tiny model's 512 positions.
    let model = shared_data().join("models/smollm2-135m-instruct");
    #[rustfmt::skip]
    ok(&["eval", "qa", "--model", p(&model), "--db", p(&f.db), "--data", p(&data), "--contexts", "1",
         "--gold-context", "--limit", "2", "--max-new", "2", "--out", p(&out)]);
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 2);
    for (r, row) in lines.iter().zip(rows("nq-openbook-short.jsonl.gz", 2)) {
        assert_eq!(r["id"], row["id"]);
        let contexts = r["contexts"].as_array().unwrap();
        assert_eq!(contexts.len(), 2, "{contexts:?}");
        let title = row.get("title").and_then(|t| t.as_str()).unwrap_or("");
        let gold = format!(
            "title: {title}, source: {}",
            row["context"].as_str().unwrap()
        );
        assert_eq!(contexts[0].as_str().unwrap(), gold);
        assert_ne!(contexts[1].as_str().unwrap(), gold);
    }
}

#[test]
fn the_encoder_reads_the_contexts_when_on_and_a_zero_cca_changes_nothing() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let run = |model: &Path, encoder: &str| {
        let out = tmp.path().join(format!(
            "{}-{encoder}.jsonl",
            model.file_name().unwrap().to_string_lossy()
        ));
        qa(model, &out, "6", encoder);
        predictions(&out)
    };
    let off = run(&f.retro, "off");
    let loud_off = run(&f.loud_cca, "off");
    let loud_on = run(&f.loud_cca, "on");
    assert_eq!(
        loud_off, off,
        "gated off, only the unchanged decoder should answer"
    );
    assert_ne!(loud_on, loud_off, "the encoder had no effect on any answer");
    // Zero CCA output: the Retro model is exactly its decoder, whatever the encoder reads.
    let zero_off = run(&f.zero_cca, "off");
    let zero_on = run(&f.zero_cca, "on");
    assert_eq!(zero_on, zero_off);
    assert_eq!(zero_off, off);
}

#[test]
fn smollm2_instruct_answers_from_gold_contexts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gold.jsonl");
    let model = shared_data().join("models/smollm2-135m-instruct");
    let data = shared_data().join("qa/nq-openbook-short.jsonl.gz");
    #[rustfmt::skip]
    let summary: serde_json::Value = serde_json::from_str(&ok(&["eval", "qa", "--model", p(&model), "--data", p(&data),
        "--gold-context", "--limit", "4", "--max-new", "24", "--out", p(&out), "--json"])).unwrap();
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 4);
    for r in &lines {
        // The gold context is the prompt's only context, formatted as the reference does.
        let contexts = r["contexts"].as_array().unwrap();
        assert_eq!(contexts.len(), 1);
        assert!(contexts[0].as_str().unwrap().starts_with("title: "));
    }
    // With the answer in its context, the instruct model gets some right (a broken prompt gets none).
    assert!(
        summary["f1"].as_f64().unwrap() > 0.2,
        "F1 {} with gold contexts: {lines:?}",
        summary["f1"]
    );
}

#[test]
fn bad_qa_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = shared_data().join("models/smollm2-135m-instruct");
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&model), "--data", p(&nq()), "--encoder", "on", "--limit", "1"],
          "needs a Retro model");
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"q?\"}\n").unwrap();
    fails(
        &["eval", "qa", "--model", p(&model), "--data", p(&bad)],
        "bad.jsonl:1",
    );
    let garbage = tmp.path().join("garbage.jsonl");
    std::fs::write(&garbage, "not json\n{}\n").unwrap();
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&model), "--data", p(&nq()), "--limit", "1", "--out", p(&garbage)],
          "garbage.jsonl:1");
}

fn shared_qa(name: &str) -> PathBuf {
    shared_data().join("qa").join(name)
}

/// The rows of a shared QA file.
fn rows(name: &str, limit: usize) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let file = std::fs::File::open(shared_qa(name)).unwrap();
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(limit)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

#[test]
fn boolq_is_prompted_for_true_or_false_and_scored_by_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("boolq.jsonl");
    let model = shared_data().join("models/smollm2-135m-instruct");
    let data = shared_qa("boolq-dev.jsonl.gz");
    // No --task: boolq from the file's name.
    #[rustfmt::skip]
    let summary: serde_json::Value = serde_json::from_str(&ok(&["eval", "qa", "--model", p(&model), "--data", p(&data),
        "--gold-context", "--limit", "4", "--max-new", "4", "--out", p(&out), "--json"])).unwrap();
    assert_eq!(summary["task"], "boolq");
    assert_eq!(summary["n"], 4);
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 4);
    let mut correct = 0.0;
    for (r, row) in lines.iter().zip(rows("boolq-dev.jsonl.gz", 4)) {
        assert_eq!(r["task"], "boolq");
        assert_eq!(r["id"], row["id"]);
        // The gold label yes / no becomes True / False.
        let gold = if row["answers"][0] == "yes" {
            "True"
        } else {
            "False"
        };
        assert_eq!(r["answers"], serde_json::json!([gold]));
        let em = r["em"].as_f64().unwrap();
        assert!(em == 0.0 || em == 1.0, "{r}");
        assert_eq!(r["f1"], r["em"]);
        // The score is whether the answer's first word states the gold label.
        let prediction = r["prediction"].as_str().unwrap();
        let first = prediction.split_whitespace().next().unwrap_or("");
        let first = first
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        let said = match first.as_str() {
            "true" | "yes" => Some("True"),
            "false" | "no" => Some("False"),
            _ => None,
        };
        assert_eq!(em, f64::from(u8::from(said == Some(gold))), "{r}");
        correct += em;
    }
    assert_eq!(summary["em"].as_f64().unwrap(), correct / 4.0);
    assert_eq!(summary["f1"], summary["em"]);
    // The instruct model, with the passage in front of it, answers True or False (a broken prompt would not).
    assert!(
        lines
            .iter()
            .any(|r| r["prediction"].as_str().unwrap().starts_with("True")
                || r["prediction"].as_str().unwrap().starts_with("False")),
        "{lines:?}"
    );
    // Resuming these answers as another task is refused: they were not scored that way.
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&model), "--data", p(&data), "--task", "short", "--limit", "5",
            "--out", p(&out)], "boolq.jsonl:1: answered as task boolq, and this run's task is short");
}

#[test]
fn a_dialogue_is_searched_with_its_questions_and_answered_as_a_long_turn() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("quac.jsonl");
    let data = shared_qa("quac-sample.jsonl.gz");
    #[rustfmt::skip]
    let summary: serde_json::Value = serde_json::from_str(&ok(&["eval", "qa", "--model", p(&f.retro), "--db", p(&f.db),
        "--data", p(&data), "--contexts", "1", "--limit", "3", "--max-new", "12", "--out", p(&out), "--json"])).unwrap();
    assert_eq!(summary["task"], "multiturn");
    assert_eq!(summary["n"], 3);
    let lines = read_lines(&out);
    assert_eq!(lines.len(), 3);
    for (r, row) in lines.iter().zip(rows("quac-sample.jsonl.gz", 3)) {
        assert_eq!(r["task"], "multiturn");
        assert_eq!(r["question"], row["question"]);
        assert_eq!(r["history"], row["history"]);
        assert!(!r["history"].as_array().unwrap().is_empty());
        // The DB was searched with the earlier questions, then the question.
        let mut query: Vec<&str> = row["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["question"].as_str().unwrap())
            .collect();
        query.push(row["question"].as_str().unwrap());
        #[rustfmt::skip]
        let hits: Vec<serde_json::Value> = serde_json::from_str(&ok(&["db", "search", p(&f.db), &query.join(" "), "-k", "1", "--json"])).unwrap();
        let context = r["contexts"][0].as_str().unwrap();
        assert!(
            context.contains(hits[0]["text"].as_str().unwrap().trim()),
            "context {context:?} is not the hit of {query:?}: {:?}",
            hits[0]["text"]
        );
        // A long answer: newlines became spaces; scored by SQuAD F1.
        let prediction = r["prediction"].as_str().unwrap();
        assert!(!prediction.contains('\n'), "{prediction:?}");
        let f1 = r["f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
    }
}

#[test]
fn bad_tasks_give_one_line_errors() {
    let model = shared_data().join("models/smollm2-135m-instruct");
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&model), "--data", p(&nq()), "--task", "bogus"],
          "unknown QA task \"bogus\": use short, boolq, multiturn or long");
    // NQ's answers are no True/False labels.
    #[rustfmt::skip]
    fails(&["eval", "qa", "--model", p(&model), "--data", p(&nq()), "--task", "boolq", "--limit", "1"],
          "nq-open-dev.jsonl.gz:1: `answers`: \"14 December 1972 UTC\" is not a True/False label");
}

/// `retro generate --context-k 2`: the DB's top 2 passages for the prompt (as `retro db search` ranks them) go into
/// the prompt before it; with `--template megatron` in the reference's evaluation format.
#[test]
fn generate_context_k_puts_the_top_passages_into_the_prompt() {
    let f = fixture();
    let smollm2 = shared_data().join("models/smollm2-135m-instruct");
    let question = "Who painted the Mona Lisa?";
    let hits: serde_json::Value = serde_json::from_str(&ok(&[
        "db",
        "search",
        p(&f.db),
        question,
        "-k",
        "2",
        "--json",
    ]))
    .unwrap();
    let generate = |template: &str| -> serde_json::Value {
        #[rustfmt::skip]
        let out = ok(&["generate", "--model", p(&smollm2), "--db", p(&f.db), "--context-k", "2", "--template",
                       template, "--prompt", question, "--max-new", "2", "--json"]);
        serde_json::from_str(&out).unwrap()
    };
    let plain = generate("none");
    let contexts: Vec<&str> = plain["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(contexts.len(), 2);
    for (c, hit) in contexts.iter().zip(hits.as_array().unwrap()) {
        let title = hit["title"].as_str().unwrap_or("");
        assert!(
            c.starts_with(&format!("title: {title}, source: ")),
            "{c:?} for {hit}"
        );
    }
    assert_eq!(
        plain["prompt"],
        format!("{}\n\n{}\n\n{question}", contexts[0], contexts[1])
    );
    let megatron = generate("megatron");
    let prompt = megatron["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with(
            "System: This is a chat between a user and an artificial intelligence assistant."
        ) && prompt.contains("based on the context")
            && prompt.contains(&format!(
                "{}\n\n{}\n\nUser: {question}\n\nAssistant:",
                contexts[0], contexts[1]
            )),
        "{prompt:?}"
    );
    fails(
        &[
            "generate",
            "--model",
            p(&smollm2),
            "--context-k",
            "2",
            "--prompt",
            question,
        ],
        "--context-k 2 needs --db",
    );
}
