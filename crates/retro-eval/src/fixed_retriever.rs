//! The reference's "encoder on" for QA (`--reuse-top`, shared reference §5): the encoder gets the same top-k passages
//! that are in the prompt, as fixed neighbours for every chunk, instead of a fresh search per chunk.

use anyhow::Result;
use retro_model::{pad_tokens, Neighbor, Retriever};

pub struct FixedRetriever {
    /// Token ids of each passage (any length; cut or padded to the model's r when retrieved).
    pub passages: Vec<Vec<u32>>,
    pub texts: Vec<String>,
    pub pad: u32,
}

impl Retriever for FixedRetriever {
    fn retrieve(
        &mut self,
        _chunk: &[u32],
        k: usize,
        retrieved_len: usize,
    ) -> Result<Vec<Neighbor>> {
        Ok(self
            .passages
            .iter()
            .zip(&self.texts)
            .take(k)
            .enumerate()
            .map(|(i, (tokens, text))| Neighbor {
                tokens: pad_tokens(tokens.clone(), retrieved_len, self.pad),
                chunk: i,
                doc: i,
                text: text.clone(),
            })
            .collect())
    }
}
