//! `retro db …`: build a retrieval database stage by stage, and inspect or search it.

use crate::progress::{bar, spinner};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use retro_data::chunk_db::MANIFEST_FILE;
use retro_data::{build_chunk_db, ChunkDb, ChunkOptions, GptTokenizer, ReadOptions};
use retro_db::{
    build_index, db_stats, embed_db, neighbor_hits, query_neighbors, EmbedOptions, Embedder,
    Embeddings, IndexOptions, NeighborOptions, Neighbors, Pooling, RetrievalDb, RetrievalIndex,
    SearchParams, Shard,
};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Run every stage: chunk, embed, index, neighbors. Finished stages and blocks are skipped, so rerunning after a
    /// crash or `kill -9` resumes.
    Build(BuildArgs),
    /// Stage 1: read, tokenise and chunk the corpora into a new DB directory.
    Chunk(ChunkArgs),
    /// Stage 2: embed every chunk with BERT, block by block (resumable, shardable).
    Embed(EmbedArgs),
    /// Stage 3: train the Faiss index on a sample and add every train chunk (resumable).
    Index(IndexArgs),
    /// Stage 4 with only DB: query and save the neighbours of every chunk (resumable, shardable).
    /// With DB CHUNK: show that chunk and its saved neighbours with their continuations.
    Neighbors(NeighborsArgs),
    /// Search the DB with free text.
    Search(SearchArgs),
    /// Documents, chunks, split, index type and size, and recall measured on a sample.
    Stats(StatsArgs),
}

#[derive(Args, Clone)]
pub struct ChunkFlags {
    /// Corpus input, repeatable: .jsonl, .jsonl.gz, .txt, a Megatron PREFIX (PREFIX.bin + PREFIX.idx), or a directory.
    #[arg(long = "corpus", required = true)]
    corpora: Vec<PathBuf>,
    /// The GPT's tokenizer.json (or a directory holding one).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Tokens per chunk (m).
    #[arg(long, default_value_t = 64)]
    chunk_len: usize,
    /// Fraction of documents held out for validation; their chunks get neighbours but are never retrievable.
    #[arg(long, default_value_t = 0.02)]
    valid_fraction: f64,
    /// Seed of the hash that picks validation documents.
    #[arg(long, default_value_t = 1234)]
    split_seed: u64,
    /// jsonl field holding the document text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Skip malformed jsonl lines (and count them) instead of stopping at the first.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Token that pads a document's last chunk (default: the tokenizer's pad/EOS token).
    #[arg(long)]
    pad_token: Option<String>,
}

#[derive(Args, Clone)]
pub struct EmbedFlags {
    /// HF BERT directory (config.json, tokenizer.json, *.safetensors, sentence-transformers modules.json).
    #[arg(long)]
    embedder: PathBuf,
    /// Override the model's pooling: mean (sentence-transformers), megatron (mean without CLS/SEP, the reference), cls.
    #[arg(long)]
    pooling: Option<Pooling>,
    /// Chunks per block: the unit of saving, resuming and sharding.
    #[arg(long, default_value_t = 4096)]
    block_size: usize,
    /// Texts per BERT batch (batches are sorted by length).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Do only blocks I, I+N, I+2N, … (e.g. one task of a Slurm or Kubernetes job array).
    #[arg(long)]
    shard: Option<Shard>,
}

#[derive(Args, Clone)]
pub struct IndexFlags {
    /// `auto` (sized to the corpus, OPQ/IVF-HNSW/PQ or Flat) or any Faiss factory string.
    #[arg(long = "index", default_value = "auto")]
    factory: String,
    /// Train chunks sampled (deterministically) to train the index.
    #[arg(long)]
    train_sample: Option<usize>,
    #[command(flatten)]
    search: SearchFlags,
}

#[derive(Args, Clone, Default)]
pub struct SearchFlags {
    /// IVF lists probed per query (default: chosen for self-recall@2 >= 0.95).
    #[arg(long)]
    nprobe: Option<usize>,
    /// HNSW efSearch of the coarse quantizer.
    #[arg(long)]
    ef_search: Option<usize>,
}

impl SearchFlags {
    fn params(&self, defaults: SearchParams) -> Option<SearchParams> {
        (self.nprobe.is_some() || self.ef_search.is_some()).then(|| SearchParams {
            nprobe: self.nprobe.or(defaults.nprobe),
            ef_search: self.ef_search.or(defaults.ef_search),
        })
    }
}

#[derive(Args, Clone)]
pub struct NeighborFlags {
    /// Hits fetched per chunk before same-document hits are dropped.
    #[arg(long, default_value_t = 200)]
    query_k: usize,
    /// Neighbours saved per chunk (padded with -1).
    #[arg(long, default_value_t = 20)]
    save_k: usize,
}

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    chunk: ChunkFlags,
    #[command(flatten)]
    embed: EmbedFlags,
    #[command(flatten)]
    index: IndexFlags,
    #[command(flatten)]
    neighbors: NeighborFlags,
    /// The DB directory to create or resume.
    #[arg(long)]
    out: PathBuf,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ChunkArgs {
    #[command(flatten)]
    chunk: ChunkFlags,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EmbedArgs {
    db: PathBuf,
    #[command(flatten)]
    embed: EmbedFlags,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IndexArgs {
    db: PathBuf,
    #[command(flatten)]
    index: IndexFlags,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NeighborsArgs {
    db: PathBuf,
    /// Show this chunk's neighbours instead of running the stage.
    chunk: Option<usize>,
    #[command(flatten)]
    neighbors: NeighborFlags,
    /// Chunks per block (stage only).
    #[arg(long, default_value_t = 4096)]
    block_size: usize,
    /// Do only blocks I, I+N, … (stage only).
    #[arg(long)]
    shard: Option<Shard>,
    #[command(flatten)]
    search: SearchFlags,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    db: PathBuf,
    /// The query text.
    query: String,
    /// Number of chunks to show.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// Embedder directory, when it moved since the DB was built.
    #[arg(long)]
    embedder: Option<PathBuf>,
    #[command(flatten)]
    search: SearchFlags,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatsArgs {
    db: PathBuf,
    /// Train chunks sampled to measure recall.
    #[arg(long, default_value_t = 1000)]
    sample: usize,
    #[command(flatten)]
    search: SearchFlags,
    #[arg(long)]
    json: bool,
}

pub fn run(command: DbCommand) -> Result<()> {
    match command {
        DbCommand::Build(args) => build(args),
        DbCommand::Chunk(args) => {
            let manifest = chunk_stage(&args.out, &args.chunk)?;
            print_report(
                args.json,
                &manifest,
                &format!(
                    "{} chunks from {} documents",
                    manifest.n_chunks, manifest.n_documents
                ),
            )
        }
        DbCommand::Embed(args) => {
            let report = embed_stage(&args.db, &args.embed)?;
            print_report(
                args.json,
                &report,
                &format!(
                    "{} of {} blocks embedded",
                    report.blocks_done_before + report.blocks_done_now,
                    report.blocks_total
                ),
            )
        }
        DbCommand::Index(args) => {
            let report = index_stage(&args.db, &args.index)?;
            print_report(
                args.json,
                &report,
                &format!("index {} holds {} chunks", report.factory, report.ntotal),
            )
        }
        DbCommand::Neighbors(args) => match args.chunk {
            Some(chunk) => show_neighbors(&args.db, chunk, args.json),
            None => {
                let options = neighbor_options(&args.neighbors, args.block_size, args.shard);
                let report = neighbors_stage(&args.db, &options, &args.search)?;
                print_report(
                    args.json,
                    &report,
                    &format!(
                        "neighbours: {} blocks done now, complete: {}",
                        report.blocks_done_now, report.complete
                    ),
                )
            }
        },
        DbCommand::Search(args) => search(args),
        DbCommand::Stats(args) => stats(args),
    }
}

fn print_report<T: serde::Serialize>(json: bool, report: &T, human: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{human}");
    }
    Ok(())
}

fn neighbor_options(
    flags: &NeighborFlags,
    block_size: usize,
    shard: Option<Shard>,
) -> NeighborOptions {
    NeighborOptions {
        query_k: flags.query_k,
        save_k: flags.save_k,
        block_size,
        shard: shard.unwrap_or(Shard::ALL),
    }
}

/// Chunks the corpora unless `out` already holds a finished chunk stage made with the same tokenizer and chunk length.
fn chunk_stage(out: &Path, flags: &ChunkFlags) -> Result<retro_data::ChunkDbManifest> {
    let tokenizer = GptTokenizer::load(&flags.tokenizer, flags.pad_token.as_deref())?;
    if out.join(MANIFEST_FILE).is_file() {
        let db = ChunkDb::open(out)?;
        tokenizer.check_matches(&db.manifest.tokenizer_sha256, out)?;
        if db.manifest.chunk_len != flags.chunk_len {
            bail!(
                "{}: DB has chunk length {}, --chunk-len is {}",
                out.display(),
                db.manifest.chunk_len,
                flags.chunk_len
            );
        }
        tracing::info!("chunk stage already done in {}", out.display());
        return Ok(db.manifest);
    }
    let options = ChunkOptions {
        chunk_len: flags.chunk_len,
        valid_fraction: flags.valid_fraction,
        split_seed: flags.split_seed,
        read: ReadOptions {
            text_field: flags.text_field.clone(),
            skip_bad_lines: flags.skip_bad_lines,
        },
        ..Default::default()
    };
    let progress = spinner("chunk");
    let manifest = build_chunk_db(out, &flags.corpora, &tokenizer, &options, &|docs| {
        progress.set_message(format!("{docs} documents"))
    })?;
    progress.finish_with_message(format!(
        "{} documents, {} chunks",
        manifest.n_documents, manifest.n_chunks
    ));
    Ok(manifest)
}

fn embed_stage(db_dir: &Path, flags: &EmbedFlags) -> Result<retro_db::embed::EmbedReport> {
    let db = ChunkDb::open(db_dir)?;
    let tokenizer = db.tokenizer()?;
    let embedder = Embedder::load(&flags.embedder, flags.pooling)?;
    let options = EmbedOptions {
        block_size: flags.block_size,
        batch_size: flags.batch_size,
        shard: flags.shard.unwrap_or(Shard::ALL),
    };
    if options.block_size == 0 || options.batch_size == 0 {
        bail!("--block-size and --batch-size must be positive");
    }
    let progress = bar(db.n_chunks() as u64, "embed");
    let report = embed_db(&db, &tokenizer, &embedder, &options, &|n| {
        progress.inc(n as u64)
    })?;
    progress.finish();
    Ok(report)
}

fn index_stage(db_dir: &Path, flags: &IndexFlags) -> Result<retro_db::index::IndexReport> {
    let db = ChunkDb::open(db_dir)?;
    let embeddings = Embeddings::open(&db)?;
    let options = IndexOptions {
        factory: flags.factory.clone(),
        train_sample: flags.train_sample,
        search: SearchParams {
            nprobe: flags.search.nprobe,
            ef_search: flags.search.ef_search,
        },
        ..Default::default()
    };
    let progress = bar(db.manifest.n_chunks_train as u64, "index");
    progress.set_message("training");
    let report = build_index(&db, &embeddings, &options, &|n| {
        progress.set_message("adding");
        progress.inc(n as u64)
    })?;
    progress.finish_with_message(report.factory.clone());
    Ok(report)
}

fn neighbors_stage(
    db_dir: &Path,
    options: &NeighborOptions,
    search: &SearchFlags,
) -> Result<retro_db::neighbors::NeighborReport> {
    let db = ChunkDb::open(db_dir)?;
    let embeddings = Embeddings::open(&db)?;
    let mut index = RetrievalIndex::open(db_dir, None)?;
    if let Some(params) = search.params(index.meta.search) {
        index.set_search_params(params)?;
    }
    let progress = bar(db.n_chunks() as u64, "neighbors");
    let report = query_neighbors(&db, &embeddings, &mut index, options, &|n| {
        progress.inc(n as u64)
    })?;
    progress.finish();
    Ok(report)
}

fn build(args: BuildArgs) -> Result<()> {
    let manifest = chunk_stage(&args.out, &args.chunk)?;
    let embed = embed_stage(&args.out, &args.embed)?;
    if !embed.complete {
        let summary = serde_json::json!({"complete": false, "stage": "embed", "blocks_total": embed.blocks_total, "blocks_done": embed.blocks_done_before + embed.blocks_done_now});
        return print_report(args.json, &summary, "this shard's embedding blocks are done; run again without --shard (or with the other shards) to continue");
    }
    let index = index_stage(&args.out, &args.index)?;
    let options = neighbor_options(&args.neighbors, args.embed.block_size, args.embed.shard);
    let neighbors = neighbors_stage(&args.out, &options, &SearchFlags::default())?;
    let summary = serde_json::json!({
        "complete": neighbors.complete,
        "documents": manifest.n_documents,
        "chunks": manifest.n_chunks,
        "chunks_train": manifest.n_chunks_train,
        "chunks_valid": manifest.n_chunks_valid,
        "index": index.factory,
    });
    let human = format!(
        "DB {}: {} documents, {} chunks ({} train, {} valid), index {}{}",
        args.out.display(),
        manifest.n_documents,
        manifest.n_chunks,
        manifest.n_chunks_train,
        manifest.n_chunks_valid,
        index.factory,
        if neighbors.complete {
            ""
        } else {
            "; neighbour blocks of other shards are still missing"
        }
    );
    print_report(args.json, &summary, &human)
}

fn search(args: SearchArgs) -> Result<()> {
    let mut db = RetrievalDb::open(&args.db, args.embedder.as_deref(), None)?;
    if let Some(params) = args.search.params(db.index.meta.search) {
        db.index.set_search_params(params)?;
    }
    let hits = db.search(&args.query, args.k)?;
    if args.json {
        println!("{}", serde_json::to_string(&hits)?);
        return Ok(());
    }
    for (rank, hit) in hits.iter().enumerate() {
        println!(
            "{}. [{:.3}] chunk {} · {}\n   {}\n",
            rank + 1,
            hit.score,
            hit.chunk,
            hit.title.as_deref().unwrap_or("(untitled)"),
            hit.text.replace('\n', " ")
        );
    }
    Ok(())
}

fn show_neighbors(db_dir: &Path, chunk: usize, json: bool) -> Result<()> {
    let db = ChunkDb::open(db_dir)?;
    if chunk >= db.n_chunks() {
        bail!(
            "chunk {chunk} is out of range: {} has {} chunks",
            db_dir.display(),
            db.n_chunks()
        );
    }
    let tokenizer = db.tokenizer()?;
    let neighbors = Neighbors::open(&db)?;
    let doc = db.chunk_info(chunk).doc;
    let text = db.chunk_text(chunk, &tokenizer)?;
    let hits = neighbor_hits(&db, &tokenizer, &neighbors, chunk)?;
    if json {
        let value =
            serde_json::json!({"chunk": chunk, "doc": doc, "text": text, "neighbors": hits});
        println!("{value}");
        return Ok(());
    }
    println!(
        "chunk {chunk} · {}\n   {}\n",
        db.doc_info(doc).title.unwrap_or_default(),
        text.replace('\n', " ")
    );
    for (rank, hit) in hits.iter().enumerate() {
        println!(
            "{}. [{:.3}] chunk {} · {}\n   {}\n",
            rank + 1,
            hit.score,
            hit.chunk,
            db.doc_info(hit.doc).title.unwrap_or_default(),
            hit.text.replace('\n', " ")
        );
    }
    Ok(())
}

fn stats(args: StatsArgs) -> Result<()> {
    let db = ChunkDb::open(&args.db)?;
    let embeddings = Embeddings::open(&db).context("stats needs a finished embedding stage")?;
    let mut index = RetrievalIndex::open(&args.db, None)?;
    if let Some(params) = args.search.params(index.meta.search) {
        index.set_search_params(params)?;
    }
    let stats = db_stats(&db, &embeddings, &mut index, args.sample)?;
    if args.json {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(());
    }
    println!(
        "documents        {} ({} valid)\nchunks           {} ({} train, {} valid)\ntokens           {}\nindex            {} (nprobe {:?}, efSearch {:?})\nindex bytes      {} ({:.1} per chunk)\nself-recall@2    {:.4} (sample {})\nrecall@10        {:.4} (vs exact search)",
        stats.documents, stats.documents_valid, stats.chunks, stats.chunks_train, stats.chunks_valid, stats.tokens,
        stats.index, stats.nprobe, stats.ef_search, stats.index_bytes, stats.bytes_per_chunk, stats.self_recall_at_2,
        stats.recall_sample, stats.recall_at_10
    );
    Ok(())
}
