//! `retro chat`: an interactive terminal chat. Reads one user message per line from stdin, keeps the history (dropping
//! the oldest turns when it no longer fits the model's context), streams each answer to stdout. `/sources` prints what
//! was retrieved for the last answer, `/reset` forgets the history, `/quit` (or end of input) leaves.

use crate::output::write_stdout;
use anyhow::{Context, Result};
use clap::Args;
use retro_data::chat::{ChatTemplate, Message, Role, MEGATRON_SFT_SYSTEM};
use retro_model::Retrieval;

use crate::decode_weights_arg::DecodeWeightsArg;
use crate::sampling_args::SamplingArgs;
use retro_serve::{Engine, GenerateRequest, Prompt, RetrievalRequest};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct ChatArgs {
    /// The model: a Retro checkpoint directory, an HF directory, a GGUF file, or a directory holding a GGUF.
    #[arg(long)]
    model: PathBuf,
    /// Retrieval DB (from `retro db build`) to retrieve from while answering; needs a Retro checkpoint.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Chat template (default: the model's own, ChatML when its tokenizer has the markers, else the reference's).
    #[arg(long, value_enum)]
    template: Option<ChatTemplate>,
    /// The system turn (default: the reference's system line with --template megatron, none with chatml).
    #[arg(long)]
    system: Option<String>,
    /// Tokens per answer at most.
    #[arg(long, default_value_t = 256)]
    max_new: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    decode: DecodeWeightsArg,
    /// Neighbours per chunk (default: the model's k).
    #[arg(long)]
    k: Option<usize>,
}

pub fn run(a: ChatArgs) -> Result<()> {
    let sampling = a.sampling.options()?;
    if a.max_new == 0 {
        anyhow::bail!("--max-new must be at least 1");
    }
    let mut engine = Engine::load_with(&a.model, a.db.as_deref(), a.decode.decode_weights)?;
    let template = a.template.unwrap_or_else(|| engine.default_template());
    template.check_tokenizer(engine.tokenizer().inner())?;
    let system = a
        .system
        .clone()
        .or_else(|| (template == ChatTemplate::Megatron).then(|| MEGATRON_SFT_SYSTEM.to_string()));
    let request = GenerateRequest {
        max_new: a.max_new,
        sampling,
        retrieval: match (engine.has_db(), a.k) {
            (true, k) => RetrievalRequest::On { k },
            (false, Some(_)) => anyhow::bail!("--k needs --db"),
            (false, None) => RetrievalRequest::Off,
        },
        stop_strings: Vec::new(),
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "retro chat: {} ({:?} template{}). /sources, /reset, /quit.",
            engine.name(),
            template,
            if engine.has_db() { ", retrieving" } else { "" }
        );
    }
    let mut history: Vec<Message> = Vec::new();
    let mut sources: Vec<Retrieval> = Vec::new();
    let mut line = String::new();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        line.clear();
        if input.read_line(&mut line).context("cannot read stdin")? == 0 {
            break;
        }
        let text = line.trim();
        match text {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                sources.clear();
                write_stdout("(history cleared)\n")?;
            }
            "/sources" => write_stdout(&sources_text(&engine, &sources))?,
            "/help" => write_stdout("/sources: what was retrieved for the last answer; /reset: forget the history; /quit: leave\n")?,
            t if t.starts_with('/') => {
                eprintln!("unknown command {t} (try /help)")
            }
            t => {
                history.push(Message::new(Role::User, t));
                match answer(&mut engine, template, system.as_deref(), &mut history, &request) {
                    Ok((reply, retrievals)) => {
                        history.push(Message::new(Role::Assistant, reply));
                        sources = retrievals;
                    }
                    Err(e) => {
                        history.pop();
                        eprintln!("error: {}", format!("{e:#}").lines().next().unwrap_or(""));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Streams the answer to the history's last user turn; drops the oldest turns first when the prompt and the answer
/// would not fit the context.
fn answer(
    engine: &mut Engine,
    template: ChatTemplate,
    system: Option<&str>,
    history: &mut Vec<Message>,
    request: &GenerateRequest,
) -> Result<(String, Vec<Retrieval>)> {
    let ctx = engine.context_len();
    let prompt = loop {
        let text = engine.chat_prompt(template, system, history)?;
        let ids = engine.encode(&text)?;
        if ids.len() + request.max_new.min(ctx / 2) <= ctx || history.len() <= 1 {
            break ids;
        }
        // Drop the oldest exchange (user + assistant).
        history.drain(..2.min(history.len() - 1));
    };
    let done = engine.generate(&Prompt::Tokens(prompt), request, &mut |piece| {
        if !piece.is_empty() {
            write_stdout(piece)?;
        }
        Ok(())
    })?;
    write_stdout("\n")?;
    Ok((done.text.trim().to_string(), done.retrievals))
}

/// One line per retrieved neighbour: where it was retrieved, its chunk, document (and title) and text.
fn sources_text(engine: &Engine, retrievals: &[Retrieval]) -> String {
    if retrievals.is_empty() {
        return "(nothing was retrieved for the last answer)\n".into();
    }
    let mut out = String::new();
    for r in retrievals {
        for n in &r.neighbors {
            let title = engine
                .doc_title(n.doc)
                .map(|t| format!(" \"{t}\""))
                .unwrap_or_default();
            out.push_str(&format!(
                "[token {}] chunk {} doc {}{title}: {}\n",
                r.position,
                n.chunk,
                n.doc,
                n.text.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
    }
    out
}
