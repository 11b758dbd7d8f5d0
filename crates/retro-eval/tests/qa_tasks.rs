//! The task prompts on real rows of `shared/data/qa`: a BoolQ row's prompt is the reference's string (§5), its label
//! becomes True / False; a QuAC row's prompt holds its earlier turns in order; bad rows are one-line errors naming the
//! file, line and field.

use retro_data::chat::format_context;
use retro_data::ChatTemplate;
use retro_eval::{read_qa, QaTask};
use std::path::{Path, PathBuf};

fn qa_data(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/qa");
    assert!(
        dir.is_dir(),
        "{}: shared assets missing (see README)",
        dir.display()
    );
    dir.join(name)
}

/// The reference's evaluation system line (§5, `reformat_prompt`, template 0), verbatim.
const SYSTEM: &str = "System: This is a chat between a user and an artificial intelligence assistant. The assistant \
gives helpful, detailed, and polite answers to the user's questions based on the context. The assistant should also \
indicate when the answer cannot be found in the context.\n\n";

#[test]
fn a_boolq_row_gets_the_reference_prompt_and_a_true_false_label() {
    let path = qa_data("boolq-dev.jsonl.gz");
    assert_eq!(QaTask::from_file_name(&path), Some(QaTask::Boolq));
    let rows = read_qa(&path, Some(2), QaTask::Boolq).unwrap();
    assert_eq!(rows.len(), 2);
    // Row 0: "does ethanol take more energy make that produces?", answers ["no"]; row 1: answers ["yes"].
    assert_eq!(
        rows[0].question,
        "does ethanol take more energy make that produces?"
    );
    assert_eq!(rows[0].answers, vec!["False"]);
    assert_eq!(rows[1].answers, vec!["True"]);
    let passage = rows[0].context.clone().unwrap();
    let contexts = vec![format_context(None, &passage)];
    let prompt = QaTask::Boolq.prompt(ChatTemplate::Megatron, &contexts, &rows[0]);
    // reformat_prompt: system + "\n\n".join(ctxs) + "\n\n" + "User: {}\n\nAssistant:".format(
    //     "Answer the following question with True or False. {}".format(query))
    let reference = format!(
        "{SYSTEM}title: , source: {passage}\n\nUser: Answer the following question with True or False. does ethanol \
take more energy make that produces?\n\nAssistant:"
    );
    assert_eq!(prompt, reference);
    // Read as a short-span set, the label stays the set's own answer.
    let short = read_qa(&path, Some(1), QaTask::Short).unwrap();
    assert_eq!(short[0].answers, vec!["no"]);
}

#[test]
fn a_quac_prompt_holds_the_earlier_turns_in_order() {
    let path = qa_data("quac-sample.jsonl.gz");
    assert_eq!(QaTask::from_file_name(&path), Some(QaTask::Multiturn));
    let rows = read_qa(&path, Some(20), QaTask::Multiturn).unwrap();
    // A row with several earlier turns.
    let row = rows
        .iter()
        .find(|r| r.history.len() >= 3)
        .expect("a QuAC row with 3 earlier turns");
    for template in [ChatTemplate::Megatron, ChatTemplate::Chatml] {
        let prompt = QaTask::Multiturn.prompt(template, &["title: T, source: S".to_string()], row);
        let mut at = prompt.find("title: T, source: S").expect("the context");
        for turn in &row.history {
            for text in [&turn.question, &turn.answer] {
                let found = prompt[at..].find(text.as_str()).unwrap_or_else(|| {
                    panic!("{template:?}: {text:?} missing or out of order in {prompt:?}")
                });
                at += found + text.len();
            }
        }
        let last = prompt[at..]
            .find(row.question.as_str())
            .expect("the question after the turns");
        at += last + row.question.len();
        assert_eq!(&prompt[at..], template_end(template), "{template:?}");
    }
    // In the reference's template the dialogue is exactly "User: {q}\n\nAssistant: {a}\n\n" per turn.
    let prompt = QaTask::Multiturn.prompt(ChatTemplate::Megatron, &[], row);
    let turns: String = row
        .history
        .iter()
        .map(|t| format!("User: {}\n\nAssistant: {}\n\n", t.question, t.answer))
        .collect();
    assert_eq!(
        prompt,
        format!("{SYSTEM}{turns}User: {}\n\nAssistant:", row.question)
    );
    // No instruction is added to a dialogue.
    assert!(!prompt.contains("Answer the following question"));
    assert!(!prompt.contains("Please give a full"));
}

fn template_end(template: ChatTemplate) -> &'static str {
    match template {
        ChatTemplate::Megatron => "\n\nAssistant:",
        ChatTemplate::Chatml => "<|im_end|>\n<|im_start|>assistant\n",
    }
}

#[test]
fn bad_rows_are_errors_naming_the_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let err = |path: &Path, task| format!("{:#}", read_qa(path, None, task).unwrap_err());
    let maybe = write(
        "maybe.jsonl",
        "{\"question\": \"q?\", \"answers\": [\"yes\"]}\n{\"question\": \"q?\", \"answers\": [\"maybe\"]}\n",
    );
    let e = err(&maybe, QaTask::Boolq);
    assert!(
        e.contains("maybe.jsonl:2: `answers`: \"maybe\" is not a True/False label"),
        "{e}"
    );
    // BoolQ's own format: `answer` a bool, the context in `passage`.
    let own = write(
        "own.jsonl",
        "{\"question\": \"q?\", \"answer\": true, \"passage\": \"p\"}\n",
    );
    let rows = read_qa(&own, None, QaTask::Boolq).unwrap();
    assert_eq!(rows[0].answers, vec!["True"]);
    assert_eq!(rows[0].context.as_deref(), Some("p"));
    let e = err(&own, QaTask::Short);
    assert!(e.contains("own.jsonl:1: no `answers`"), "{e}");
    let turn = write(
        "turn.jsonl",
        "{\"question\": \"q?\", \"answers\": [\"a\"], \"history\": [{\"question\": \"q0\"}]}\n",
    );
    let e = err(&turn, QaTask::Multiturn);
    assert!(
        e.contains("turn.jsonl:1: ") && e.contains("missing field `answer`"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}
