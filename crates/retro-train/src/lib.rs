//! Training Retro models (issue 4; shared reference `retro-reference.md` §2, §3.4–3.5).
//!
//! - [`samples`]: samples of `seq_len` tokens cut from consecutive DB chunks, each chunk with its
//!   filtered neighbours (chunk + continuation); [`order`]: the seeded per-epoch order.
//! - [`trainer`]: the loop ([`train`], [`resume`]): masked cross-entropy, gradient accumulation,
//!   [`clip`]ping, [`adamw`], the [`schedule`], [`metrics`] and [`checkpoint`]s with exact resume.
//! - [`start`]: the starting weights for `pretrain`, `retrofit` and `gptfit` ([`options::Mode`]).
//! - [`sft`]: instruction-tuning samples from conversations (loss on the last answer), blended by
//!   [`blend`].
//! - [`eval`]: validation perplexity.

pub mod adamw;
pub mod batch;
pub mod blend;
pub mod checkpoint;
pub mod clip;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod options;
pub mod order;
pub mod plot;
pub mod samples;
pub mod schedule;
pub mod sft;
pub mod source;
pub mod start;
pub mod tokenizer_check;
pub mod trainer;

pub use checkpoint::resolve_checkpoint;
pub use eval::{checkpoint_perplexity, perplexity, Perplexity, PplOptions};
pub use options::{Mode, TrainOptions, TrainOverrides};
pub use samples::{Sample, SampleSet, SampleShape, Split};
pub use sft::{DataSpec, SftData, SftExample, SftFormat, SftSet};
pub use source::SampleSource;
pub use trainer::{resume, train, Observer, Quiet, RunInfo, TrainReport};
