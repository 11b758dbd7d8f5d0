//! Evaluating Retro models (issue 5; shared reference §5).
//!
//! - [`qa`]: zero-shot QA with retrieved contexts in the prompt and the encoder on or off ([`evaluate_qa`]), resumable;
//! - [`qa_task`]: the kind of a QA set (short span, True/False, multi-turn, long answer): its prompt, stop and score;
//! - [`squad`]: SQuAD's answer normalisation, exact match and F1;
//! - [`true_false`]: True/False answers (BoolQ) and their accuracy;
//! - [`qa_data`]: the QA sets of `shared/data/qa`;
//! - [`qa_run`]: the settings recorded beside an output file, so that only the same evaluation resumes;
//! - [`fixed_retriever`]: the reference's `--reuse-top` neighbours.
//!
//! Validation perplexity, which training also computes, lives in `retro_train::eval`.

pub mod fixed_retriever;
pub mod qa;
pub mod qa_data;
pub mod qa_run;
pub mod qa_task;
pub mod squad;
pub mod true_false;

pub use qa::{evaluate_qa, read_results, Encoder, QaOptions, QaResult, QaSummary};
pub use qa_data::{read_qa, QaExample, QaTurn};
pub use qa_task::QaTask;
pub use squad::{exact_match, f1, normalize_answer, score};
pub use true_false::{parse_true_false, true_false_score};
