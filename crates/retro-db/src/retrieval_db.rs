//! A finished retrieval database opened for queries: chunks, the embedder that keyed them and the index.

use crate::embed::read_meta;
use crate::embedder::Embedder;
use crate::index::{RetrievalIndex, SearchParams};
use crate::neighbors::Neighbors;
use anyhow::{Context, Result};
use retro_data::{ChunkDb, GptTokenizer};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct RetrievalDb {
    pub chunks: ChunkDb,
    pub tokenizer: GptTokenizer,
    pub embedder: Embedder,
    pub index: RetrievalIndex,
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub chunk: usize,
    pub doc: usize,
    pub title: Option<String>,
    pub score: f32,
    pub text: String,
}

/// A neighbour with its continuation's text appended (chunk + continuation = the retrieved tokens).
#[derive(Debug, Clone, Serialize)]
pub struct NeighborHit {
    pub chunk: usize,
    pub doc: usize,
    pub score: f32,
    pub text: String,
}

impl RetrievalDb {
    /// Opens the DB at `dir`. The embedder is the one recorded when the DB was embedded unless `embedder` is given.
    pub fn open(dir: &Path, embedder: Option<&Path>, search: Option<SearchParams>) -> Result<Self> {
        let chunks = ChunkDb::open(dir)?;
        let tokenizer = chunks.tokenizer()?;
        let meta = read_meta(dir)?;
        let embedder_dir = embedder
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(&meta.embedder));
        let embedder =
            Embedder::load(&embedder_dir, Some(meta.spec.pooling)).with_context(|| {
                format!("cannot load the DB's embedder (pass --embedder DIR to point at it)")
            })?;
        let sha = crate::embed::embedder_sha256(&embedder_dir)?;
        if sha != meta.embedder_sha256 {
            anyhow::bail!(
                "{}: this embedder (sha256 {}) is not the one {} was embedded with ({})",
                embedder_dir.display(),
                &sha[..12],
                dir.display(),
                &meta.embedder_sha256[..12]
            );
        }
        let index = RetrievalIndex::open(dir, search)?;
        Ok(Self {
            chunks,
            tokenizer,
            embedder,
            index,
        })
    }

    /// The `k` train chunks nearest to free `text`.
    pub fn search(&mut self, text: &str, k: usize) -> Result<Vec<Hit>> {
        let query = self.embedder.embed(&[text.to_string()], 1)?.remove(0);
        let hits = self.index.search(&query, k)?.remove(0);
        let train_rows = self.chunks.train_chunk_ids();
        hits.into_iter()
            .map(|(row, score)| {
                let chunk = train_rows[row as usize] as usize;
                let doc = self.chunks.chunk_info(chunk).doc;
                Ok(Hit {
                    chunk,
                    doc,
                    title: self.chunks.doc_info(doc).title,
                    score,
                    text: self.chunks.chunk_text(chunk, &self.tokenizer)?,
                })
            })
            .collect()
    }
}

/// The saved neighbours of `chunk`, each with its continuation (the next chunk of its document, when there is one).
pub fn neighbor_hits(
    chunks: &ChunkDb,
    tokenizer: &GptTokenizer,
    neighbors: &Neighbors,
    chunk: usize,
) -> Result<Vec<NeighborHit>> {
    neighbors
        .ids(chunk)
        .iter()
        .zip(neighbors.scores(chunk))
        .filter(|(&id, _)| id >= 0)
        .map(|(&id, &score)| {
            let id = id as usize;
            let mut tokens = chunks.chunk_tokens(id);
            if let Some(next) = chunks.continuation(id) {
                tokens.extend(chunks.chunk_tokens(next));
            }
            Ok(NeighborHit {
                chunk: id,
                doc: chunks.chunk_info(id).doc,
                score,
                text: tokenizer.decode(&tokens)?,
            })
        })
        .collect()
}
