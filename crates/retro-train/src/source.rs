//! What the training loop and perplexity read samples from: DB samples with neighbours
//! ([`crate::SampleSet`]) or instruction-tuning conversations ([`crate::SftSet`]).

use anyhow::Result;
use candle_core::Device;

use crate::batch::Batch;

pub trait SampleSource {
    /// Samples in the set.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `indices` stacked into a batch on `device`.
    fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch>;
}
