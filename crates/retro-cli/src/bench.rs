//! `retro bench …`: run one library call on given inputs and time it, for the comparison scripts in `bench/`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use retro_model::candle_core::{Device, Tensor};
use retro_model::retro_config::is_retro_checkpoint;
use retro_model::{RetroWeights, Weights};

mod kernels;
mod train_step;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Embed the texts of a jsonl file ({"text": ...} per line) and report throughput.
    Embed(EmbedBench),
    /// Train, fill and search a Faiss index on vectors from a .npy file and report times and recall@k.
    Index(IndexBench),
    /// Time the Retro model's forward (and, with --backward, loss + backward) on seeded inputs.
    Forward(ForwardBench),
    /// Time greedy decoding with the plain decoder and its KV cache (no stop tokens), prompt given as ids;
    /// with --db, also a Retro model retrieving at every chunk, and the share of time retrieval takes.
    Decode(DecodeBench),
    /// Write the seeded tiny Retro checkpoint of the numpy fixture (for bench/retro_torch.py's self-check).
    TinyRetro(TinyRetroBench),
    /// Time full training steps (forward, masked cross-entropy, backward, AdamW over all parameters)
    /// on seeded inputs, with a per-phase breakdown. `RETRO_FUSED=0` selects candle's composed ops.
    TrainStep(TrainStepBench),
    /// Time each fused kernel against candle's composed version, forward + backward, on given shapes.
    Kernels(KernelsBench),
}

#[derive(Args)]
pub struct TrainStepBench {
    /// Retro checkpoint directory (from `retro model retrofit`).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 512)]
    seq: usize,
    #[arg(long, default_value_t = 2)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Run without neighbours.
    #[arg(long)]
    no_retrieval: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct KernelsBench {
    /// Tokens (rows) for RMSNorm, SwiGLU and cross-entropy.
    #[arg(long, default_value_t = 2048)]
    tokens: usize,
    #[arg(long, default_value_t = 576)]
    hidden: usize,
    #[arg(long, default_value_t = 1536)]
    intermediate: usize,
    #[arg(long, default_value_t = 49152)]
    vocab: usize,
    /// Rows of the cross-entropy (its logits are rows × vocab).
    #[arg(long, default_value_t = 512)]
    ce_rows: usize,
    /// Softmax input (batch·heads, t, t).
    #[arg(long, default_value_t = 36)]
    heads: usize,
    #[arg(long, default_value_t = 512)]
    t: usize,
    /// AdamW parameter count (one tensor).
    #[arg(long, default_value_t = 10_000_000)]
    adamw_params: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    #[arg(long)]
    json: bool,
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
    /// Search this many times and report the fastest: one search of 1000 queries takes tens of milliseconds, within
    /// the noise of a single measurement.
    #[arg(long, default_value_t = 5)]
    search_repeats: usize,
    /// Also write the built index to this Faiss index file (to search it again with `--load`).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Search this Faiss index file (read into memory) instead of building one; train_s and add_s are then null.
    /// With `--save` and `--load` an index built once can be searched from many processes, ours and Python's.
    #[arg(long, conflicts_with_all = ["save", "train_n"])]
    load: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ForwardBench {
    /// Retro checkpoint directory (from `retro model retrofit`).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Timed steps (after one untimed warm-up step unless --warmup 0).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Also compute the mean next-token cross-entropy and its gradient for every parameter (trainable model).
    #[arg(long)]
    backward: bool,
    /// Run without neighbours (the Retro layers skip CCA and the encoder).
    #[arg(long)]
    no_retrieval: bool,
    /// Seed of the inputs (see [`seeded_inputs`]; bench/retro_torch.py draws the same).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the logits of the first step as a float32 .npy file (batch, seq, vocab).
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DecodeBench {
    /// A GPT (HF directory, GGUF, directory with a GGUF) or a Retro checkpoint (its decoder is used).
    #[arg(long)]
    model: PathBuf,
    /// Prompt token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    prompt_ids: Vec<u32>,
    #[arg(long, default_value_t = 64)]
    max_new: usize,
    /// Timed repetitions (after one untimed warm-up generation of 4 tokens).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// With a Retro checkpoint: also decode with retrieval from this DB at every chunk, and report
    /// the time spent retrieving (BERT embedding + search + neighbour tokens) and the whole cost of
    /// retrieval (that plus the encoder and chunked cross-attention: with minus without).
    #[arg(long)]
    db: Option<PathBuf>,
    #[command(flatten)]
    decode: crate::decode_weights_arg::DecodeWeightsArg,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TinyRetroBench {
    /// Checkpoint directory to write.
    #[arg(long)]
    out: PathBuf,
    /// The fixture's seed (crates/retro-model/tests/retro_numpy.rs).
    #[arg(long, default_value_t = 2024)]
    seed: u64,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Embed(args) => embed(args),
        BenchCommand::Index(args) => index(args),
        BenchCommand::Forward(args) => forward(args),
        BenchCommand::Decode(args) => decode(args),
        BenchCommand::TinyRetro(args) => tiny_retro(args),
        BenchCommand::TrainStep(args) => train_step::run(args),
        BenchCommand::Kernels(args) => kernels::run(args),
    }
}

/// The inputs of `retro bench forward`: one SplitMix64 stream seeded with `seed`, each id
/// `next_u64() % vocab`, first the token ids row-major `(batch, seq)`, then the neighbour tokens
/// row-major `(batch, l, k, r)`, l = ceil(seq / m). bench/retro_torch.py (`seeded_inputs`) draws
/// the same numbers.
pub fn seeded_inputs(
    batch: usize,
    seq: usize,
    vocab: usize,
    nb_shape: (usize, usize, usize),
    seed: u64,
) -> (Vec<u32>, Vec<u32>) {
    let mut rng = retro_model::tiny::SplitMix64::new(seed);
    let mut draw = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| (rng.next_u64() % vocab as u64) as u32)
            .collect()
    };
    let ids = draw(batch * seq);
    let (l, k, r) = nb_shape;
    let nb = draw(batch * l * k * r);
    (ids, nb)
}

/// Mean next-token cross-entropy of `logits` `(b, ns, V)` against `ids` `(b, ns)`: positions
/// `0..ns-1` predict `1..ns`. Built from differentiable ops.
fn next_token_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, ns, v) = logits.dims3()?;
    let n = b * (ns - 1);
    let x = logits.narrow(1, 0, ns - 1)?.reshape((n, v))?;
    let targets = ids.narrow(1, 1, ns - 1)?.reshape((n, 1))?;
    let lse = x.log_sum_exp(1)?;
    let picked = x.gather(&targets, 1)?.squeeze(1)?;
    Ok((lse - picked)?.mean_all()?)
}

fn forward(args: ForwardBench) -> Result<()> {
    if args.seq < 2 || args.batch == 0 {
        bail!("--seq must be at least 2 and --batch at least 1");
    }
    let device = Device::Cpu;
    let start = Instant::now();
    let weights = RetroWeights::load(&args.model, &device)?;
    let cfg = weights.config.clone();
    let (model, varmap) = if args.backward {
        let (m, v) = weights.build_trainable()?;
        (m, Some(v))
    } else {
        (weights.build()?, None)
    };
    drop(weights);
    let load_s = start.elapsed().as_secs_f64();
    let l = args.seq.div_ceil(cfg.chunk_len);
    let nb_shape = (l, cfg.num_neighbors, cfg.retrieved_len);
    let (ids, nb) = seeded_inputs(
        args.batch,
        args.seq,
        cfg.decoder.vocab_size,
        nb_shape,
        args.seed,
    );
    let ids = Tensor::from_vec(ids, (args.batch, args.seq), &device)?;
    let nb = Tensor::from_vec(nb, (args.batch, l, nb_shape.1, nb_shape.2), &device)?;
    let neighbors = (!args.no_retrieval).then_some(&nb);
    let mut step_ms = Vec::with_capacity(args.steps);
    let (mut loss_value, mut grads_found) = (None, 0usize);
    for step in 0..args.warmup + args.steps {
        let t = Instant::now();
        let logits = model.forward(&ids, neighbors)?;
        if let Some(varmap) = &varmap {
            let loss = next_token_loss(&logits, &ids)?;
            let grads = loss.backward()?;
            if step == 0 {
                loss_value = Some(loss.to_scalar::<f32>()?);
                grads_found = varmap
                    .all_vars()
                    .iter()
                    .filter(|v| grads.get(v.as_tensor()).is_some())
                    .count();
            }
        }
        if step >= args.warmup {
            step_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if step == 0 {
            if let Some(path) = &args.dump_logits {
                let (b, ns, v) = logits.dims3()?;
                let flat = logits.flatten_all()?.to_vec1::<f32>()?;
                write_npy(path, &flat, &[b, ns, v])?;
            }
        }
    }
    let mean = step_ms.iter().sum::<f64>() / step_ms.len().max(1) as f64;
    let best = step_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let report = serde_json::json!({
        "batch": args.batch, "seq": args.seq, "backward": args.backward, "retrieval": !args.no_retrieval,
        "steps": args.steps, "warmup": args.warmup, "load_s": load_s, "step_ms": step_ms,
        "ms_per_step": mean, "best_ms": best, "loss": loss_value,
        "params_with_grad": varmap.as_ref().map(|_| grads_found),
        "params": varmap.as_ref().map(|v| v.all_vars().len()),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} × {} tokens{}{}: {mean:.1} ms per step (best {best:.1}) over {} steps; load {load_s:.2} s",
            args.batch,
            args.seq,
            if args.no_retrieval { ", no retrieval" } else { ", with neighbours" },
            if args.backward { ", forward + backward" } else { ", forward" },
            args.steps
        );
        if let Some(loss) = loss_value {
            println!(
                "loss {loss:.4}, gradients for {grads_found} of {} parameters",
                varmap.as_ref().map_or(0, |v| v.all_vars().len())
            );
        }
    }
    Ok(())
}

fn decode(args: DecodeBench) -> Result<()> {
    if args.db.is_some() {
        return decode_with_retrieval(args);
    }
    let device = Device::Cpu;
    let start = Instant::now();
    let decoder = if args.model.is_dir() && is_retro_checkpoint(&args.model) {
        RetroWeights::load(&args.model, &device)?
            .build_for(args.decode.decode_weights)?
            .decoder()
            .clone()
    } else {
        Weights::load(&args.model, &device)?.build_for(args.decode.decode_weights)?
    };
    let load_s = start.elapsed().as_secs_f64();
    retro_model::generate::greedy(&decoder, &args.prompt_ids, 4.min(args.max_new), &[])?;
    let mut runs = Vec::with_capacity(args.repeats);
    let mut tokens = Vec::new();
    for _ in 0..args.repeats.max(1) {
        let t = Instant::now();
        tokens = retro_model::generate::greedy(&decoder, &args.prompt_ids, args.max_new, &[])?;
        runs.push(t.elapsed().as_secs_f64());
    }
    let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let report = serde_json::json!({
        "prompt_len": args.prompt_ids.len(), "new_tokens": tokens.len(), "load_s": load_s,
        "seconds": runs, "best_s": best, "tokens_per_s": tokens.len() as f64 / best, "tokens": tokens,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} tokens after a {}-token prompt in {best:.3} s: {:.1} tokens/s (prompt included); load {load_s:.2} s",
            tokens.len(),
            args.prompt_ids.len(),
            tokens.len() as f64 / best
        );
    }
    Ok(())
}

/// A retriever that times its inner one.
struct TimedRetriever<'a> {
    inner: &'a mut dyn retro_model::Retriever,
    seconds: f64,
    calls: usize,
}

impl retro_model::Retriever for TimedRetriever<'_> {
    fn retrieve(
        &mut self,
        chunk: &[u32],
        k: usize,
        retrieved_len: usize,
    ) -> Result<Vec<retro_model::Neighbor>> {
        let t = Instant::now();
        let out = self.inner.retrieve(chunk, k, retrieved_len);
        self.seconds += t.elapsed().as_secs_f64();
        self.calls += 1;
        out
    }
}

/// `bench decode --db`: greedy decoding of a Retro model with retrieval at every chunk against
/// the same number of tokens without retrieval (its plain decoder), alternating, best of each.
/// Issue 3's goal: retrieval (embed + search + encoder) under 10% of decode time.
fn decode_with_retrieval(args: DecodeBench) -> Result<()> {
    let device = Device::Cpu;
    let db = args.db.as_deref().expect("called with --db");
    if !(args.model.is_dir() && is_retro_checkpoint(&args.model)) {
        bail!(
            "--db needs a Retro checkpoint (from `retro model retrofit`); {} is not one",
            args.model.display()
        );
    }
    let start = Instant::now();
    let model = RetroWeights::load(&args.model, &device)?.build_for(args.decode.decode_weights)?;
    let tokenizer = retro_data::GptTokenizer::load(&args.model, None)?;
    let mut retriever = retro_serve::DbRetriever::open(db, &tokenizer, &model)?;
    let load_s = start.elapsed().as_secs_f64();
    let opts = retro_model::GenerateOptions {
        max_new: args.max_new,
        sampling: Default::default(),
        stop: Vec::new(),
    };
    let run = |retriever: Option<&mut dyn retro_model::Retriever>| -> Result<(f64, Vec<u32>)> {
        let t = Instant::now();
        let g = retro_model::generate(
            &model,
            &args.prompt_ids,
            retriever,
            &opts,
            retro_model::Mode::Cached,
            &mut |_| Ok(std::ops::ControlFlow::Continue(())),
        )?;
        Ok((t.elapsed().as_secs_f64(), g.tokens))
    };
    run(None)?; // warm-up
    let (mut with, mut without, mut retrieve) = (Vec::new(), Vec::new(), Vec::new());
    let mut calls = 0;
    let mut tokens = Vec::new();
    for _ in 0..args.repeats.max(1) {
        let mut timed = TimedRetriever {
            inner: &mut retriever,
            seconds: 0.0,
            calls: 0,
        };
        let (s, with_tokens) = run(Some(&mut timed))?;
        with.push(s);
        retrieve.push(timed.seconds);
        calls = timed.calls;
        let (s0, without_tokens) = run(None)?;
        if with_tokens.len() != without_tokens.len() {
            bail!(
                "decoding gave {} tokens with retrieval and {} without",
                with_tokens.len(),
                without_tokens.len()
            );
        }
        without.push(s0);
        tokens = with_tokens;
    }
    let new_tokens = tokens.len();
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (best_with, best_without) = (best(&with), best(&without));
    // The run whose total was best, and its own retrieval time.
    let i = with.iter().position(|&s| s == best_with).unwrap_or(0);
    // The encoder runs inside the decoder's forward (it reads the decoder's states at the first
    // Retro layer), so it is timed on its own: one chunk's neighbours against one chunk of states,
    // the work generation does once per retrieval.
    let cfg = model.config();
    let (m, k, r, d) = (
        cfg.chunk_len,
        cfg.num_neighbors,
        cfg.retrieved_len,
        cfg.decoder.hidden_size,
    );
    let neighbors = Tensor::zeros((1, 1, k, r), retro_model::candle_core::DType::U32, &device)?;
    let states = Tensor::randn(0f32, 1.0, (1, m, d), &device)?;
    let mut encoder = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        model.encoder_output(&neighbors, &states)?;
        encoder.push(t.elapsed().as_secs_f64());
    }
    let encoder_s = best(&encoder);
    let retrieval_s = retrieve[i] + calls as f64 * encoder_s;
    let report = serde_json::json!({
        "prompt_len": args.prompt_ids.len(), "new_tokens": new_tokens, "load_s": load_s,
        "retrievals": calls,
        "seconds_with_retrieval": with, "seconds_without": without, "seconds_retrieving": retrieve,
        "encoder_s_per_chunk": encoder_s,
        "best_with_s": best_with, "best_without_s": best_without,
        "retrieve_share": retrieve[i] / best_with,
        "retrieval_share": retrieval_s / best_with,
        "retrieval_cost_share": (best_with - best_without) / best_with,
        "decode_weights": format!("{:?}", args.decode.decode_weights), "tokens": tokens,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{new_tokens} tokens after a {}-token prompt, {calls} retrievals: {best_with:.3} s with \
             retrieval, {best_without:.3} s without. Share of the time with retrieval: embedding + \
             search {:.1}%, with the encoder ({:.1} ms per chunk) {:.1}%; everything retrieval \
             adds (with minus without, chunked cross-attention included) {:.1}%",
            args.prompt_ids.len(),
            100.0 * retrieve[i] / best_with,
            1e3 * encoder_s,
            100.0 * retrieval_s / best_with,
            100.0 * (best_with - best_without) / best_with
        );
    }
    Ok(())
}

fn tiny_retro(args: TinyRetroBench) -> Result<()> {
    let cfg = retro_model::tiny::tiny_retro_config();
    let w = retro_model::tiny::random_retro_weights(&cfg, args.seed, &Device::Cpu)?;
    w.save(&args.out)?;
    println!("{}", args.out.display());
    Ok(())
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
        write_npy(path, &flat, &[texts.len(), embedder.spec.dim])?;
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
    let (mut index, train_s, add_s) = match &args.load {
        Some(path) => {
            let index = retro_db::index::FactoryIndex::read_in_memory(path, &args.factory)?;
            if index.dim != dim || index.ntotal() != n {
                bail!(
                    "{}: index holds {} vectors of dimension {}, {} has {n} of {dim}",
                    path.display(),
                    index.ntotal(),
                    index.dim,
                    args.vectors.display()
                );
            }
            (index, None, None)
        }
        None => {
            let train_n = args.train_n.unwrap_or(n).min(n);
            let start = Instant::now();
            let mut index = retro_db::index::FactoryIndex::new(&args.factory, dim)?;
            index.train(&vectors[..train_n * dim])?;
            let train_s = start.elapsed().as_secs_f64();
            let start = Instant::now();
            index.add(&vectors)?;
            let add_s = start.elapsed().as_secs_f64();
            if let Some(path) = &args.save {
                index.write(path)?;
            }
            (index, Some(train_s), Some(add_s))
        }
    };
    index.set_search_params(retro_db::SearchParams {
        nprobe: args.nprobe,
        ef_search: args.ef_search,
    })?;
    let q = args.queries.min(n);
    let queries = &vectors[..q * dim];
    let search_repeats = args.search_repeats.max(1);
    let mut search_times_s = Vec::with_capacity(search_repeats);
    let mut approx = Vec::new();
    for _ in 0..search_repeats {
        let start = Instant::now();
        approx = index.search(queries, args.k)?;
        search_times_s.push(start.elapsed().as_secs_f64());
    }
    let search_s = search_times_s.iter().copied().fold(f64::INFINITY, f64::min);
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
    let report = serde_json::json!({"train_s": train_s, "add_s": add_s, "search_s": search_s, "search_repeats": search_repeats, "search_times_s": search_times_s, "recall_at_k": recall, "k": args.k, "n": n, "queries": q});
    if args.json {
        println!("{report}");
    } else {
        let seconds = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.3} s"));
        println!(
            "train {}, add {}, search {search_s:.3} s, recall@{} {recall:.4}",
            seconds(train_s),
            seconds(add_s),
            args.k
        );
    }
    Ok(())
}

/// Writes a float32 C-order .npy file (format 1.0).
fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    let dims: String = shape.iter().map(|d| format!("{d}, ")).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.trim_end()
    );
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
