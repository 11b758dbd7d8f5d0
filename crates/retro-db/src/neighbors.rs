//! Precomputed neighbours: for every chunk, train and valid, the nearest train chunks from other documents.
//!
//! Reference §3.4: search `query_k` (200), drop hits from the query chunk's own document, keep `save_k` (20), pad
//! with -1. (The reference drops every document of the query's whole training sample; that rule needs the sample
//! layout and is applied when samples are assembled for training.) Blocks go to `DB/neighbors/blocks/`; when every
//! block is done they are merged into `DB/neighbors/ids.bin` (`[n_chunks, save_k]` i64) and `scores.bin` (f32).

use crate::blocks::{block_path, block_ranges, Shard};
use crate::embed::Embeddings;
use crate::index::RetrievalIndex;
use anyhow::{bail, Context, Result};
use retro_data::array_file::{write_array, Array, ArrayWriter};
use retro_data::atomic_write::write_json_atomic;
use retro_data::ChunkDb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const NEIGHBORS_DIR: &str = "neighbors";
const IDS_KIND: &str = "neighbor-ids";
const SCORES_KIND: &str = "neighbor-scores";

#[derive(Debug, Clone)]
pub struct NeighborOptions {
    pub query_k: usize,
    pub save_k: usize,
    pub block_size: usize,
    pub shard: Shard,
}

impl Default for NeighborOptions {
    fn default() -> Self {
        Self {
            query_k: 200,
            save_k: 20,
            block_size: 4096,
            shard: Shard::ALL,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NeighborsMeta {
    pub query_k: usize,
    pub save_k: usize,
    pub block_size: usize,
    pub n_chunks: usize,
    pub factory: String,
}

pub fn neighbors_dir(db: &Path) -> PathBuf {
    db.join(NEIGHBORS_DIR)
}

/// Keeps the first `save_k` hits whose chunk is not from `own_doc`, padded with (-1, NaN).
pub fn filter_neighbors(
    hits: &[(i64, f32)],
    own_doc: usize,
    save_k: usize,
    row_to_chunk: &dyn Fn(i64) -> usize,
    chunk_doc: &dyn Fn(usize) -> usize,
) -> (Vec<i64>, Vec<f32>) {
    let mut ids = Vec::with_capacity(save_k);
    let mut scores = Vec::with_capacity(save_k);
    for &(row, score) in hits {
        if ids.len() == save_k {
            break;
        }
        let chunk = row_to_chunk(row);
        if chunk_doc(chunk) != own_doc {
            ids.push(chunk as i64);
            scores.push(score);
        }
    }
    ids.resize(save_k, -1);
    scores.resize(save_k, f32::NAN);
    (ids, scores)
}

#[derive(Debug, Clone, Serialize)]
pub struct NeighborReport {
    pub blocks_total: usize,
    pub blocks_done_now: usize,
    pub complete: bool,
}

/// Queries the neighbours of every chunk, block by block (skipping finished blocks), and merges the blocks when all
/// are done. `on_block(chunks)` reports progress.
pub fn query_neighbors(
    db: &ChunkDb,
    embeddings: &Embeddings,
    index: &mut RetrievalIndex,
    options: &NeighborOptions,
    on_block: &dyn Fn(usize),
) -> Result<NeighborReport> {
    if options.save_k == 0 || options.query_k < options.save_k {
        bail!(
            "--save-k must be positive and at most --query-k ({} > {})",
            options.save_k,
            options.query_k
        );
    }
    let dir = neighbors_dir(&db.dir);
    let blocks_dir = dir.join("blocks");
    std::fs::create_dir_all(&blocks_dir)
        .with_context(|| format!("{}: cannot create", blocks_dir.display()))?;
    let meta = NeighborsMeta {
        query_k: options.query_k,
        save_k: options.save_k,
        block_size: options.block_size,
        n_chunks: db.n_chunks(),
        factory: index.meta.factory.clone(),
    };
    let meta_path = dir.join("meta.json");
    if let Ok(text) = std::fs::read_to_string(&meta_path) {
        let old: NeighborsMeta = serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt", meta_path.display()))?;
        if old != meta {
            bail!("{}: neighbours were queried with other settings ({old:?}); use the same or delete {}", meta_path.display(), dir.display());
        }
        if dir.join("ids.bin").is_file() && dir.join("scores.bin").is_file() {
            on_block(db.n_chunks());
            return Ok(NeighborReport {
                blocks_total: 0,
                blocks_done_now: 0,
                complete: true,
            });
        }
    } else {
        write_json_atomic(&meta_path, &meta)?;
    }
    let train_rows = db.train_chunk_ids();
    let ranges = block_ranges(db.n_chunks(), options.block_size);
    let mut report = NeighborReport {
        blocks_total: ranges.len(),
        blocks_done_now: 0,
        complete: false,
    };
    for (block_idx, range) in ranges.iter().enumerate() {
        let ids_path = block_path(&blocks_dir, range, "ids");
        let scores_path = block_path(&blocks_dir, range, "scores");
        if ids_path.is_file() && scores_path.is_file() {
            on_block(range.len());
            continue;
        }
        if !options.shard.owns(block_idx) {
            continue;
        }
        tracing::info!(
            block = block_idx,
            start = range.start,
            end = range.end,
            "querying neighbours"
        );
        let chunks: Vec<usize> = range.clone().collect();
        let queries = embeddings.gather(&chunks);
        let hits = index.search(&queries, options.query_k)?;
        let mut ids = Vec::with_capacity(range.len() * options.save_k);
        let mut scores = Vec::with_capacity(range.len() * options.save_k);
        for (&chunk, chunk_hits) in chunks.iter().zip(&hits) {
            let (i, s) = filter_neighbors(
                chunk_hits,
                db.chunk_info(chunk).doc,
                options.save_k,
                &|row| train_rows[row as usize] as usize,
                &|c| db.chunk_info(c).doc,
            );
            ids.extend(i);
            scores.extend(s);
        }
        // Scores first: the ids file marks the block as done.
        write_array(
            &scores_path,
            SCORES_KIND,
            &[range.len(), options.save_k],
            &scores,
        )?;
        write_array(&ids_path, IDS_KIND, &[range.len(), options.save_k], &ids)?;
        report.blocks_done_now += 1;
        on_block(range.len());
    }
    let all_done = ranges.iter().all(|r| {
        block_path(&blocks_dir, r, "ids").is_file()
            && block_path(&blocks_dir, r, "scores").is_file()
    });
    if all_done {
        merge_blocks(&dir, &ranges, options.save_k)?;
        report.complete = true;
    }
    Ok(report)
}

fn merge_blocks(dir: &Path, ranges: &[std::ops::Range<usize>], save_k: usize) -> Result<()> {
    let blocks_dir = dir.join("blocks");
    let mut ids_out = ArrayWriter::<i64>::create(&dir.join("ids.bin"), IDS_KIND, &[save_k])?;
    let mut scores_out =
        ArrayWriter::<f32>::create(&dir.join("scores.bin"), SCORES_KIND, &[save_k])?;
    for range in ranges {
        ids_out.push(
            Array::<i64>::open(&block_path(&blocks_dir, range, "ids"), IDS_KIND)?.as_slice(),
        )?;
        scores_out.push(
            Array::<f32>::open(&block_path(&blocks_dir, range, "scores"), SCORES_KIND)?.as_slice(),
        )?;
    }
    scores_out.finish()?;
    ids_out.finish()?;
    std::fs::remove_dir_all(&blocks_dir)
        .with_context(|| format!("{}: cannot remove merged blocks", blocks_dir.display()))
}

/// The merged neighbour arrays of a DB.
pub struct Neighbors {
    ids: Array<i64>,
    scores: Array<f32>,
    pub meta: NeighborsMeta,
}

impl Neighbors {
    pub fn open(db: &ChunkDb) -> Result<Self> {
        let dir = neighbors_dir(&db.dir);
        let meta_path = dir.join("meta.json");
        let text = std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "{}: missing; run `retro db neighbors` first",
                meta_path.display()
            )
        })?;
        let meta: NeighborsMeta = serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt", meta_path.display()))?;
        let ids = Array::<i64>::open(&dir.join("ids.bin"), IDS_KIND)
            .context("neighbours are not finished; run `retro db neighbors`")?;
        let scores = Array::<f32>::open(&dir.join("scores.bin"), SCORES_KIND)?;
        if ids.shape() != [db.n_chunks(), meta.save_k] || scores.shape() != ids.shape() {
            bail!(
                "{}: neighbour arrays do not match the DB ({} chunks × {})",
                dir.display(),
                db.n_chunks(),
                meta.save_k
            );
        }
        Ok(Self { ids, scores, meta })
    }

    /// Saved neighbour chunk ids of `chunk` (-1 = none), best first.
    pub fn ids(&self, chunk: usize) -> &[i64] {
        self.ids.row(chunk)
    }

    pub fn scores(&self, chunk: usize) -> &[f32] {
        self.scores.row(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_own_document_and_pads() {
        // Chunks 0..6; documents: chunk / 2.
        let hits = vec![(0, 0.9), (1, 0.8), (4, 0.7), (5, 0.6), (2, 0.5)];
        let (ids, scores) = filter_neighbors(&hits, 0, 4, &|row| row as usize, &|c| c / 2);
        assert_eq!(ids, vec![4, 5, 2, -1]);
        assert_eq!(&scores[..3], &[0.7, 0.6, 0.5]);
        assert!(scores[3].is_nan());
        let (ids, _) = filter_neighbors(&hits, 2, 2, &|row| row as usize, &|c| c / 2);
        assert_eq!(ids, vec![0, 1]);
    }
}
