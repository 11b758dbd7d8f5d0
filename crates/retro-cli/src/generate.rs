//! `retro generate`: text generation with a plain GPT (GGUF / HF directory) or a Retro checkpoint, retrieving from a
//! retrieval DB each time the sequence completes a chunk. A thin shell over `retro_serve::Engine` (loading, the
//! DB-backed retriever and streaming decode live there; the generation loop in `retro_model::retro_generate`).

use crate::decode_weights_arg::DecodeWeightsArg;
use crate::output::write_stdout;
use crate::sampling_args::SamplingArgs;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use retro_data::chat::{ChatTemplate, Message, Role, MEGATRON_SFT_SYSTEM};
use retro_serve::{Engine, GenerateRequest, Prompt, RetrievalRequest};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum Template {
    /// The prompt as given.
    None,
    /// The reference's: its SFT system line, `User: PROMPT`, then `Assistant:`.
    Megatron,
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
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    decode: DecodeWeightsArg,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "none")]
    template: Template,
    /// Generate without retrieval (the Retro model's plain decoder; gate 0).
    #[arg(long)]
    no_retrieval: bool,
    /// End generation when the text contains STOP, and print the text before it (repeatable, at most 4).
    #[arg(long = "stop", value_name = "STOP")]
    stop_strings: Vec<String>,
    /// Print one JSON object at the end ({"text", "tokens", "retrievals"}) instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let sampling = a.sampling.options()?;
    let db = if a.no_retrieval {
        None
    } else {
        a.db.as_deref()
    };
    let mut engine = Engine::load_with(&a.model, db, a.decode.decode_weights)?;
    if engine.is_retro() && !engine.has_db() && !a.no_retrieval {
        bail!(
            "{} is a Retro checkpoint: pass --db DB to retrieve, or --no-retrieval",
            a.model.display()
        );
    }
    let user = [Message::new(Role::User, a.prompt.as_str())];
    let prompt = match a.template {
        Template::None => a.prompt.clone(),
        Template::Megatron => {
            engine.chat_prompt(ChatTemplate::Megatron, Some(MEGATRON_SFT_SYSTEM), &user)?
        }
        Template::Chatml => engine.chat_prompt(ChatTemplate::Chatml, None, &user)?,
    };
    let request = GenerateRequest {
        max_new: a.max_new,
        sampling,
        retrieval: if a.no_retrieval {
            RetrievalRequest::Off
        } else {
            RetrievalRequest::Auto
        },
        stop_strings: a.stop_strings.clone(),
    };
    let stream = !a.json;
    let done = engine.generate(&Prompt::Text(prompt), &request, &mut |piece| {
        if stream && !piece.is_empty() {
            write_stdout(piece)?;
        }
        Ok(())
    })?;
    if a.json {
        let out = serde_json::json!({
            "text": done.text,
            "tokens": done.tokens,
            "retrievals": retro_serve::api::retrievals_json(&engine, &done.retrievals),
        });
        write_stdout(&(serde_json::to_string_pretty(&out)? + "\n"))
    } else {
        write_stdout("\n")
    }
}
