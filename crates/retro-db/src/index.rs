//! The retrieval index: a Faiss index over the embeddings of the train chunks, built from a factory string.
//!
//! Rows of the index are the train chunks in order (`train-chunks.bin` maps a row to its chunk id), so no id map is
//! needed whatever the index type. The structure is fixed when the index is trained; search settings (nprobe,
//! efSearch) are applied at query time (Faiss's `ParameterSpace`). Files in `DB/index/`:
//! `index.json` ([`IndexMeta`]), `trained.faissindex` (after training), `adding.faissindex` + `adding.json` (resume
//! point while adding), `index.faissindex` (finished).

use crate::embed::Embeddings;
use anyhow::{anyhow, bail, Context, Result};
use faiss::{Index, MetricType};
use retro_data::atomic_write::{commit_temporary, temporary_path, write_json_atomic};
use retro_data::ChunkDb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const INDEX_DIR: &str = "index";

/// Faiss's k-means wants at least this many training points per centroid (`min_points_per_centroid` in
/// faiss/Clustering.h, which only warns: the caller has to check).
pub const MIN_POINTS_PER_CENTROID: usize = 39;
/// PQ with 8-bit codes trains 256 centroids per sub-quantizer.
const PQ_CENTROIDS: usize = 256;

/// Picks a factory string in the paper's family, `OPQ{m}_{d},IVF{nlist}_HNSW32,PQ{m}np`, sized to `n_train` vectors of
/// dimension `dim`; `Flat` (exact search) when the corpus is too small to train IVF and PQ. The reference used fixed
/// strings such as `IVF65536_HNSW8` and failed on small corpora (reference §8, item 1).
pub fn auto_factory(n_train: usize, dim: usize) -> String {
    let nlist_target = (4.0 * (n_train as f64).sqrt()).round() as usize;
    let nlist_max = n_train / MIN_POINTS_PER_CENTROID;
    let nlist = nlist_target.min(nlist_max);
    if nlist < 64 || n_train < MIN_POINTS_PER_CENTROID * PQ_CENTROIDS {
        return "Flat".to_string();
    }
    // One byte per 8 dimensions keeps recall high for sentence embeddings (PQ48 for 384-d MiniLM), and m must divide
    // the OPQ output dimension.
    let pq_m = [64, 48, 32, 24, 16, 8]
        .into_iter()
        .find(|&m| dim % m == 0 && m <= dim / 8)
        .unwrap_or(8);
    // `np`: no polysemous training. Faiss otherwise reorders PQ codes by simulated annealing for Hamming filtering,
    // which we never use; on the 20k-chunk wiki DB it took 282 s of a 319 s training (docs/benchmarks.md).
    format!("OPQ{pq_m}_{dim},IVF{nlist}_HNSW32,PQ{pq_m}np")
}

/// Default search settings for a factory string: chosen so that self-recall@2 >= 0.95 on our corpora.
pub fn default_search_params(factory: &str) -> SearchParams {
    match ivf_nlist(factory) {
        // On the wiki DB (532 lists) self-recall@2 is 0.994 from nprobe 16 up; recall@10 is bounded by PQ (0.80-0.82).
        Some(nlist) => SearchParams {
            nprobe: Some((nlist / 16).clamp(16, 256).min(nlist)),
            ef_search: Some(64),
        },
        None => SearchParams {
            nprobe: None,
            ef_search: if factory.contains("HNSW") {
                Some(128)
            } else {
                None
            },
        },
    }
}

fn ivf_nlist(factory: &str) -> Option<usize> {
    let start = factory.find("IVF")? + 3;
    let digits: String = factory[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchParams {
    pub nprobe: Option<usize>,
    pub ef_search: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexMeta {
    pub factory: String,
    pub metric: String,
    pub dim: usize,
    pub n_train_sample: usize,
    pub sample_seed: u64,
    pub search: SearchParams,
    pub ntotal: usize,
}

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// `auto` or a Faiss factory string.
    pub factory: String,
    /// Vectors to train on; `None` = every train chunk, capped at 256 per IVF list (and all of a small corpus).
    pub train_sample: Option<usize>,
    pub sample_seed: u64,
    /// Search settings stored with the index; a field left `None` takes the default for the factory string.
    pub search: SearchParams,
    /// Train chunks added between checkpoints.
    pub add_block_size: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            factory: "auto".into(),
            train_sample: None,
            sample_seed: 1234,
            search: SearchParams::default(),
            add_block_size: 65536,
        }
    }
}

pub fn index_dir(db: &Path) -> PathBuf {
    db.join(INDEX_DIR)
}

pub fn index_path(db: &Path) -> PathBuf {
    index_dir(db).join("index.faissindex")
}

fn faiss_err(path: &Path, what: &str) -> impl FnOnce(faiss::error::Error) -> anyhow::Error {
    let path = path.display().to_string();
    let what = what.to_string();
    move |e| anyhow!("{path}: {what}: {e}")
}

/// A deterministic sample of `n` distinct row numbers out of `0..total` (splitmix64-driven partial Fisher–Yates),
/// returned sorted.
pub fn sample_rows(total: usize, n: usize, seed: u64) -> Vec<usize> {
    if n >= total {
        return (0..total).collect();
    }
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut rows: Vec<usize> = (0..total).collect();
    for i in 0..n {
        let j = i + (next() % (total - i) as u64) as usize;
        rows.swap(i, j);
    }
    let mut sample = rows[..n].to_vec();
    sample.sort_unstable();
    sample
}

/// Summary of an index build.
#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub factory: String,
    pub trained_now: bool,
    pub rows_added_now: usize,
    pub ntotal: usize,
}

/// Trains the index (unless `trained.faissindex` exists), then adds the train chunks' embeddings in blocks, writing a
/// resume point after each, and finally writes `index.faissindex` atomically. `on_added(rows)` reports progress.
pub fn build_index(
    db: &ChunkDb,
    embeddings: &Embeddings,
    options: &IndexOptions,
    on_added: &dyn Fn(usize),
) -> Result<IndexReport> {
    let dir = index_dir(&db.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let train_rows = db.train_chunk_ids();
    let n_train = train_rows.len();
    let dim = embeddings.dim();
    let factory = if options.factory == "auto" {
        auto_factory(n_train, dim)
    } else {
        options.factory.clone()
    };
    if let Some(nlist) = ivf_nlist(&factory) {
        if nlist > n_train {
            bail!("--index {factory}: {nlist} IVF lists need at least {nlist} train chunks, the DB has {n_train}; use --index auto");
        }
    }
    // Fail on a string Faiss rejects before touching anything on disk.
    FactoryIndex::new(&factory, dim)?;
    let default_sample = match ivf_nlist(&factory) {
        Some(nlist) => n_train.min((nlist * 256).max(PQ_CENTROIDS * MIN_POINTS_PER_CENTROID * 2)),
        None => n_train.min(PQ_CENTROIDS * MIN_POINTS_PER_CENTROID * 4),
    };
    let n_sample = options.train_sample.unwrap_or(default_sample).min(n_train);
    let defaults = default_search_params(&factory);
    let search = SearchParams {
        nprobe: options.search.nprobe.or(defaults.nprobe),
        ef_search: options.search.ef_search.or(defaults.ef_search),
    };
    let meta = IndexMeta {
        factory: factory.clone(),
        metric: "inner_product".into(),
        dim,
        n_train_sample: n_sample,
        sample_seed: options.sample_seed,
        search,
        ntotal: 0,
    };
    let meta_path = dir.join("index.json");
    if let Ok(text) = std::fs::read_to_string(&meta_path) {
        let old: IndexMeta = serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt", meta_path.display()))?;
        if old.factory != meta.factory
            || old.n_train_sample != meta.n_train_sample
            || old.sample_seed != meta.sample_seed
        {
            bail!(
                "{}: an index {:?} trained on {} vectors exists; use the same options or delete {}",
                meta_path.display(),
                old.factory,
                old.n_train_sample,
                dir.display()
            );
        }
        if index_path(&db.dir).is_file() && old.ntotal == n_train {
            return Ok(IndexReport {
                factory,
                trained_now: false,
                rows_added_now: 0,
                ntotal: n_train,
            });
        }
    }
    write_json_atomic(&meta_path, &meta)?;

    let trained_path = dir.join("trained.faissindex");
    let mut trained_now = false;
    if !trained_path.is_file() {
        let mut index = FactoryIndex::new(&factory, dim)?;
        let sample = sample_rows(n_train, n_sample, options.sample_seed);
        let chunks: Vec<usize> = sample.iter().map(|&r| train_rows[r] as usize).collect();
        let vectors = embeddings.gather(&chunks);
        tracing::info!(factory, n_sample, "training index");
        index.train(&vectors)?;
        index.write(&trained_path)?;
        trained_now = true;
    }

    // Resume point: `adding.faissindex` holds the first `rows` train rows.
    let adding_path = dir.join("adding.faissindex");
    let adding_meta = dir.join("adding.json");
    let (mut index, mut rows_done) = match std::fs::read_to_string(&adding_meta) {
        Ok(text) if adding_path.is_file() => {
            let rows: usize = serde_json::from_str::<serde_json::Value>(&text)?
                .get("rows")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| anyhow!("{}: corrupt", adding_meta.display()))?
                as usize;
            let index = FactoryIndex::read(&adding_path, &factory)?;
            if index.ntotal() != rows {
                bail!(
                    "{}: holds {} vectors, adding.json says {rows}; delete both to restart adding",
                    adding_path.display(),
                    index.ntotal()
                );
            }
            (index, rows)
        }
        _ => (FactoryIndex::read(&trained_path, &factory)?, 0),
    };
    on_added(rows_done);
    let rows_before = rows_done;
    while rows_done < n_train {
        let end = (rows_done + options.add_block_size).min(n_train);
        let chunks: Vec<usize> = train_rows[rows_done..end]
            .iter()
            .map(|&c| c as usize)
            .collect();
        index.add(&embeddings.gather(&chunks))?;
        on_added(end - rows_done);
        rows_done = end;
        if rows_done < n_train {
            index.write(&adding_path)?;
            write_json_atomic(&adding_meta, &serde_json::json!({ "rows": rows_done }))?;
        }
    }
    index.write(&index_path(&db.dir))?;
    write_json_atomic(
        &meta_path,
        &IndexMeta {
            ntotal: n_train,
            ..meta
        },
    )?;
    let _ = std::fs::remove_file(&adding_path);
    let _ = std::fs::remove_file(&adding_meta);
    Ok(IndexReport {
        factory,
        trained_now,
        rows_added_now: rows_done - rows_before,
        ntotal: n_train,
    })
}

pub fn write_index_atomic(index: &faiss::index::IndexImpl, path: &Path) -> Result<()> {
    let tmp = temporary_path(path);
    faiss::write_index(
        index,
        tmp.to_str()
            .ok_or_else(|| anyhow!("{}: path is not UTF-8", tmp.display()))?,
    )
    .map_err(faiss_err(&tmp, "cannot write index"))?;
    commit_temporary(path)
}

/// A Faiss index built from a factory string, with the calls retro needs and errors that say what failed.
pub struct FactoryIndex {
    index: faiss::index::IndexImpl,
    pub factory: String,
    pub dim: usize,
}

impl FactoryIndex {
    pub fn new(factory: &str, dim: usize) -> Result<Self> {
        let index =
            faiss::index_factory(dim as u32, factory, MetricType::InnerProduct).map_err(|e| {
                anyhow!("--index {factory:?}: Faiss cannot build this factory string: {e}")
            })?;
        Ok(Self {
            index,
            factory: factory.to_string(),
            dim,
        })
    }

    /// Reads an index file, memory-mapped where Faiss allows it.
    pub fn read(path: &Path, factory: &str) -> Result<Self> {
        Self::read_with(path, factory, true)
    }

    /// Reads an index file into memory, as Python's `faiss.read_index` does (benchmarks compare
    /// the two on the same file).
    pub fn read_in_memory(path: &Path, factory: &str) -> Result<Self> {
        Self::read_with(path, factory, false)
    }

    fn read_with(path: &Path, factory: &str, mmap: bool) -> Result<Self> {
        let path_str = path
            .to_str()
            .ok_or_else(|| anyhow!("{}: path is not UTF-8", path.display()))?;
        let mapped = mmap
            .then(|| {
                faiss::index::io::read_index_with_flags(
                    path_str,
                    faiss::index::io_flags::IoFlags::MEM_MAP,
                )
                .ok()
            })
            .flatten();
        let index = match mapped {
            Some(index) => index,
            None => faiss::read_index(path_str).map_err(faiss_err(
                path,
                "not a readable Faiss index (truncated or foreign?)",
            ))?,
        };
        let dim = index.d() as usize;
        Ok(Self {
            index,
            factory: factory.to_string(),
            dim,
        })
    }

    pub fn train(&mut self, vectors: &[f32]) -> Result<()> {
        self.index
            .train(vectors)
            .map_err(|e| anyhow!("training index {} failed: {e}", self.factory))
    }

    pub fn add(&mut self, vectors: &[f32]) -> Result<()> {
        self.index
            .add(vectors)
            .map_err(|e| anyhow!("adding to index {} failed: {e}", self.factory))
    }

    pub fn ntotal(&self) -> usize {
        self.index.ntotal() as usize
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_index_atomic(&self.index, path)
    }

    /// Applies nprobe / efSearch where the index type has them.
    pub fn set_search_params(&mut self, search: SearchParams) -> Result<()> {
        let space =
            faiss::index::autotune::ParameterSpace::new().map_err(|e| anyhow!("Faiss: {e}"))?;
        if let Some(nprobe) = search.nprobe.filter(|_| self.factory.contains("IVF")) {
            space
                .set_index_parameter(&self.index, "nprobe", nprobe as f64)
                .map_err(|e| anyhow!("cannot set nprobe: {e}"))?;
        }
        if let Some(ef) = search.ef_search.filter(|_| self.factory.contains("HNSW")) {
            let name = if self.factory.contains("IVF") {
                "quantizer_efSearch"
            } else {
                "efSearch"
            };
            space
                .set_index_parameter(&self.index, name, ef as f64)
                .map_err(|e| anyhow!("cannot set {name}: {e}"))?;
        }
        Ok(())
    }

    /// Searches `queries` (`n × dim`, concatenated); returns per query `(row, score)` pairs, best first, -1 rows
    /// dropped.
    pub fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<(i64, f32)>>> {
        let k = k.min(self.ntotal()).max(1);
        let result = {
            let _blas = crate::native_threads::SingleThreadedBlas::new();
            self.index
                .search(queries, k)
                .map_err(|e| anyhow!("Faiss search failed: {e}"))?
        };
        let n = queries.len() / self.dim;
        Ok((0..n)
            .map(|q| {
                (0..k)
                    .filter_map(|j| {
                        let label = result.labels[q * k + j].get()?;
                        Some((label as i64, result.distances[q * k + j]))
                    })
                    .collect()
            })
            .collect())
    }
}

/// A finished index of a DB opened for search, with its settings applied.
pub struct RetrievalIndex {
    index: FactoryIndex,
    pub meta: IndexMeta,
}

impl RetrievalIndex {
    /// Opens `DB/index/index.faissindex` (memory-mapped where Faiss allows it) and applies the search settings.
    pub fn open(db: &Path, search: Option<SearchParams>) -> Result<Self> {
        let meta_path = index_dir(db).join("index.json");
        let text = std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "{}: missing; run `retro db index` first",
                meta_path.display()
            )
        })?;
        let meta: IndexMeta = serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt", meta_path.display()))?;
        let path = index_path(db);
        if !path.is_file() {
            bail!(
                "{}: missing; the index stage has not finished (run `retro db index`)",
                path.display()
            );
        }
        let index = FactoryIndex::read(&path, &meta.factory)?;
        if index.ntotal() != meta.ntotal || index.dim != meta.dim {
            bail!(
                "{}: holds {} vectors of dimension {}, index.json says {} of {}",
                path.display(),
                index.ntotal(),
                index.dim,
                meta.ntotal,
                meta.dim
            );
        }
        let mut this = Self { index, meta };
        let search = search.unwrap_or(this.meta.search);
        this.set_search_params(search)?;
        Ok(this)
    }

    pub fn set_search_params(&mut self, search: SearchParams) -> Result<()> {
        self.index.set_search_params(search)?;
        self.meta.search = search;
        Ok(())
    }

    pub fn ntotal(&self) -> usize {
        self.meta.ntotal
    }

    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    /// Searches `queries`; rows are index rows (train chunk order).
    pub fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<(i64, f32)>>> {
        self.index.search(queries, k)
    }

    /// Bytes of the index file on disk.
    pub fn file_bytes(db: &Path) -> u64 {
        std::fs::metadata(index_path(db))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_factory_scales_with_corpus() {
        assert_eq!(auto_factory(500, 384), "Flat");
        assert_eq!(auto_factory(9000, 384), "Flat");
        let f = auto_factory(20_000, 384);
        assert!(
            f.starts_with("OPQ48_384,IVF") && f.ends_with("_HNSW32,PQ48np"),
            "{f}"
        );
        // nlist near 4·sqrt(N) but never fewer than 39 training vectors per list.
        for n in [12_000usize, 20_000, 100_000, 10_000_000] {
            let f = auto_factory(n, 384);
            let nlist = ivf_nlist(&f).unwrap();
            assert!(nlist * MIN_POINTS_PER_CENTROID <= n, "{f} for {n}");
            assert!(nlist as f64 <= 4.0 * (n as f64).sqrt() + 1.0, "{f} for {n}");
        }
        assert_eq!(ivf_nlist(&auto_factory(10_000_000, 384)), Some(12649));
    }

    #[test]
    fn sample_is_deterministic_and_distinct() {
        let a = sample_rows(1000, 100, 7);
        assert_eq!(a, sample_rows(1000, 100, 7));
        assert_ne!(a, sample_rows(1000, 100, 8));
        let mut d = a.clone();
        d.dedup();
        assert_eq!(d.len(), 100);
        assert_eq!(sample_rows(10, 20, 1), (0..10).collect::<Vec<_>>());
    }
}
