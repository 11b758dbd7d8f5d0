//! Samples stacked into the tensors a forward pass takes.

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::samples::{Sample, SampleShape};

/// A micro-batch: inputs `(b, seq)`, targets `(b, seq)`, loss weights `(b, seq)` and, with
/// retrieval, neighbours `(b, chunks, k, r)`.
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub loss_mask: Tensor,
    pub neighbors: Option<Tensor>,
    /// Sum of the loss weights: the tokens that count.
    pub tokens: usize,
}

impl Batch {
    pub fn new(
        samples: &[Sample],
        shape: SampleShape,
        with_neighbors: bool,
        device: &Device,
    ) -> Result<Self> {
        let (b, n) = (samples.len(), shape.seq_len);
        let mut inputs = Vec::with_capacity(b * n);
        let mut targets = Vec::with_capacity(b * n);
        let mut mask = Vec::with_capacity(b * n);
        let mut neighbors = Vec::new();
        for s in samples {
            inputs.extend_from_slice(&s.tokens[..n]);
            targets.extend_from_slice(&s.tokens[1..]);
            mask.extend_from_slice(&s.loss_mask);
            if with_neighbors {
                neighbors.extend_from_slice(&s.neighbors);
            }
        }
        let tokens = mask.iter().filter(|&&w| w > 0.0).count();
        let neighbors = if with_neighbors {
            let dims = (
                b,
                shape.chunks_per_sample(),
                shape.num_neighbors,
                shape.retrieved_len,
            );
            Some(Tensor::from_vec(neighbors, dims, device)?)
        } else {
            None
        };
        Ok(Self {
            inputs: Tensor::from_vec(inputs, (b, n), device)?,
            targets: Tensor::from_vec(targets, (b, n), device)?,
            loss_mask: Tensor::from_vec(mask, (b, n), device)?,
            neighbors,
            tokens,
        })
    }
}
