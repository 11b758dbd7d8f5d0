//! Training and validation samples cut from a retrieval DB, each with its chunks' neighbours.
//!
//! A sample is `seq_len / m` consecutive chunks of one split (train or valid) in DB order, stored
//! padded to m tokens, so the sample's chunk grid is exactly the DB's and every chunk's
//! precomputed neighbours apply to it unchanged (our choice; the reference cuts samples from a
//! token stream and queries neighbours for those sample chunks, see `docs/deviations.md`).
//! Padding and document boundaries carry no loss: the DB drops end-of-document tokens
//! (reference §3.1), so a token never has to predict the first token of another document.
//!
//! Neighbours (reference §3.4): chunk c's saved neighbours less every neighbour from a document
//! that occurs anywhere in the sample, the first k kept, each the neighbour chunk followed by its
//! continuation (the next chunk of the same document), `retrieved_len` tokens, pad-filled when
//! fewer than k remain or a neighbour has no continuation.

use std::collections::HashSet;

use anyhow::{bail, Result};
use retro_data::ChunkDb;
use retro_db::neighbors::Neighbors;

use crate::source::SampleSource;

/// Which chunks samples are cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The retrievable chunks (the index's).
    Train,
    /// The held-out documents' chunks (never retrievable).
    Valid,
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "valid" => Ok(Split::Valid),
            _ => bail!("split must be train or valid, got {s:?}"),
        }
    }
}

/// Sizes of samples and their neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleShape {
    pub seq_len: usize,
    pub chunk_len: usize,
    /// k: neighbours per chunk fed to the model.
    pub num_neighbors: usize,
    /// r: tokens per neighbour (chunk + continuation).
    pub retrieved_len: usize,
}

impl SampleShape {
    /// The shape of `seq_len`-token samples for a model with `cfg`'s retrieval fields.
    pub fn for_model(cfg: &retro_model::RetroConfig, seq_len: usize) -> Self {
        Self {
            seq_len,
            chunk_len: cfg.chunk_len,
            num_neighbors: cfg.num_neighbors,
            retrieved_len: cfg.retrieved_len,
        }
    }

    pub fn chunks_per_sample(&self) -> usize {
        self.seq_len / self.chunk_len
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `seq_len + 1` tokens: inputs are `tokens[..seq_len]`, targets `tokens[1..]`.
    pub tokens: Vec<u32>,
    /// `seq_len` weights, 1 where position t's target is a real token of t's document.
    pub loss_mask: Vec<f32>,
    /// `[chunks, k, retrieved_len]` neighbour tokens, row-major.
    pub neighbors: Vec<u32>,
    /// The DB chunk ids of the sample's chunks.
    pub chunks: Vec<usize>,
    /// Neighbour chunk ids `[chunks, k]`, -1 where a slot was padded.
    pub neighbor_chunks: Vec<i64>,
}

/// The samples of one split of a DB.
pub struct SampleSet<'a> {
    db: &'a ChunkDb,
    neighbors: Option<&'a Neighbors>,
    shape: SampleShape,
    split_chunks: Vec<usize>,
}

impl<'a> SampleSet<'a> {
    /// Samples of `split`. `neighbors` may be `None` only for training without retrieval.
    pub fn new(
        db: &'a ChunkDb,
        neighbors: Option<&'a Neighbors>,
        split: Split,
        shape: SampleShape,
    ) -> Result<Self> {
        let m = db.chunk_len();
        if shape.chunk_len != m {
            bail!(
                "the model's chunk_len is {} but the DB {} has chunks of {m} tokens",
                shape.chunk_len,
                db.dir.display()
            );
        }
        if shape.seq_len == 0 || shape.seq_len % m != 0 {
            bail!(
                "--seq-len {} is not a positive multiple of the chunk length {m}",
                shape.seq_len
            );
        }
        if shape.retrieved_len > 2 * m {
            bail!(
                "retrieved_len {} is longer than a chunk and its continuation ({})",
                shape.retrieved_len,
                2 * m
            );
        }
        if let Some(n) = neighbors {
            if n.meta.save_k < shape.num_neighbors {
                bail!(
                    "the DB {} saved {} neighbours per chunk, the model needs {}",
                    db.dir.display(),
                    n.meta.save_k,
                    shape.num_neighbors
                );
            }
        }
        let split_chunks: Vec<usize> = match split {
            Split::Train => db.train_chunk_ids().iter().map(|&c| c as usize).collect(),
            Split::Valid => (0..db.n_chunks())
                .filter(|&c| db.is_valid_chunk(c))
                .collect(),
        };
        Ok(Self {
            db,
            neighbors,
            shape,
            split_chunks,
        })
    }

    pub fn shape(&self) -> SampleShape {
        self.shape
    }

    /// Whether samples carry neighbours (the set was made with them).
    pub fn has_neighbors(&self) -> bool {
        self.neighbors.is_some()
    }

    /// Sample `i`, with neighbours when the set has them (otherwise `neighbors` is empty).
    pub fn get(&self, i: usize) -> Sample {
        let (m, l) = (self.shape.chunk_len, self.shape.chunks_per_sample());
        let pad = self.db.manifest.pad_id;
        let chunks = self.split_chunks[i * l..(i + 1) * l].to_vec();
        let mut tokens = Vec::with_capacity(l * m + 1);
        // Per position: the document of a real token, None for padding.
        let mut docs: Vec<Option<usize>> = Vec::with_capacity(l * m + 1);
        let mut push_chunk = |c: usize, take: usize| {
            let info = self.db.chunk_info(c);
            let row = self.db.padded_chunk(c);
            for (t, &tok) in row.iter().take(take).enumerate() {
                tokens.push(tok);
                docs.push((t < info.len).then_some(info.doc));
            }
        };
        for &c in &chunks {
            push_chunk(c, m);
        }
        match self.split_chunks.get((i + 1) * l) {
            Some(&next) => push_chunk(next, 1),
            None => {
                tokens.push(pad);
                docs.push(None);
            }
        }
        let loss_mask = (0..l * m)
            .map(|t| match (docs[t], docs[t + 1]) {
                (Some(a), Some(b)) if a == b => 1.0,
                _ => 0.0,
            })
            .collect();
        let (neighbors, neighbor_chunks) = match self.neighbors {
            Some(n) => self.neighbor_tokens(n, &chunks),
            None => (Vec::new(), Vec::new()),
        };
        Sample {
            tokens,
            loss_mask,
            neighbors,
            chunks,
            neighbor_chunks,
        }
    }

    /// Neighbour tokens `[chunks, k, r]` and ids `[chunks, k]` for the sample made of `chunks`.
    fn neighbor_tokens(&self, n: &Neighbors, chunks: &[usize]) -> (Vec<u32>, Vec<i64>) {
        let SampleShape {
            chunk_len: m,
            num_neighbors: k,
            retrieved_len: r,
            ..
        } = self.shape;
        let pad = self.db.manifest.pad_id;
        let sample_docs: HashSet<usize> =
            chunks.iter().map(|&c| self.db.chunk_info(c).doc).collect();
        let mut tokens = Vec::with_capacity(chunks.len() * k * r);
        let mut ids = Vec::with_capacity(chunks.len() * k);
        for &c in chunks {
            let kept = allowed_neighbors(n.ids(c), k, |id| {
                !sample_docs.contains(&self.db.chunk_info(id).doc)
            });
            for slot in 0..k {
                match kept.get(slot) {
                    Some(&id) => {
                        let mut row = self.db.padded_chunk(id);
                        match self.db.continuation(id) {
                            Some(next) => row.extend(self.db.padded_chunk(next)),
                            None => row.resize(2 * m, pad),
                        }
                        row.truncate(r);
                        tokens.extend(row);
                        ids.push(id as i64);
                    }
                    None => {
                        tokens.extend(std::iter::repeat_n(pad, r));
                        ids.push(-1);
                    }
                }
            }
        }
        (tokens, ids)
    }
}

impl SampleSource for SampleSet<'_> {
    /// Whole samples in the split (a last partial one is dropped).
    fn len(&self) -> usize {
        self.split_chunks.len() / self.shape.chunks_per_sample()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &candle_core::Device,
    ) -> Result<crate::batch::Batch> {
        let samples: Vec<Sample> = indices.iter().map(|&i| self.get(i)).collect();
        crate::batch::Batch::new(&samples, self.shape, self.has_neighbors(), device)
    }
}

/// The first `k` saved neighbour ids (best first, -1 = none) that `allowed` accepts: the
/// reference's filter (§3.4) with `allowed` rejecting the sample's own documents.
pub fn allowed_neighbors(saved: &[i64], k: usize, allowed: impl Fn(usize) -> bool) -> Vec<usize> {
    saved
        .iter()
        .filter(|&&id| id >= 0)
        .map(|&id| id as usize)
        .filter(|&id| allowed(id))
        .take(k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_skips_padding_and_rejected_and_keeps_order() {
        let saved = [7, -1, 3, 9, 4, 5];
        assert_eq!(allowed_neighbors(&saved, 2, |id| id != 3), vec![7, 9]);
        assert_eq!(allowed_neighbors(&saved, 10, |id| id % 2 == 0), vec![4]);
        assert!(allowed_neighbors(&[-1, -1], 2, |_| true).is_empty());
    }
}
