//! `retro eval …`: validation perplexity; zero-shot QA with retrieved contexts.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use retro_data::ChatTemplate;
use retro_db::RetrievalDb;
use retro_eval::{evaluate_qa, Encoder, QaOptions, QaTask};
use retro_model::candle_core::Device;
use retro_serve::Engine;
use retro_train::{checkpoint_perplexity, PplOptions, Split};
use std::path::PathBuf;

use crate::progress::bar;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Token perplexity on a DB split's samples, with their precomputed neighbours as in training
    /// (or none with --no-retrieval).
    Ppl(PplArgs),
    /// Zero-shot QA: retrieve contexts for each question with the DB's BERT, prompt with the reference's template
    /// for the task (short span, True/False, dialogue, long answer), answer greedily, score SQuAD EM / F1 (True/False:
    /// accuracy); with the Retro encoder reading the contexts or gated off.
    Qa(QaArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum EncoderArg {
    /// The encoder reads the prompt's top-k contexts (the reference's --reuse-top); needs a Retro model.
    On,
    /// Retrieval gated off: the decoder alone, contexts only in the prompt.
    Off,
}

#[derive(Args)]
pub struct QaArgs {
    /// The model: a Retro checkpoint or run directory, an HF directory, a GGUF (or a directory with one).
    #[arg(long)]
    model: PathBuf,
    /// Retrieval DB to take contexts from (any DB: contexts are text, re-tokenised for the model); without it the
    /// prompt has no retrieved contexts (closed-book, or only --gold-context).
    #[arg(long)]
    db: Option<PathBuf>,
    /// QA set: jsonl(.gz) of {"id", "question", "answers", "context"?, "history"?} (as in shared/data/qa).
    #[arg(long)]
    data: PathBuf,
    /// The prompt, stop and score: short (a short span, SQuAD EM / F1), boolq (True or False, accuracy), multiturn
    /// (the dialogue's earlier turns, then the question; F1), long (a full answer; F1); or a set name of the
    /// reference (nq, tqa, boolq, quac, …) [default: from the data file's name: boolq → boolq, quac → multiturn,
    /// nq / triviaqa / tqa / squad → short; short for other names].
    #[arg(long)]
    task: Option<QaTask>,
    /// Contexts retrieved from --db per question.
    #[arg(long, default_value_t = 5)]
    contexts: usize,
    /// Put the example's own context first where the set has one.
    #[arg(long)]
    gold_context: bool,
    #[arg(long, value_enum, default_value = "off")]
    encoder: EncoderArg,
    /// Prompt template [default: chatml when the tokenizer has its tokens, else megatron].
    #[arg(long, value_enum)]
    template: Option<ChatTemplate>,
    /// Only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Tokens generated at most per answer (short and True/False answers also stop at a newline, the others at the
    /// end of the turn).
    #[arg(long, default_value_t = 64)]
    max_new: usize,
    /// Write one JSON line per question here; a rerun skips the questions already in it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary {"task", "em", "f1", "n"} as JSON (boolq: em and f1 are both the accuracy).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PplArgs {
    /// A Retro checkpoint, or a training run directory (its latest checkpoint).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    db: PathBuf,
    /// train or valid.
    #[arg(long, default_value = "valid")]
    split: Split,
    /// Feed no neighbours (the Retro model as a plain GPT, i.e. gate 0).
    #[arg(long)]
    no_retrieval: bool,
    /// Tokens per sample [default: 512, or the model's context].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Evaluate only the first N samples (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Print {"ppl", "loss", "tokens", "samples"}.
    #[arg(long)]
    json: bool,
}

pub fn run(command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Ppl(a) => ppl(a),
        EvalCommand::Qa(a) => qa(a),
    }
}

fn qa(a: QaArgs) -> Result<()> {
    let model = retro_train::resolve_checkpoint(&a.model)?;
    let mut engine = Engine::load(&model, None)?;
    let mut db = match &a.db {
        Some(dir) => Some(
            RetrievalDb::open(dir, None, None)
                .with_context(|| format!("cannot open the DB {}", dir.display()))?,
        ),
        None => None,
    };
    let options = QaOptions {
        model: model.clone(),
        db: a.db.clone(),
        data: a.data,
        task: a.task,
        contexts: if a.db.is_some() { a.contexts } else { 0 },
        gold_context: a.gold_context,
        encoder: match a.encoder {
            EncoderArg::On => Encoder::On,
            EncoderArg::Off => Encoder::Off,
        },
        template: a.template,
        limit: a.limit,
        max_new: a.max_new,
        out: a.out,
    };
    let progress = bar(0, "qa");
    let summary = evaluate_qa(
        &mut engine,
        db.as_mut(),
        &options,
        &mut |_, running, done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
            progress.set_message(if running.task == QaTask::Boolq {
                format!("{} accuracy {:.1}", running.task, 100.0 * running.em)
            } else {
                format!(
                    "{} EM {:.1} F1 {:.1}",
                    running.task,
                    100.0 * running.em,
                    100.0 * running.f1
                )
            });
        },
    )?;
    progress.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if summary.task == QaTask::Boolq {
        println!(
            "task {}  accuracy {:.2}  over {} questions",
            summary.task,
            100.0 * summary.em,
            summary.n
        );
    } else {
        println!(
            "task {}  EM {:.2}  F1 {:.2}  over {} questions",
            summary.task,
            100.0 * summary.em,
            100.0 * summary.f1,
            summary.n
        );
    }
    Ok(())
}

fn ppl(a: PplArgs) -> Result<()> {
    let options = PplOptions {
        model: a.model,
        db: a.db,
        split: a.split,
        retrieval: !a.no_retrieval,
        seq_len: a.seq_len,
        batch: a.batch,
        limit: a.limit,
    };
    let progress = bar(0, "eval");
    let p = checkpoint_perplexity(&options, &Device::Cpu, &mut |done, total| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
    })?;
    progress.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "perplexity {:.3} (loss {:.4} over {} tokens of {} samples)",
            p.ppl, p.loss, p.tokens, p.samples
        );
    }
    Ok(())
}
