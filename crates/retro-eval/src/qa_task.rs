//! The kind of a QA task, which decides its prompt, where its answer stops and how it is scored (shared reference
//! §5, `reformat_prompt`, which picks the prompt by the set's name):
//!
//! | task | sets (reference's names) | prompt | answer | score |
//! |---|---|---|---|---|
//! | `short` | drop, NarrativeQA, QASC, Quoref, ROPES, squad1.1, squad2.0, newsqa, nq, BioASQ, DuoRC, TextbookQA, tqa (and triviaqa) | `Answer the following question with a short span. {q}`, `Assistant: The answer is` | first line | SQuAD EM / F1 |
//! | `boolq` | boolq, multirc | `Answer the following question with True or False. {q}`, `Assistant:` | first line | accuracy of its first word (true / false, yes / no) |
//! | `multiturn` | convqa, chatgptgen, doc2dial, quac, qrecc, sharc | the dialogue as is: earlier turns, then `User: {q}`, `Assistant:` | up to the end of the turn | SQuAD EM / F1 |
//! | `long` | any other | `Please give a full and complete answer for the question. {q}`, `Assistant:` | up to the end of the turn | SQuAD EM / F1 |

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use retro_data::{ChatTemplate, Message, Role};
use serde::{Deserialize, Serialize};

use crate::qa_data::QaExample;
use crate::squad::score;
use crate::true_false::true_false_score;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QaTask {
    /// A short span (open-domain and extractive QA).
    #[default]
    Short,
    /// True or False.
    Boolq,
    /// The next answer of a dialogue whose earlier turns are in the prompt.
    Multiturn,
    /// A full and complete answer.
    Long,
}

/// The reference's set names per task (§5, `reformat_prompt`), lower case, plus `triviaqa` and `squad` for ours.
const SHORT_SETS: &[&str] = &[
    "drop",
    "narrativeqa",
    "qasc",
    "quoref",
    "ropes",
    "squad",
    "squad1.1",
    "squad2.0",
    "newsqa",
    "nq",
    "bioasq",
    "duorc",
    "duorc_paraphraserc",
    "textbookqa",
    "tqa",
    "triviaqa",
];
const BOOLQ_SETS: &[&str] = &["boolq", "multirc"];
const MULTITURN_SETS: &[&str] = &["convqa", "chatgptgen", "doc2dial", "quac", "qrecc", "sharc"];

impl QaTask {
    pub const ALL: [QaTask; 4] = [Self::Short, Self::Boolq, Self::Multiturn, Self::Long];

    pub fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Boolq => "boolq",
            Self::Multiturn => "multiturn",
            Self::Long => "long",
        }
    }

    /// The task of a set the reference names (case-insensitive); `None` for a name in none of its lists.
    pub fn of_set(name: &str) -> Option<Self> {
        let name = name.to_lowercase();
        let is_in = |sets: &[&str]| sets.contains(&name.as_str());
        if is_in(SHORT_SETS) {
            Some(Self::Short)
        } else if is_in(BOOLQ_SETS) {
            Some(Self::Boolq)
        } else if is_in(MULTITURN_SETS) {
            Some(Self::Multiturn)
        } else {
            None
        }
    }

    /// The task a data file's name names: the first word of the name (split at `-`, `_` and `.`, trailing digits
    /// ignored) that is a set of [`Self::of_set`], e.g. `boolq-dev.jsonl.gz` → boolq, `quac-sample` → multiturn,
    /// `nq-open-dev`, `triviaqa-sm-sub` → short. `None` when no word is.
    pub fn from_file_name(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_lowercase();
        name.split(['-', '_', '.', ' ']).find_map(|word| {
            Self::of_set(word)
                .or_else(|| Self::of_set(word.trim_end_matches(|c: char| c.is_ascii_digit())))
        })
    }

    /// `explicit`, else the task of the data file's name, else `short` (what `eval qa` always did).
    pub fn resolve(explicit: Option<Self>, data: &Path) -> Self {
        explicit
            .or_else(|| Self::from_file_name(data))
            .unwrap_or_default()
    }

    /// The prompt for `example` with `contexts` (already formatted), in `template`.
    pub fn prompt(
        self,
        template: ChatTemplate,
        contexts: &[String],
        example: &QaExample,
    ) -> String {
        match self {
            Self::Short => template.short_span_qa_prompt(contexts, &example.question),
            Self::Boolq => template.true_false_qa_prompt(contexts, &example.question),
            Self::Long => template.long_answer_qa_prompt(contexts, &example.question),
            Self::Multiturn => {
                let history: Vec<Message> = example
                    .history
                    .iter()
                    .flat_map(|t| {
                        [
                            Message::new(Role::User, t.question.clone()),
                            Message::new(Role::Assistant, t.answer.clone()),
                        ]
                    })
                    .collect();
                template.dialogue_qa_prompt(contexts, &history, &example.question)
            }
        }
    }

    /// The text the DB is searched with: the question; for a dialogue, its earlier questions then the question
    /// (the last question alone often only makes sense after them: "did she have any other children?").
    pub fn search_query(self, example: &QaExample) -> String {
        match self {
            Self::Multiturn => {
                let mut words: Vec<&str> = example
                    .history
                    .iter()
                    .map(|t| t.question.as_str())
                    .collect();
                words.push(&example.question);
                words.join(" ")
            }
            _ => example.question.clone(),
        }
    }

    /// Whether the answer ends at its first newline (short answers) or runs to the end of the turn (the model's
    /// end-of-text or end-of-turn token, or `--max-new` tokens).
    pub fn stops_at_newline(self) -> bool {
        matches!(self, Self::Short | Self::Boolq)
    }

    /// The answer in the generated text: its first line for short answers; otherwise the text up to a next `User:`
    /// turn the model may have started (the reference template has no end-of-turn token before its EOS), newlines
    /// turned into spaces (the reference's post-processing).
    pub fn answer_text(self, generated: &str) -> String {
        if self.stops_at_newline() {
            return generated
                .split('\n')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        let end = generated.find("\nUser:").unwrap_or(generated.len());
        generated[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// (EM, F1) of `prediction`: for boolq both are its True/False accuracy, else SQuAD's.
    pub fn score(self, prediction: &str, answers: &[String]) -> (f64, f64) {
        match self {
            Self::Boolq => {
                let accuracy = true_false_score(prediction, answers);
                (accuracy, accuracy)
            }
            _ => score(prediction, answers),
        }
    }
}

impl fmt::Display for QaTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task's name (`short`, `boolq`, `multiturn`, `long`) or a set name of the reference (`nq`, `quac`, …).
impl FromStr for QaTask {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s.to_lowercase())
            .or_else(|| Self::of_set(s))
            .ok_or_else(|| {
                format!(
                    "unknown QA task {s:?}: use short, boolq, multiturn or long (or a set the reference names: nq, \
tqa, squad1.1, boolq, multirc, quac, doc2dial, …)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qa_data::QaTurn;

    #[test]
    fn tasks_follow_the_file_name_and_the_reference_set_names() {
        let of = |n: &str| QaTask::from_file_name(Path::new(n));
        assert_eq!(of("data/qa/boolq-dev.jsonl.gz"), Some(QaTask::Boolq));
        assert_eq!(of("quac-sample.jsonl.gz"), Some(QaTask::Multiturn));
        assert_eq!(of("nq-open-dev.jsonl.gz"), Some(QaTask::Short));
        assert_eq!(of("nq-openbook-short.jsonl.gz"), Some(QaTask::Short));
        assert_eq!(of("triviaqa-sm-sub.jsonl.gz"), Some(QaTask::Short));
        assert_eq!(of("squad2-dev.jsonl"), Some(QaTask::Short));
        assert_eq!(of("MultiRC_dev.jsonl"), Some(QaTask::Boolq));
        assert_eq!(of("doc2dial.jsonl"), Some(QaTask::Multiturn));
        // The directory does not count, nor does a word that only contains a set's name.
        assert_eq!(of("boolq/questions.jsonl"), None);
        assert_eq!(of("unquacked.jsonl"), None);
        assert_eq!(
            QaTask::resolve(None, Path::new("mine.jsonl")),
            QaTask::Short
        );
        assert_eq!(
            QaTask::resolve(Some(QaTask::Long), Path::new("boolq.jsonl")),
            QaTask::Long
        );
        assert_eq!("long".parse::<QaTask>(), Ok(QaTask::Long));
        assert_eq!("MultiTurn".parse::<QaTask>(), Ok(QaTask::Multiturn));
        assert_eq!("tqa".parse::<QaTask>(), Ok(QaTask::Short));
        assert_eq!("quac".parse::<QaTask>(), Ok(QaTask::Multiturn));
        assert!("eli5"
            .parse::<QaTask>()
            .unwrap_err()
            .contains("unknown QA task \"eli5\""));
        assert_eq!(
            serde_json::to_string(&QaTask::Multiturn).unwrap(),
            "\"multiturn\""
        );
    }

    #[test]
    fn answers_stop_and_score_by_task() {
        let generated = " Yes, it is.\nUser: next?";
        assert_eq!(QaTask::Boolq.answer_text(generated), "Yes, it is.");
        assert_eq!(QaTask::Short.answer_text(generated), "Yes, it is.");
        assert_eq!(
            QaTask::Long.answer_text(" It is.\nBecause\n\nUser: x"),
            "It is. Because"
        );
        assert_eq!(QaTask::Multiturn.answer_text("a\n b  c"), "a b c");
        let t = vec!["True".to_string()];
        assert_eq!(QaTask::Boolq.score("yes", &t), (1.0, 1.0));
        assert_eq!(QaTask::Boolq.score("false", &t), (0.0, 0.0));
        // Not boolq: SQuAD scores, under which "yes" is no match for "True".
        assert_eq!(QaTask::Short.score("yes", &t), (0.0, 0.0));
        assert_eq!(QaTask::Long.score("true", &t), (1.0, 1.0));
    }

    #[test]
    fn a_dialogue_is_searched_with_all_its_questions() {
        let example = QaExample {
            id: "x".into(),
            question: "did she have children?".into(),
            answers: vec!["no".into()],
            context: None,
            title: None,
            history: vec![QaTurn {
                question: "who did Anna marry?".into(),
                answer: "Nikos".into(),
            }],
        };
        assert_eq!(
            QaTask::Multiturn.search_query(&example),
            "who did Anna marry? did she have children?"
        );
        assert_eq!(
            QaTask::Short.search_query(&example),
            "did she have children?"
        );
    }
}
