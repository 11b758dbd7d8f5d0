//! Evaluating Retro models (issue 5; shared reference §5).
//!
//! - [`qa`]: zero-shot QA with retrieved contexts in the prompt and the encoder on or off ([`evaluate_qa`]), resumable;
//! - [`squad`]: SQuAD's answer normalisation, exact match and F1;
//! - [`qa_data`]: the QA sets of `shared/data/qa`;
//! - [`fixed_retriever`]: the reference's `--reuse-top` neighbours.
//!
//! Validation perplexity, which training also computes, lives in `retro_train::eval`.

pub mod fixed_retriever;
pub mod qa;
pub mod qa_data;
pub mod squad;

pub use qa::{evaluate_qa, read_results, Encoder, QaOptions, QaResult, QaSummary};
pub use qa_data::{read_qa, QaExample};
pub use squad::{exact_match, f1, normalize_answer, score};
