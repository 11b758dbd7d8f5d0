//! `retro db stats`: what a DB holds and how well its index retrieves.

use crate::embed::Embeddings;
use crate::index::{sample_rows, FactoryIndex, RetrievalIndex};
use anyhow::Result;
use retro_data::ChunkDb;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct DbStats {
    pub documents: usize,
    pub documents_valid: usize,
    pub chunks: usize,
    pub chunks_train: usize,
    pub chunks_valid: usize,
    pub tokens: usize,
    pub chunk_len: usize,
    pub index: String,
    pub index_bytes: u64,
    pub bytes_per_chunk: f64,
    pub nprobe: Option<usize>,
    pub ef_search: Option<usize>,
    pub recall_sample: usize,
    /// Fraction of sampled train chunks whose own embedding finds them in the top 2.
    pub self_recall_at_2: f64,
    /// Mean overlap of the index's top 10 with exact inner-product search, over the same sample.
    pub recall_at_10: f64,
}

/// Counts, index size, and recall measured on `sample` train chunks at the index's current search settings.
pub fn db_stats(
    db: &ChunkDb,
    embeddings: &Embeddings,
    index: &mut RetrievalIndex,
    sample: usize,
) -> Result<DbStats> {
    let train_rows = db.train_chunk_ids();
    let rows = sample_rows(train_rows.len(), sample, 99);
    let chunks: Vec<usize> = rows.iter().map(|&r| train_rows[r] as usize).collect();
    let queries = embeddings.gather(&chunks);
    let approx = index.search(&queries, 10)?;
    let self_hits = rows
        .iter()
        .zip(&approx)
        .filter(|(&row, hits)| hits.iter().take(2).any(|&(r, _)| r == row as i64))
        .count();

    // Exact top 10 from a flat inner-product index over every train vector.
    let mut exact_index = FactoryIndex::new("Flat", embeddings.dim())?;
    for rows in train_rows.chunks(65536) {
        let chunks: Vec<usize> = rows.iter().map(|&c| c as usize).collect();
        exact_index.add(&embeddings.gather(&chunks))?;
    }
    let k = 10.min(train_rows.len());
    let exact = exact_index.search(&queries, k)?;
    let mut overlap = 0usize;
    for (hits, truth) in approx.iter().zip(&exact) {
        let truth: std::collections::HashSet<i64> = truth.iter().map(|&(r, _)| r).collect();
        overlap += hits.iter().filter(|(r, _)| truth.contains(r)).count();
    }
    let n = rows.len().max(1) as f64;
    let index_bytes = RetrievalIndex::file_bytes(&db.dir);
    Ok(DbStats {
        documents: db.manifest.n_documents,
        documents_valid: db.manifest.n_documents_valid,
        chunks: db.manifest.n_chunks,
        chunks_train: db.manifest.n_chunks_train,
        chunks_valid: db.manifest.n_chunks_valid,
        tokens: db.manifest.n_tokens,
        chunk_len: db.manifest.chunk_len,
        index: index.meta.factory.clone(),
        index_bytes,
        bytes_per_chunk: index_bytes as f64 / db.manifest.n_chunks_train.max(1) as f64,
        nprobe: index.meta.search.nprobe,
        ef_search: index.meta.search.ef_search,
        recall_sample: rows.len(),
        self_recall_at_2: self_hits as f64 / n,
        recall_at_10: overlap as f64 / (n * k as f64),
    })
}
