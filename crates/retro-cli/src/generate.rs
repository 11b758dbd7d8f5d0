//! `retro generate`: text generation with a plain GPT (GGUF / HF directory) or a Retro checkpoint, retrieving from a
//! retrieval DB each time the sequence completes a chunk (the loop and the caches are in `retro_model::retro_generate`;
//! this file loads things, implements the DB-backed `Retriever`, and prints).

use crate::output::write_stdout;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use retro_data::GptTokenizer;
use retro_db::RetrievalDb;
use retro_model::candle_core::Device;
use retro_model::retro_config::is_retro_checkpoint;
use retro_model::retro_weights::source_dir;
use retro_model::{
    generate, generate_plain, pad_tokens, GenerateOptions, Generation, Llama, Mode, Neighbor,
    Retriever, RetroModel, RetroWeights, SamplingOptions, Weights,
};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum Template {
    /// The prompt as given.
    None,
    /// A ChatML user turn followed by the assistant's generation prompt:
    /// `<|im_start|>user\nPROMPT<|im_end|>\n<|im_start|>assistant\n` (no system turn is added).
    Chatml,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The model: a Retro checkpoint directory (from `retro model retrofit`), an HF directory, a GGUF file, or a
    /// directory holding a GGUF (whole or split into .partNN pieces). Its tokenizer.json must be next to it.
    #[arg(long)]
    model: PathBuf,
    /// Retrieval DB (from `retro db build`) to retrieve from at every chunk; needs a Retro checkpoint.
    #[arg(long)]
    db: Option<PathBuf>,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate at most (generation also ends at an end-of-text token or at the model's context).
    #[arg(long, default_value_t = 128)]
    max_new: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long)]
    top_p: Option<f64>,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "none")]
    template: Template,
    /// Generate without retrieval (the Retro model's plain decoder; gate 0).
    #[arg(long)]
    no_retrieval: bool,
    /// Print one JSON object at the end ({"text", "tokens", "retrievals"}) instead of streaming text.
    #[arg(long)]
    json: bool,
}

enum Loaded {
    Gpt(Box<Llama>),
    Retro(Box<RetroModel>),
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let sampling = SamplingOptions {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    sampling.validate()?;
    let device = Device::Cpu;
    let (model, tokenizer_dir) = load_model(&a.model, &device)?;
    let tokenizer = GptTokenizer::load(&tokenizer_dir, None).with_context(|| {
        format!(
            "cannot load the model's tokenizer from {}",
            tokenizer_dir.display()
        )
    })?;
    let prompt_text = match a.template {
        Template::None => a.prompt.clone(),
        Template::Chatml => {
            for marker in ["<|im_start|>", "<|im_end|>"] {
                if tokenizer.inner().token_to_id(marker).is_none() {
                    bail!("--template chatml: the model's tokenizer has no {marker} token");
                }
            }
            format!(
                "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
                a.prompt
            )
        }
    };
    let prompt = tokenizer.encode(&prompt_text)?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let opts = GenerateOptions {
        max_new: a.max_new,
        sampling,
        stop: stop_tokens(&tokenizer, &tokenizer_dir),
    };

    let mut printer = Printer {
        tokenizer: &tokenizer,
        tokens: Vec::new(),
        printed: String::new(),
        enabled: !a.json,
    };
    let mut on_token = |t: u32| printer.push(t);
    let generation = match (&model, &a.db, a.no_retrieval) {
        (Loaded::Gpt(_), Some(_), false) => {
            bail!(
                "--db needs a Retro checkpoint (made by `retro model retrofit`); {} is a plain GPT",
                a.model.display()
            )
        }
        (Loaded::Gpt(gpt), _, _) => Generation {
            tokens: generate_plain(gpt, &prompt, &opts, &mut on_token)?,
            retrievals: Vec::new(),
        },
        (Loaded::Retro(retro), _, true) => {
            generate(retro, &prompt, None, &opts, Mode::Cached, &mut on_token)?
        }
        (Loaded::Retro(_), None, false) => {
            bail!(
                "{} is a Retro checkpoint: pass --db DB to retrieve, or --no-retrieval",
                a.model.display()
            )
        }
        (Loaded::Retro(retro), Some(db_dir), false) => {
            let mut retriever = DbRetriever::open(db_dir, &tokenizer, retro)?;
            generate(
                retro,
                &prompt,
                Some(&mut retriever),
                &opts,
                Mode::Cached,
                &mut on_token,
            )?
        }
    };
    let text = tokenizer.decode(&generation.tokens)?;
    if a.json {
        let retrievals: Vec<serde_json::Value> = generation
            .retrievals
            .iter()
            .map(|r| {
                serde_json::json!({
                    "position": r.position,
                    "neighbors": r.neighbors.iter().map(|n| serde_json::json!({
                        "chunk": n.chunk, "doc": n.doc, "text": n.text,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = serde_json::json!({ "text": text, "tokens": generation.tokens, "retrievals": retrievals });
        write_stdout(&(serde_json::to_string_pretty(&out)? + "\n"))
    } else {
        printer.finish(&text)
    }
}

/// The model and the directory holding its tokenizer.json.
fn load_model(path: &Path, device: &Device) -> Result<(Loaded, PathBuf)> {
    if path.is_dir() && is_retro_checkpoint(path) {
        let w = RetroWeights::load(path, device)
            .with_context(|| format!("cannot load the Retro checkpoint {}", path.display()))?;
        return Ok((Loaded::Retro(Box::new(w.build()?)), path.to_path_buf()));
    }
    let w = Weights::load(path, device)
        .with_context(|| format!("cannot load the model {}", path.display()))?;
    let dir = source_dir(&w.source).unwrap_or_else(|| path.to_path_buf());
    Ok((Loaded::Gpt(Box::new(w.build()?)), dir))
}

/// End-of-text tokens: the `eos_token_id` of a config.json next to the tokenizer, and whichever of the usual
/// end markers the vocabulary has.
fn stop_tokens(tokenizer: &GptTokenizer, dir: &Path) -> Vec<u32> {
    let mut stop: Vec<u32> = ["<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "<|eot_id|>"]
        .iter()
        .filter_map(|t| tokenizer.inner().token_to_id(t))
        .collect();
    let config = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if let Some(c) = config {
        // A Retro checkpoint nests the GPT's config under "decoder".
        let c = c.get("decoder").cloned().unwrap_or(c);
        match c.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => stop.extend(n.as_u64().map(|i| i as u32)),
            Some(serde_json::Value::Array(a)) => {
                stop.extend(a.iter().filter_map(|v| v.as_u64()).map(|i| i as u32))
            }
            _ => {}
        }
    }
    stop.sort_unstable();
    stop.dedup();
    stop
}

/// Streams the decoded text: after each token, the new part of the decoded generation (held back while it ends in an
/// incomplete UTF-8 sequence).
struct Printer<'a> {
    tokenizer: &'a GptTokenizer,
    tokens: Vec<u32>,
    printed: String,
    enabled: bool,
}

impl Printer<'_> {
    fn push(&mut self, token: u32) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.tokens.push(token);
        let text = self.tokenizer.decode(&self.tokens)?;
        if !text.ends_with('\u{FFFD}')
            && text.starts_with(&self.printed)
            && text.len() > self.printed.len()
        {
            write_stdout(&text[self.printed.len()..])?;
            self.printed = text;
        }
        Ok(())
    }

    fn finish(&mut self, text: &str) -> Result<()> {
        let rest = text.strip_prefix(self.printed.as_str()).unwrap_or("");
        write_stdout(&format!("{rest}\n"))
    }
}

/// Neighbours from a retrieval DB: the chunk's text is embedded with the DB's BERT and searched; each hit becomes
/// its chunk + continuation (the next chunk of the same document), padded with the DB's pad id to the model's r.
struct DbRetriever {
    db: RetrievalDb,
}

impl DbRetriever {
    fn open(dir: &Path, model_tokenizer: &GptTokenizer, model: &RetroModel) -> Result<Self> {
        let db = RetrievalDb::open(dir, None, None)?;
        model_tokenizer.check_same_as_db(&db.tokenizer, dir)?;
        let m = model.config().chunk_len;
        if db.chunks.chunk_len() != m {
            bail!(
                "the DB {} has chunks of {} tokens, the model's chunk_len is {m}",
                dir.display(),
                db.chunks.chunk_len()
            );
        }
        Ok(Self { db })
    }
}

impl Retriever for DbRetriever {
    fn retrieve(&mut self, chunk: &[u32], k: usize, retrieved_len: usize) -> Result<Vec<Neighbor>> {
        let text = self.db.tokenizer.decode(chunk)?;
        let hits = self.db.search(&text, k)?;
        let pad = self.db.chunks.manifest.pad_id;
        hits.into_iter()
            .map(|hit| {
                let chunks = &self.db.chunks;
                let mut tokens = chunks.chunk_tokens(hit.chunk);
                if let Some(next) = chunks.continuation(hit.chunk) {
                    tokens.extend(chunks.chunk_tokens(next));
                }
                let text = self.db.tokenizer.decode(&tokens)?;
                Ok(Neighbor {
                    tokens: pad_tokens(tokens, retrieved_len, pad),
                    chunk: hit.chunk,
                    doc: hit.doc,
                    text,
                })
            })
            .collect()
    }
}
