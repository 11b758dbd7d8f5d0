//! Embedding stage: every chunk (train and valid) → BERT vector, saved per block as f16.
//!
//! A chunk's text is its GPT tokens decoded with padding removed, re-tokenised by the BERT tokenizer and truncated to
//! max_seq_length (reference §3.2). Blocks live in `DB/embeddings/` as `START-END.bin` arrays `[n, d]` f16.

use crate::blocks::{block_path, block_ranges, Shard};
use crate::embedder::{Embedder, EmbedderSpec};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use retro_data::array_file::{write_array, Array};
use retro_data::atomic_write::write_json_atomic;
use retro_data::{ChunkDb, GptTokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const EMBEDDINGS_DIR: &str = "embeddings";
pub const EMBEDDINGS_KIND: &str = "embeddings";

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub block_size: usize,
    pub batch_size: usize,
    pub shard: Shard,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            block_size: 4096,
            batch_size: 64,
            shard: Shard::ALL,
        }
    }
}

/// `embeddings/meta.json`: what made the blocks, so that blocks from different settings are never mixed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingsMeta {
    pub embedder: String,
    pub embedder_sha256: String,
    pub spec: EmbedderSpec,
    pub block_size: usize,
    pub n_chunks: usize,
}

pub fn embeddings_dir(db: &Path) -> PathBuf {
    db.join(EMBEDDINGS_DIR)
}

/// SHA-256 over the embedder's config and weights, so a DB knows which model made its vectors.
pub fn embedder_sha256(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                || p.file_name().is_some_and(|n| n == "config.json")
        })
        .collect();
    files.sort();
    for file in files {
        hasher.update(
            std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?,
        );
    }
    Ok(retro_data::tokenizer::hex(&hasher.finalize()))
}

pub fn read_meta(db: &Path) -> Result<EmbeddingsMeta> {
    let path = embeddings_dir(db).join("meta.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: missing; run `retro db embed` first", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt embeddings metadata", path.display()))
}

/// Summary of one embedding run.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    pub blocks_total: usize,
    pub blocks_done_before: usize,
    pub blocks_done_now: usize,
    pub chunks_embedded: usize,
    pub complete: bool,
}

/// Embeds the chunks of `db` block by block, skipping blocks already on disk. `on_block(chunks_in_block)` is called
/// after each block is written.
pub fn embed_db(
    db: &ChunkDb,
    tokenizer: &GptTokenizer,
    embedder: &Embedder,
    options: &EmbedOptions,
    on_block: &dyn Fn(usize),
) -> Result<EmbedReport> {
    let dir = embeddings_dir(&db.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let meta = EmbeddingsMeta {
        embedder: std::fs::canonicalize(&embedder.dir)
            .unwrap_or(embedder.dir.clone())
            .display()
            .to_string(),
        embedder_sha256: embedder_sha256(&embedder.dir)?,
        spec: embedder.spec.clone(),
        block_size: options.block_size,
        n_chunks: db.n_chunks(),
    };
    let meta_path = dir.join("meta.json");
    if meta_path.is_file() {
        let old = read_meta(&db.dir)?;
        if old.embedder_sha256 != meta.embedder_sha256
            || old.spec != meta.spec
            || old.block_size != meta.block_size
            || old.n_chunks != meta.n_chunks
        {
            bail!(
                "{}: existing embeddings were made with other settings (embedder, pooling or --block-size {}); use the same settings or delete {}",
                meta_path.display(),
                old.block_size,
                dir.display()
            );
        }
    } else {
        write_json_atomic(&meta_path, &meta)?;
    }
    let ranges = block_ranges(db.n_chunks(), options.block_size);
    let mut report = EmbedReport {
        blocks_total: ranges.len(),
        blocks_done_before: 0,
        blocks_done_now: 0,
        chunks_embedded: 0,
        complete: false,
    };
    for (block_idx, range) in ranges.iter().enumerate() {
        let path = block_path(&dir, range, "bin");
        if block_is_done(&path, range.len(), meta.spec.dim) {
            report.blocks_done_before += 1;
            on_block(range.len());
            continue;
        }
        if !options.shard.owns(block_idx) {
            continue;
        }
        let texts: Vec<String> = range
            .clone()
            .into_par_iter()
            .map(|chunk| db.chunk_text(chunk, tokenizer))
            .collect::<Result<_>>()?;
        tracing::info!(
            block = block_idx,
            start = range.start,
            end = range.end,
            "embedding block"
        );
        let vectors = embedder.embed(&texts, options.batch_size)?;
        let flat: Vec<half::f16> = vectors
            .iter()
            .flatten()
            .map(|&x| half::f16::from_f32(x))
            .collect();
        write_array(&path, EMBEDDINGS_KIND, &[range.len(), meta.spec.dim], &flat)?;
        report.blocks_done_now += 1;
        report.chunks_embedded += range.len();
        on_block(range.len());
    }
    report.complete = ranges
        .iter()
        .all(|r| block_is_done(&block_path(&dir, r, "bin"), r.len(), meta.spec.dim));
    Ok(report)
}

fn block_is_done(path: &Path, n_rows: usize, dim: usize) -> bool {
    Array::<half::f16>::open(path, EMBEDDINGS_KIND).is_ok_and(|a| a.shape() == [n_rows, dim])
}

/// Read access to the finished embedding blocks of a DB.
pub struct Embeddings {
    blocks: Vec<(std::ops::Range<usize>, Array<half::f16>)>,
    pub meta: EmbeddingsMeta,
}

impl Embeddings {
    /// Opens every block; fails naming the first missing one.
    pub fn open(db: &ChunkDb) -> Result<Self> {
        let meta = read_meta(&db.dir)?;
        if meta.n_chunks != db.n_chunks() {
            bail!(
                "{}: embeddings cover {} chunks, the DB has {}",
                embeddings_dir(&db.dir).display(),
                meta.n_chunks,
                db.n_chunks()
            );
        }
        let dir = embeddings_dir(&db.dir);
        let blocks = block_ranges(db.n_chunks(), meta.block_size)
            .into_iter()
            .map(|range| {
                let path = block_path(&dir, &range, "bin");
                let array =
                    Array::<half::f16>::open(&path, EMBEDDINGS_KIND).with_context(|| {
                        format!(
                            "embedding block {}..{} is not done; run `retro db embed`",
                            range.start, range.end
                        )
                    })?;
                if array.shape() != [range.len(), meta.spec.dim] {
                    bail!(
                        "{}: shape {:?}, expected [{}, {}]",
                        path.display(),
                        array.shape(),
                        range.len(),
                        meta.spec.dim
                    );
                }
                Ok((range, array))
            })
            .collect::<Result<_>>()?;
        Ok(Self { blocks, meta })
    }

    pub fn dim(&self) -> usize {
        self.meta.spec.dim
    }

    /// The embedding blocks with their chunk ranges.
    pub fn blocks(&self) -> impl Iterator<Item = (&std::ops::Range<usize>, &Array<half::f16>)> {
        self.blocks.iter().map(|(r, a)| (r, a))
    }

    /// The f32 vector of chunk `i`.
    pub fn vector(&self, i: usize) -> Vec<f32> {
        let block = i / self.meta.block_size;
        let (range, array) = &self.blocks[block];
        array
            .row(i - range.start)
            .iter()
            .map(|x| x.to_f32())
            .collect()
    }

    /// f32 vectors of the given chunks, concatenated.
    pub fn gather(&self, chunks: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(chunks.len() * self.dim());
        for &c in chunks {
            out.extend(self.vector(c));
        }
        out
    }
}
