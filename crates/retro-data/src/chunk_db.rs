//! The chunk database: every document of the corpora cut into fixed-length chunks of GPT tokens, with the train /
//! validation split, stored as memory-mapped arrays in a DB directory.
//!
//! Files (all written through a temporary file and a rename; `db.json` last, so its presence means "chunking done"):
//!
//! | file | content |
//! |---|---|
//! | `db.json` | [`ChunkDbManifest`]: format version, chunk length, tokenizer hash, counts, corpora |
//! | `tokenizer.json` | a copy of the GPT tokenizer, so a DB can be read on its own |
//! | `chunk-tokens.bin` | `[n_chunks, m]` u16 (u32 when the vocabulary needs it), padded with the pad id |
//! | `chunk-meta.bin` | `[n_chunks, 2]` u32: document index, real length |
//! | `doc-meta.bin` | `[n_documents, 3]` u64: first chunk, chunk count, 1 if validation |
//! | `docs.jsonl` | per document, in order: `{"id", "title"}` |
//! | `train-chunks.bin` | `[n_chunks_train]` u32: chunk id of each row of the retrieval index |

use crate::array_file::{Array, ArrayWriter};
use crate::atomic_write::write_json_atomic;
use crate::chunk::{chunk_document, pad_chunk};
use crate::corpus::{
    read_documents, resolve_sources, Content, CorpusFormat, Document, ReadOptions,
};
use crate::split::is_valid_document;
use crate::tokenizer::GptTokenizer;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DB_FORMAT: &str = "retro-db";
pub const DB_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "db.json";

/// Options of the chunking stage.
#[derive(Debug, Clone)]
pub struct ChunkOptions {
    /// Tokens per chunk, `m` (paper: 64).
    pub chunk_len: usize,
    /// Fraction of documents held out for validation (never retrievable).
    pub valid_fraction: f64,
    pub split_seed: u64,
    pub read: ReadOptions,
    /// Documents tokenised together in one parallel batch.
    pub batch_documents: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            chunk_len: 64,
            valid_fraction: 0.02,
            split_seed: 1234,
            read: ReadOptions::default(),
            batch_documents: 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CorpusRecord {
    pub path: String,
    pub format: CorpusFormat,
    pub documents: usize,
    pub skipped_lines: usize,
    /// Documents with no tokens, which give no chunk and are not stored.
    pub empty_documents: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkDbManifest {
    pub format: String,
    pub version: u32,
    pub chunk_len: usize,
    pub tokenizer_sha256: String,
    pub pad_id: u32,
    pub vocab_size: usize,
    pub token_dtype: String,
    pub n_documents: usize,
    pub n_documents_valid: usize,
    pub n_chunks: usize,
    pub n_chunks_train: usize,
    pub n_chunks_valid: usize,
    pub n_tokens: usize,
    pub valid_fraction: f64,
    pub split_seed: u64,
    pub corpora: Vec<CorpusRecord>,
}

/// Per-document record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DocRecord {
    pub id: String,
    pub title: Option<String>,
}

enum TokenWriter {
    U16(ArrayWriter<u16>),
    U32(ArrayWriter<u32>),
}

impl TokenWriter {
    fn push_chunk(&mut self, tokens: &[u32], m: usize, pad_id: u32) -> Result<()> {
        match self {
            Self::U16(w) => w.push(&pad_chunk(
                &tokens.iter().map(|&t| t as u16).collect::<Vec<_>>(),
                m,
                pad_id as u16,
            )),
            Self::U32(w) => w.push(&pad_chunk(tokens, m, pad_id)),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Self::U16(w) => w.finish(),
            Self::U32(w) => w.finish(),
        }
    }
}

/// Reads, tokenises and chunks `corpora` into the DB directory `out`, streaming: memory holds one batch of
/// documents at a time. `on_progress(documents_done)` is called after each batch.
pub fn build_chunk_db(
    out: &Path,
    corpora: &[PathBuf],
    tokenizer: &GptTokenizer,
    options: &ChunkOptions,
    on_progress: &(dyn Fn(usize) + Sync),
) -> Result<ChunkDbManifest> {
    if options.chunk_len == 0 {
        bail!("--chunk-len must be positive");
    }
    if !(0.0..1.0).contains(&options.valid_fraction) {
        bail!(
            "--valid-fraction must be in [0, 1), got {}",
            options.valid_fraction
        );
    }
    let sources = resolve_sources(corpora)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create DB directory", out.display()))?;
    let m = options.chunk_len;
    let use_u16 = tokenizer.vocab_size <= 1 << 16;
    let mut tokens_out = if use_u16 {
        TokenWriter::U16(ArrayWriter::create(
            &out.join("chunk-tokens.bin"),
            "chunk-tokens",
            &[m],
        )?)
    } else {
        TokenWriter::U32(ArrayWriter::create(
            &out.join("chunk-tokens.bin"),
            "chunk-tokens",
            &[m],
        )?)
    };
    let mut chunk_meta =
        ArrayWriter::<u32>::create(&out.join("chunk-meta.bin"), "chunk-meta", &[2])?;
    let mut doc_meta = ArrayWriter::<u64>::create(&out.join("doc-meta.bin"), "doc-meta", &[3])?;
    let mut train_chunks =
        ArrayWriter::<u32>::create(&out.join("train-chunks.bin"), "train-chunks", &[])?;
    let docs_path = out.join("docs.jsonl");
    let docs_tmp = crate::atomic_write::temporary_path(&docs_path);
    let mut docs_out = std::io::BufWriter::new(
        std::fs::File::create(&docs_tmp)
            .with_context(|| format!("{}: cannot create", docs_tmp.display()))?,
    );
    // A Megatron dataset's documents end with an end-of-document token, which the reference drops (§3.1).
    let eod_id = tokenizer
        .inner()
        .token_to_id("<|endoftext|>")
        .unwrap_or(tokenizer.pad_id);

    let mut manifest = ChunkDbManifest {
        format: DB_FORMAT.into(),
        version: DB_VERSION,
        chunk_len: m,
        tokenizer_sha256: tokenizer.sha256.clone(),
        pad_id: tokenizer.pad_id,
        vocab_size: tokenizer.vocab_size,
        token_dtype: if use_u16 { "u16" } else { "u32" }.into(),
        n_documents: 0,
        n_documents_valid: 0,
        n_chunks: 0,
        n_chunks_train: 0,
        n_chunks_valid: 0,
        n_tokens: 0,
        valid_fraction: options.valid_fraction,
        split_seed: options.split_seed,
        corpora: Vec::new(),
    };
    let mut documents_seen = 0usize;
    for source in &sources {
        let mut record = CorpusRecord {
            path: source.path.display().to_string(),
            format: source.format,
            documents: 0,
            skipped_lines: 0,
            empty_documents: 0,
        };
        let mut skipped = None;
        let mut documents: Box<dyn Iterator<Item = Result<Document>> + Send> = match source.format {
            CorpusFormat::Jsonl => {
                let reader = crate::jsonl::JsonlReader::open(&source.path, options.read.clone())?;
                skipped = Some(reader.skipped.clone());
                Box::new(reader)
            }
            _ => read_documents(source, &options.read)?,
        };
        loop {
            let batch: Vec<Document> = documents
                .by_ref()
                .take(options.batch_documents)
                .collect::<Result<Vec<_>>>()?;
            if batch.is_empty() {
                break;
            }
            let tokenized: Vec<Vec<u32>> = batch
                .par_iter()
                .map(|doc| match &doc.content {
                    Content::Text(text) => tokenizer.encode(text),
                    Content::Tokens(tokens) => {
                        let mut tokens = tokens.clone();
                        if tokens.last() == Some(&eod_id) {
                            tokens.pop();
                        }
                        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= tokenizer.vocab_size) {
                            bail!("{}: document {}: token {bad} is outside the tokenizer's vocabulary ({})", source.path.display(), doc.id, tokenizer.vocab_size);
                        }
                        Ok(tokens)
                    }
                })
                .collect::<Result<_>>()?;
            for (doc, tokens) in batch.iter().zip(&tokenized) {
                record.documents += 1;
                if tokens.is_empty() {
                    record.empty_documents += 1;
                    continue;
                }
                let doc_idx = manifest.n_documents as u32;
                let valid = is_valid_document(&doc.id, options.split_seed, options.valid_fraction);
                let first_chunk = manifest.n_chunks;
                let ranges = chunk_document(tokens.len(), m);
                for range in &ranges {
                    tokens_out.push_chunk(&tokens[range.clone()], m, tokenizer.pad_id)?;
                    chunk_meta.push(&[doc_idx, range.len() as u32])?;
                    if !valid {
                        train_chunks.push(&[manifest.n_chunks as u32])?;
                    }
                    manifest.n_chunks += 1;
                }
                doc_meta.push(&[first_chunk as u64, ranges.len() as u64, valid as u64])?;
                serde_json::to_writer(
                    &mut docs_out,
                    &DocRecord {
                        id: doc.id.clone(),
                        title: doc.title.clone(),
                    },
                )?;
                docs_out.write_all(b"\n")?;
                manifest.n_documents += 1;
                manifest.n_tokens += tokens.len();
                if valid {
                    manifest.n_documents_valid += 1;
                    manifest.n_chunks_valid += ranges.len();
                } else {
                    manifest.n_chunks_train += ranges.len();
                }
            }
            documents_seen += batch.len();
            on_progress(documents_seen);
        }
        if manifest.n_chunks > u32::MAX as usize {
            bail!("more than 2^32 chunks: split the corpus into several DBs");
        }
        record.skipped_lines = skipped.map_or(0, |s| s.load(std::sync::atomic::Ordering::Relaxed));
        manifest.corpora.push(record);
    }
    if manifest.n_chunks == 0 {
        bail!(
            "empty corpus: no document with text in {}",
            sources
                .iter()
                .map(|s| s.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if manifest.n_chunks_train == 0 {
        bail!("every document fell into the validation split: lower --valid-fraction");
    }
    tokens_out.finish()?;
    chunk_meta.finish()?;
    doc_meta.finish()?;
    train_chunks.finish()?;
    let file = docs_out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    crate::atomic_write::commit_temporary(&docs_path)?;
    std::fs::copy(tokenizer.path(), out.join("tokenizer.json.tmp"))
        .with_context(|| format!("{}: cannot copy tokenizer", out.display()))?;
    crate::atomic_write::commit_temporary(&out.join("tokenizer.json"))?;
    write_json_atomic(&out.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

enum TokenArray {
    U16(Array<u16>),
    U32(Array<u32>),
}

/// A chunk database opened for reading. Cheap to share across threads.
pub struct ChunkDb {
    pub dir: PathBuf,
    pub manifest: ChunkDbManifest,
    tokens: TokenArray,
    chunk_meta: Array<u32>,
    doc_meta: Array<u64>,
    train_chunks: Array<u32>,
    docs: Vec<DocRecord>,
}

/// Information about one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    pub doc: usize,
    pub len: usize,
}

/// Information about one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocInfo {
    pub first_chunk: usize,
    pub n_chunks: usize,
    pub valid: bool,
    pub id: String,
    pub title: Option<String>,
}

impl ChunkDb {
    /// Opens the DB in `dir`, checking its manifest and every array's header against it.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        if !dir.is_dir() {
            bail!("{}: no such DB directory", dir.display());
        }
        let text = std::fs::read_to_string(&manifest_path).with_context(|| {
            format!(
                "{}: missing; is {} a retro DB whose chunk stage finished?",
                manifest_path.display(),
                dir.display()
            )
        })?;
        let manifest: ChunkDbManifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a retro DB manifest", manifest_path.display()))?;
        if manifest.format != DB_FORMAT {
            bail!(
                "{}: format {:?}, expected {DB_FORMAT:?}",
                manifest_path.display(),
                manifest.format
            );
        }
        if manifest.version != DB_VERSION {
            bail!(
                "{}: DB format version {}, this build reads version {DB_VERSION}; rebuild the DB with `retro db build`",
                manifest_path.display(),
                manifest.version
            );
        }
        let tokens_path = dir.join("chunk-tokens.bin");
        let tokens = if manifest.token_dtype == "u16" {
            TokenArray::U16(Array::open(&tokens_path, "chunk-tokens")?)
        } else {
            TokenArray::U32(Array::open(&tokens_path, "chunk-tokens")?)
        };
        let chunk_meta = Array::<u32>::open(&dir.join("chunk-meta.bin"), "chunk-meta")?;
        let doc_meta = Array::<u64>::open(&dir.join("doc-meta.bin"), "doc-meta")?;
        let train_chunks = Array::<u32>::open(&dir.join("train-chunks.bin"), "train-chunks")?;
        let token_shape = match &tokens {
            TokenArray::U16(a) => a.shape().to_vec(),
            TokenArray::U32(a) => a.shape().to_vec(),
        };
        let inconsistent = |what: &str| {
            anyhow::anyhow!(
                "{}: {what} does not match db.json (corrupt DB)",
                dir.display()
            )
        };
        if token_shape != [manifest.n_chunks, manifest.chunk_len] {
            return Err(inconsistent("chunk-tokens.bin"));
        }
        if chunk_meta.n_rows() != manifest.n_chunks {
            return Err(inconsistent("chunk-meta.bin"));
        }
        if doc_meta.n_rows() != manifest.n_documents {
            return Err(inconsistent("doc-meta.bin"));
        }
        if train_chunks.n_rows() != manifest.n_chunks_train {
            return Err(inconsistent("train-chunks.bin"));
        }
        let docs_path = dir.join("docs.jsonl");
        let docs_text = std::fs::read_to_string(&docs_path)
            .with_context(|| format!("{}: cannot read", docs_path.display()))?;
        let docs = docs_text
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!("{}:{}: corrupt document record", docs_path.display(), i + 1)
                })
            })
            .collect::<Result<Vec<DocRecord>>>()?;
        if docs.len() != manifest.n_documents {
            return Err(inconsistent("docs.jsonl"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            tokens,
            chunk_meta,
            doc_meta,
            train_chunks,
            docs,
        })
    }

    /// Loads the DB's own copy of the GPT tokenizer.
    pub fn tokenizer(&self) -> Result<GptTokenizer> {
        let tokenizer =
            GptTokenizer::load(&self.dir.join("tokenizer.json"), None).or_else(|_| {
                GptTokenizer::load(&self.dir.join("tokenizer.json"), Some("<|endoftext|>"))
            })?;
        tokenizer.check_matches(&self.manifest.tokenizer_sha256, &self.dir)?;
        Ok(tokenizer)
    }

    pub fn chunk_len(&self) -> usize {
        self.manifest.chunk_len
    }

    pub fn n_chunks(&self) -> usize {
        self.manifest.n_chunks
    }

    pub fn n_documents(&self) -> usize {
        self.manifest.n_documents
    }

    /// The padded row of chunk `i` (`m` tokens).
    pub fn padded_chunk(&self, i: usize) -> Vec<u32> {
        match &self.tokens {
            TokenArray::U16(a) => a.row(i).iter().map(|&t| t as u32).collect(),
            TokenArray::U32(a) => a.row(i).to_vec(),
        }
    }

    /// The real tokens of chunk `i` (padding removed).
    pub fn chunk_tokens(&self, i: usize) -> Vec<u32> {
        let mut tokens = self.padded_chunk(i);
        tokens.truncate(self.chunk_info(i).len);
        tokens
    }

    pub fn chunk_info(&self, i: usize) -> ChunkInfo {
        let row = self.chunk_meta.row(i);
        ChunkInfo {
            doc: row[0] as usize,
            len: row[1] as usize,
        }
    }

    pub fn doc_info(&self, doc: usize) -> DocInfo {
        let row = self.doc_meta.row(doc);
        let record = &self.docs[doc];
        DocInfo {
            first_chunk: row[0] as usize,
            n_chunks: row[1] as usize,
            valid: row[2] != 0,
            id: record.id.clone(),
            title: record.title.clone(),
        }
    }

    pub fn is_valid_chunk(&self, i: usize) -> bool {
        self.doc_meta.row(self.chunk_info(i).doc)[2] != 0
    }

    /// The next chunk of the same document, if any: a neighbour's continuation. (The reference takes the next DB row,
    /// which may belong to another document; see docs/deviations.md.)
    pub fn continuation(&self, i: usize) -> Option<usize> {
        let next = i + 1;
        (next < self.n_chunks() && self.chunk_info(next).doc == self.chunk_info(i).doc)
            .then_some(next)
    }

    /// Chunk ids of the retrievable (train) chunks, in index-row order.
    pub fn train_chunk_ids(&self) -> &[u32] {
        self.train_chunks.as_slice()
    }

    /// The text of chunk `i`: its tokens decoded, padding removed.
    pub fn chunk_text(&self, i: usize, tokenizer: &GptTokenizer) -> Result<String> {
        tokenizer.decode(&self.chunk_tokens(i))
    }
}
