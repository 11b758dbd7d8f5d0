//! Instruction-tuning samples (issue 5; shared reference §4): each conversation becomes one sample,
//! the prompt (system line, earlier turns, the last user turn, the assistant header) followed by the
//! last assistant answer and EOS, padded to `seq_len + 1` tokens. Loss covers only the answer and
//! the EOS after it (the reference's `--answer-loss-only`).
//!
//! The prompt and the answer are tokenised apart, as the reference does (`pad_and_convert_to_numpy`
//! takes the two token lists), and the prompt is tokenised whole, as generation tokenises it, so a
//! tuned model sees at inference exactly the tokens it was tuned on. A conversation longer than the
//! sequence drops its oldest user/assistant pairs first; if the last user turn alone is still too
//! long, the prompt keeps its last tokens (docs/deviations.md, SFT), and the answer is never cut
//! unless it alone exceeds the sequence.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use retro_data::chat::MEGATRON_SFT_SYSTEM;
use retro_data::{is_valid_document, read_conversations, ChatTemplate, Conversation, GptTokenizer};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::samples::{Sample, SampleShape};
use crate::source::SampleSource;

/// Fraction of each file's conversations held out for validation, chosen by a seeded hash of the
/// conversation id (as documents are for the DB's split).
pub const SFT_VALID_FRACTION: f64 = 0.02;

/// One `--data FILE[:WEIGHT]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub path: PathBuf,
    /// Relative sampling weight of the file in the blend.
    pub weight: f64,
}

impl std::str::FromStr for DataSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (path, weight) = match s.rsplit_once(':') {
            Some((p, w)) if !p.is_empty() => match w.parse::<f64>() {
                Ok(w) => (p, w),
                Err(_) => bail!("--data {s:?}: the weight after ':' is not a number"),
            },
            _ => (s, 1.0),
        };
        if !(weight.is_finite() && weight > 0.0) {
            bail!("--data {s:?}: the weight must be a positive number");
        }
        Ok(Self {
            path: PathBuf::from(path),
            weight,
        })
    }
}

/// One tokenised conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Prompt then answer then EOS, at most `seq_len + 1` tokens.
    pub tokens: Vec<u32>,
    /// Where the answer starts in `tokens`; the loss covers `tokens[answer_start..]`.
    pub answer_start: usize,
    /// Earlier turns dropped to fit the sequence.
    pub dropped_turns: usize,
}

/// How conversations become tokens.
pub struct SftFormat<'a> {
    pub tokenizer: &'a GptTokenizer,
    pub template: ChatTemplate,
    pub seq_len: usize,
    pub eos: u32,
}

impl SftFormat<'_> {
    /// The conversation's system line: its own, or for the reference's template the reference's.
    fn system<'c>(&self, c: &'c Conversation) -> Option<&'c str> {
        match (&c.system, self.template) {
            (Some(s), _) => Some(s.as_str()),
            (None, ChatTemplate::Megatron) => Some(MEGATRON_SFT_SYSTEM),
            (None, ChatTemplate::Chatml) => None,
        }
    }

    pub fn example(&self, c: &Conversation) -> Result<SftExample> {
        let (answer, history) = c
            .messages
            .split_last()
            .context("a conversation without messages")?;
        let mut answer_tokens = self
            .tokenizer
            .encode(&self.template.answer(&answer.content))?;
        answer_tokens.push(self.eos);
        let capacity = self.seq_len + 1;
        // The first target is predicted from the last prompt token: keep at least one.
        answer_tokens.truncate(capacity - 1);
        let system = self.system(c);
        // history is user, (assistant, user)*: drop the oldest pairs first.
        let mut prompt = Vec::new();
        let mut dropped = 0;
        for first in (0..history.len()).step_by(2) {
            prompt = self
                .tokenizer
                .encode(&self.template.generation_prompt(system, &history[first..]))?;
            dropped = first;
            if prompt.len() + answer_tokens.len() <= capacity {
                break;
            }
        }
        let room = capacity - answer_tokens.len();
        if prompt.len() > room {
            prompt.drain(..prompt.len() - room);
        }
        let answer_start = prompt.len();
        prompt.extend(answer_tokens);
        Ok(SftExample {
            tokens: prompt,
            answer_start,
            dropped_turns: dropped,
        })
    }
}

/// Tokenised conversations of one split, each a sample of `seq_len + 1` tokens once padded.
pub struct SftSet {
    examples: Vec<SftExample>,
    shape: SampleShape,
    pad: u32,
    /// Per file: its first example and example count, in `--data` order.
    files: Vec<(usize, usize)>,
}

/// The train and validation sets of a blend.
pub struct SftData {
    pub train: SftSet,
    pub valid: SftSet,
}

impl SftData {
    /// Reads and tokenises every file of `specs` (rows of `exclude_tasks` dropped), holding out
    /// [`SFT_VALID_FRACTION`] of each file's conversations by a hash of their ids with `seed`.
    pub fn load(
        specs: &[DataSpec],
        exclude_tasks: &[String],
        format: &SftFormat,
        shape: SampleShape,
        seed: u64,
        on_file: &mut dyn FnMut(&Path, usize),
    ) -> Result<Self> {
        if specs.is_empty() {
            bail!("--mode sft needs at least one --data FILE[:WEIGHT]");
        }
        let pad = format.tokenizer.pad_id;
        let mut train = SftSet::empty(shape, pad);
        let mut valid = SftSet::empty(shape, pad);
        for spec in specs {
            let conversations = read_conversations(&spec.path, exclude_tasks)?;
            let (train_start, valid_start) = (train.examples.len(), valid.examples.len());
            for c in &conversations {
                let example = format
                    .example(c)
                    .with_context(|| format!("{}: conversation {}", spec.path.display(), c.id))?;
                if is_valid_document(&c.id, seed, SFT_VALID_FRACTION) {
                    valid.examples.push(example);
                } else {
                    train.examples.push(example);
                }
            }
            let n_train = train.examples.len() - train_start;
            if n_train == 0 {
                bail!(
                    "{}: no training conversations (after --exclude-task and the validation hold-out)",
                    spec.path.display()
                );
            }
            train.files.push((train_start, n_train));
            valid
                .files
                .push((valid_start, valid.examples.len() - valid_start));
            on_file(&spec.path, conversations.len());
        }
        Ok(Self { train, valid })
    }
}

impl SftSet {
    fn empty(shape: SampleShape, pad: u32) -> Self {
        Self {
            examples: Vec::new(),
            shape,
            pad,
            files: Vec::new(),
        }
    }

    /// Per `--data` file: its first example and number of examples.
    pub fn files(&self) -> &[(usize, usize)] {
        &self.files
    }

    pub fn example(&self, i: usize) -> &SftExample {
        &self.examples[i]
    }

    /// Example `i` padded to a sample; the mask is 1 where the target is an answer token or its EOS.
    pub fn get(&self, i: usize) -> Sample {
        let e = &self.examples[i];
        let n = self.shape.seq_len;
        let mut tokens = e.tokens.clone();
        tokens.resize(n + 1, self.pad);
        let loss_mask = (0..n)
            .map(|t| {
                let target = t + 1;
                f32::from(u8::from(
                    target >= e.answer_start && target < e.tokens.len(),
                ))
            })
            .collect();
        Sample {
            tokens,
            loss_mask,
            neighbors: Vec::new(),
            chunks: Vec::new(),
            neighbor_chunks: Vec::new(),
        }
    }
}

impl SampleSource for SftSet {
    fn len(&self) -> usize {
        self.examples.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let samples: Vec<Sample> = indices.iter().map(|&i| self.get(i)).collect();
        Batch::new(&samples, self.shape, false, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_spec_parses_weights() {
        let s: DataSpec = "a/b.jsonl.gz:0.25".parse().unwrap();
        assert_eq!((s.path, s.weight), (PathBuf::from("a/b.jsonl.gz"), 0.25));
        let s: DataSpec = "a/b.jsonl".parse().unwrap();
        assert_eq!(s.weight, 1.0);
        assert!("a.jsonl:x".parse::<DataSpec>().is_err());
        assert!("a.jsonl:0".parse::<DataSpec>().is_err());
    }
}
