//! `retro`: the command-line shell over the retro libraries. Each subcommand parses its flags and calls library
//! functions; no retrieval or model logic lives here.

mod allocator;
mod bench;
mod blas_core;
mod chat;
mod db;
mod decode_weights_arg;
mod eval;
mod generate;
mod model;
mod output;
mod plot;
mod progress;
mod sampling_args;
mod serve;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Retrieval-augmented language models (Retro / InstructRetro): build retrieval databases, search them, and (as the
/// other stages land) train, evaluate and serve Retro models.
#[derive(Parser)]
#[command(name = "retro", version, about, long_about = None)]
struct Cli {
    /// Log more (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Worker threads for tokenising, BERT and Faiss (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build, inspect and search a retrieval database.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Measure our code on given inputs (used by the scripts in bench/).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Build Retro models from pretrained GPTs (retro-fitting) and describe checkpoints.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Generate text with a GPT or a Retro model, retrieving from a DB each time the sequence completes a chunk.
    Generate(generate::GenerateArgs),
    /// Train a model: pretrain, retro-fit a GPT or GPT-fit the baseline on a retrieval DB, or instruction-tune
    /// (sft) on conversations; resumable.
    Train(train::TrainArgs),
    /// Evaluate a model: validation perplexity, zero-shot QA (EM / F1) with retrieved contexts.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Draw the loss curves of training runs on one PNG.
    Plot(plot::PlotArgs),
    /// Chat with a model in the terminal (history, streamed answers, /sources shows what was retrieved).
    Chat(chat::ChatArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (docs/serve.md).
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    blas_core::ensure_openblas_core();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // Keep usage errors to one line too; `--help` has the rest.
            let rendered = err.render().to_string();
            eprintln!(
                "{} (see --help)",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    if let Some(threads) = cli.threads {
        // Read by candle's matrix multiply (rayon) when it first starts threads.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        // OpenMP and OpenBLAS read their variables when they load, before main: tell them directly.
        retro_db::native_threads::set_threads(threads);
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Db(command) => db::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Model(command) => model::run(command),
        Command::Generate(args) => generate::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(command) => eval::run(command),
        Command::Plot(args) => plot::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the whole cause chain, as ripgrep prints it. Some causes (candle's, when
            // RUST_BACKTRACE is set) append a backtrace on further lines; those are cut.
            let message = format!("{err:#}");
            eprintln!("error: {}", message.lines().next().unwrap_or("").trim_end());
            ExitCode::from(2)
        }
    }
}
