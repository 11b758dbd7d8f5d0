//! `retro bench …`: run one library call on given inputs and time it, for the comparison scripts in `bench/`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Embed the texts of a jsonl file ({"text": ...} per line) and report throughput.
    Embed(EmbedBench),
    /// Train, fill and search a Faiss index on vectors from a .npy file and report times and recall@k.
    Index(IndexBench),
}

#[derive(Args)]
pub struct EmbedBench {
    #[arg(long)]
    embedder: PathBuf,
    #[arg(long)]
    texts: PathBuf,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Write the embeddings as a float32 .npy file [n, d].
    #[arg(long)]
    out_npy: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IndexBench {
    /// float32 .npy file [N, d].
    #[arg(long)]
    vectors: PathBuf,
    #[arg(long)]
    factory: String,
    /// Train on the first N vectors (default: all).
    #[arg(long)]
    train_n: Option<usize>,
    #[arg(long)]
    nprobe: Option<usize>,
    #[arg(long)]
    ef_search: Option<usize>,
    /// Search with the first Q vectors.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Embed(args) => embed(args),
        BenchCommand::Index(args) => index(args),
    }
}

fn read_texts(path: &Path) -> Result<Vec<String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, line)| {
            let value: serde_json::Value = serde_json::from_str(&line?)
                .with_context(|| format!("{}:{}: malformed JSON", path.display(), i + 1))?;
            value
                .get("text")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{}:{}: no \"text\" field", path.display(), i + 1))
        })
        .collect()
}

fn embed(args: EmbedBench) -> Result<()> {
    let texts = read_texts(&args.texts)?;
    let embedder = retro_db::Embedder::load(&args.embedder, None)?;
    embedder.embed(&texts[..texts.len().min(8)], args.batch_size)?; // warm-up
    let start = Instant::now();
    let vectors = embedder.embed(&texts, args.batch_size)?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(path) = &args.out_npy {
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        write_npy(path, &flat, texts.len(), embedder.spec.dim)?;
    }
    let report = serde_json::json!({"n_texts": texts.len(), "seconds": seconds, "texts_per_s": texts.len() as f64 / seconds});
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} texts in {seconds:.2} s: {:.1} texts/s",
            texts.len(),
            texts.len() as f64 / seconds
        );
    }
    Ok(())
}

fn index(args: IndexBench) -> Result<()> {
    let (vectors, n, dim) = read_npy(&args.vectors)?;
    let train_n = args.train_n.unwrap_or(n).min(n);
    let start = Instant::now();
    let mut index = retro_db::index::FactoryIndex::new(&args.factory, dim)?;
    index.train(&vectors[..train_n * dim])?;
    let train_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    index.add(&vectors)?;
    let add_s = start.elapsed().as_secs_f64();
    index.set_search_params(retro_db::SearchParams {
        nprobe: args.nprobe,
        ef_search: args.ef_search,
    })?;
    let q = args.queries.min(n);
    let queries = &vectors[..q * dim];
    let start = Instant::now();
    let approx = index.search(queries, args.k)?;
    let search_s = start.elapsed().as_secs_f64();
    let mut exact = retro_db::index::FactoryIndex::new("Flat", dim)?;
    exact.add(&vectors)?;
    let truth = exact.search(queries, args.k)?;
    let hits: usize = approx
        .iter()
        .zip(&truth)
        .map(|(a, t)| {
            a.iter()
                .filter(|(r, _)| t.iter().any(|(tr, _)| tr == r))
                .count()
        })
        .sum();
    let recall = hits as f64 / (q * args.k) as f64;
    let report = serde_json::json!({"train_s": train_s, "add_s": add_s, "search_s": search_s, "recall_at_k": recall, "k": args.k, "n": n, "queries": q});
    if args.json {
        println!("{report}");
    } else {
        println!(
            "train {train_s:.3} s, add {add_s:.3} s, search {search_s:.3} s, recall@{} {recall:.4}",
            args.k
        );
    }
    Ok(())
}

/// Writes a float32 C-order .npy file (format 1.0).
fn write_npy(path: &Path, values: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    values
        .iter()
        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    retro_data::atomic_write::write_atomic(path, &bytes)
}

/// Reads a 2-d float32 C-order .npy file.
fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{}: not a .npy file", path.display());
    }
    let (header_len, offset) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[offset..offset + header_len])?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        bail!(
            "{}: expected a C-order float32 array, header {header}",
            path.display()
        );
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow!("{}: no shape", path.display()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        bail!("{}: expected a 2-d array, shape ({shape})", path.display())
    };
    let data = &bytes[offset + header_len..];
    if data.len() != rows * cols * 4 {
        bail!("{}: truncated", path.display());
    }
    Ok((
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        rows,
        cols,
    ))
}
