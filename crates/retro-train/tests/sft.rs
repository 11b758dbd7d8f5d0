//! Instruction tuning (`--mode sft`) on the real conversations of ../shared/data/sft: loss only on
//! the last answer and its end-of-turn token, encoder and CCA untouched (retrieval gated off),
//! oldest turns dropped first, blends by weight with excluded tasks, exact resume, one-line errors.

mod common;

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use retro_data::{ChatTemplate, GptTokenizer, Message, Role};
use retro_model::candle_core::Device;
use retro_model::retro_weights::{tensor_part, Part};
use retro_model::RetroWeights;
use retro_train::metrics::read_step_metrics;
use retro_train::{Mode, Quiet, SampleShape, SftData, SftFormat, TrainOverrides};

use common::{base_gpt, final_weights, shared_data, tensor_bits, Recorder};

const SEQ_LEN: usize = 128;

fn self_instruct() -> PathBuf {
    shared_data().join("sft/self-instruct-human.jsonl.gz")
}

fn p3() -> PathBuf {
    shared_data().join("sft/p3-t0-sample.jsonl.gz")
}

fn tokenizer() -> GptTokenizer {
    GptTokenizer::load(
        &shared_data().join("models/smollm2-135m-instruct/tokenizer.json"),
        None,
    )
    .unwrap()
}

/// The rows of a shared jsonl.gz file, read here independently of the crate's reader.
fn rows(path: &Path) -> Vec<serde_json::Value> {
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn sft_overrides(model: &Path, out: &Path, data: &[&str]) -> TrainOverrides {
    TrainOverrides {
        mode: Some(Mode::Sft),
        model: Some(model.to_path_buf()),
        data: data.iter().map(|d| d.to_string()).collect(),
        out: Some(out.to_path_buf()),
        steps: Some(3),
        batch: Some(2),
        seq_len: Some(SEQ_LEN),
        lr: Some(3e-3),
        eval_every: Some(0),
        eval_samples: Some(2),
        save_every: Some(100),
        ..TrainOverrides::default()
    }
}

/// The last assistant message of every conversation in `path`.
fn last_answers(path: &Path) -> HashSet<String> {
    rows(path)
        .iter()
        .map(|r| {
            let messages = r["messages"].as_array().unwrap();
            messages.last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn sft_learns_only_the_last_answer_and_leaves_encoder_and_cca_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_gpt(tmp.path());
    let start = RetroWeights::load(&base, &Device::Cpu).unwrap();
    let data = self_instruct().display().to_string();
    let o = sft_overrides(&base, &tmp.path().join("sft"), &[&data]);
    let mut rec = Recorder::default();
    retro_train::train(o.resolve().unwrap(), &mut rec).unwrap();

    // Every sample's loss-bearing targets are one assistant answer of the file followed by
    // ChatML's end of turn (the SmolLM2 tokenizer has ChatML's tokens, so chatml is the default).
    let tok = tokenizer();
    let im_end = tok.inner().token_to_id("<|im_end|>").unwrap();
    let answers = last_answers(&self_instruct());
    assert_eq!(rec.0.len(), 3);
    let mut checked = 0;
    for (inputs, targets, mask, has_neighbors) in &rec.0 {
        assert!(!has_neighbors, "sft must train with retrieval off");
        for s in 0..2 {
            let row = s * SEQ_LEN..(s + 1) * SEQ_LEN;
            let picked: Vec<usize> = row.clone().filter(|&i| mask[i] > 0.0).collect();
            assert!(!picked.is_empty());
            // One contiguous span.
            assert_eq!(picked.last().unwrap() - picked[0] + 1, picked.len());
            let answer: Vec<u32> = picked.iter().map(|&i| targets[i]).collect();
            let text = tok.decode(&answer[..answer.len() - 1]).unwrap();
            if *answer.last().unwrap() == im_end {
                assert!(
                    answers.contains(&text),
                    "not an answer of the file: {text:?}"
                );
                checked += 1;
            } else {
                // An answer longer than the sequence is cut, never dropped.
                assert!(answers.iter().any(|a| a.starts_with(&text)), "{text:?}");
            }
            // The answer is preceded by the assistant header of the prompt.
            let before = tok.decode(&inputs[row.start..picked[0] + 1]).unwrap();
            assert!(
                before.ends_with("assistant\n"),
                "prompt ends {:?}",
                &before[before.len().saturating_sub(30)..]
            );
        }
    }
    assert!(checked >= 3, "only {checked} complete answers seen");

    let end = final_weights(&tmp.path().join("sft"));
    let mut moved_decoder = 0;
    for (name, t) in &end.tensors {
        let same = tensor_bits(t) == tensor_bits(&start.tensors[name]);
        match tensor_part(name) {
            Part::Decoder => moved_decoder += usize::from(!same),
            part => assert!(same, "{part:?} tensor {name} changed during sft"),
        }
    }
    assert!(moved_decoder > 0, "sft did not train the decoder");
}

#[test]
fn the_reference_template_learns_the_answer_after_assistant_and_the_pad_token() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_gpt(tmp.path());
    let data = self_instruct().display().to_string();
    let mut o = sft_overrides(&base, &tmp.path().join("sft"), &[&data]);
    o.template = Some(retro_data::ChatTemplate::Megatron);
    let mut rec = Recorder::default();
    retro_train::train(o.resolve().unwrap(), &mut rec).unwrap();

    let tok = tokenizer();
    let answers = last_answers(&self_instruct());
    // The reference appends its end of document; the tiny base has only a tokenizer.json, whose
    // end of text is <|endoftext|>.
    let end_token = tok.inner().token_to_id("<|endoftext|>").unwrap();
    let mut checked = 0;
    for (inputs, targets, mask, _) in &rec.0 {
        for s in 0..2 {
            let row = s * SEQ_LEN..(s + 1) * SEQ_LEN;
            let picked: Vec<usize> = row.clone().filter(|&i| mask[i] > 0.0).collect();
            assert_eq!(picked.last().unwrap() - picked[0] + 1, picked.len());
            // The reference's prompt ends "Assistant:" and its answer follows after one space (a
            // long prompt keeps its last tokens, so its "System:" line may be cut off).
            let before = tok.decode(&inputs[row.start..picked[0] + 1]).unwrap();
            assert!(before.ends_with("Assistant:"), "prompt ends {before:?}");
            let answer: Vec<u32> = picked.iter().map(|&i| targets[i]).collect();
            if *answer.last().unwrap() == end_token {
                let text = tok.decode(&answer[..answer.len() - 1]).unwrap();
                let text = text.strip_prefix(' ').unwrap_or_else(|| panic!("{text:?}"));
                assert!(
                    answers.contains(text),
                    "not an answer of the file: {text:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "only {checked} complete answers seen");
}

#[test]
fn long_conversations_drop_their_oldest_turns_never_the_answer() {
    let tok = tokenizer();
    let turn = |i: usize| format!("Turn {i}: tell me about the history of chess in some detail.");
    let mut messages = Vec::new();
    for i in 0..4 {
        messages.push(Message::new(Role::User, turn(i)));
        messages.push(Message::new(Role::Assistant, format!("Answer {i}.")));
    }
    let conversation = retro_data::Conversation {
        id: "c".into(),
        system: None,
        messages,
        task: None,
    };
    for template in [ChatTemplate::Megatron, ChatTemplate::Chatml] {
        let format = |seq_len| SftFormat {
            tokenizer: &tok,
            template,
            seq_len,
            eos: 0,
        };
        let full = format(512).example(&conversation).unwrap();
        assert_eq!(full.dropped_turns, 0);
        let prompt = tok.decode(&full.tokens[..full.answer_start]).unwrap();
        assert!(
            prompt.contains("Turn 0") && prompt.contains("Answer 2."),
            "{prompt}"
        );
        let answer: Vec<u32> = full.tokens[full.answer_start..].to_vec();
        assert_eq!(tok.decode(&answer).unwrap().trim(), "Answer 3.");

        let short = format(48).example(&conversation).unwrap();
        assert!(short.tokens.len() <= 49);
        assert!(
            short.dropped_turns >= 2,
            "{template:?}: {}",
            short.dropped_turns
        );
        assert_eq!(short.dropped_turns % 2, 0, "turns are dropped in pairs");
        assert_eq!(
            &short.tokens[short.answer_start..],
            &answer[..],
            "the answer changed"
        );
        let prompt = tok.decode(&short.tokens[..short.answer_start]).unwrap();
        assert!(
            !prompt.contains("Turn 0") && prompt.contains("Turn 3"),
            "{prompt}"
        );
    }
}

#[test]
fn blends_drop_excluded_tasks_and_hold_out_validation_conversations() {
    let tok = tokenizer();
    let excluded: Vec<String> = ["yelp_review_full", "amazon_polarity", "imdb"]
        .map(String::from)
        .to_vec();
    let kept = rows(&p3())
        .iter()
        .filter(|r| {
            let task = r["task"].as_str().unwrap();
            !excluded.iter().any(|t| task.starts_with(&format!("{t}_")))
        })
        .count();
    assert!(
        kept < rows(&p3()).len(),
        "the P3 sample should hold excluded tasks"
    );
    let specs = [
        format!("{}:3", self_instruct().display()).parse().unwrap(),
        format!("{}:1", p3().display()).parse().unwrap(),
    ];
    let format = SftFormat {
        tokenizer: &tok,
        template: ChatTemplate::Megatron,
        seq_len: SEQ_LEN,
        eos: tok.pad_id,
    };
    let shape = SampleShape {
        seq_len: SEQ_LEN,
        chunk_len: 16,
        num_neighbors: 2,
        retrieved_len: 32,
    };
    let data = SftData::load(&specs, &excluded, &format, shape, 1, &mut |_, _| {}).unwrap();
    let (train, valid) = (data.train.files(), data.valid.files());
    assert_eq!(train[0].1 + valid[0].1, rows(&self_instruct()).len());
    assert_eq!(train[1].1 + valid[1].1, kept);
    assert!(valid[1].1 > 50 && valid[1].1 < 300, "{valid:?}");
}

#[test]
fn resumed_sft_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_gpt(tmp.path());
    let a = format!("{}:3", self_instruct().display());
    let b = format!("{}:1", p3().display());
    let mk = |name: &str, steps: u64| {
        let mut o = sft_overrides(&base, &tmp.path().join(name), &[&a, &b]);
        o.steps = Some(steps);
        o.decay_steps = Some(4);
        o.save_every = Some(2);
        o.template = Some(ChatTemplate::Megatron);
        o
    };
    retro_train::train(mk("straight", 4).resolve().unwrap(), &mut Quiet).unwrap();
    retro_train::train(mk("resumed", 2).resolve().unwrap(), &mut Quiet).unwrap();
    let more = TrainOverrides {
        steps: Some(4),
        ..TrainOverrides::default()
    };
    retro_train::resume(&tmp.path().join("resumed"), more, &mut Quiet).unwrap();
    let losses = |name: &str| {
        read_step_metrics(&tmp.path().join(name).join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|m| (m.step, m.loss.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses("straight"), losses("resumed"));
    assert_eq!(losses("straight").len(), 4);
}

#[test]
fn bad_sft_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_gpt(tmp.path());
    let err = |o: TrainOverrides| {
        let e = o
            .resolve()
            .and_then(|o| retro_train::train(o, &mut Quiet))
            .expect_err("should fail");
        let msg = format!("{e:#}");
        assert!(!msg.contains('\n'), "{msg}");
        msg
    };
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"only a question\"}]}\n",
    )
    .unwrap();
    let msg = err(sft_overrides(
        &base,
        &tmp.path().join("r1"),
        &[&bad.display().to_string()],
    ));
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("assistant"),
        "{msg}"
    );
    let msg = err(sft_overrides(&base, &tmp.path().join("r2"), &[]));
    assert!(msg.contains("--data"), "{msg}");
    let mut o = sft_overrides(&base, &tmp.path().join("r3"), &["x.jsonl:-1"]);
    assert!(err(o.clone()).contains("weight"));
    o.data = vec![self_instruct().display().to_string()];
    o.db = Some(tmp.path().to_path_buf());
    assert!(err(o).contains("--db is not for --mode sft"));
}
