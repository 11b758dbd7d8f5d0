//! `retro generate`: text generation with a plain GPT (GGUF / HF directory) or a Retro checkpoint, retrieving from a
//! retrieval DB each time the sequence completes a chunk. A thin shell over `retro_serve::Engine` (loading, the
//! DB-backed retriever and streaming decode live there; the generation loop in `retro_model::retro_generate`).

use crate::decode_weights_arg::DecodeWeightsArg;
use crate::output::write_stdout;
use crate::sampling_args::SamplingArgs;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use retro_data::chat::{ChatTemplate, Message, Role, MEGATRON_SFT_SYSTEM};
use retro_db::RetrievalDb;
use retro_model::retro_config::is_retro_checkpoint;
use retro_serve::{prompt_contexts, Engine, GenerateRequest, Prompt, RetrievalRequest};
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
    /// Retrieval DB (from `retro db build`): a Retro checkpoint retrieves from it at every chunk; with --context-k any
    /// model gets passages from it in its prompt.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Put the top N passages that --db finds for the prompt into the prompt, the paper's evaluation format (shared
    /// reference §5): with --template megatron or chatml, the evaluation system line (answers "based on the
    /// context"), the passages, then the prompt as the user's turn; with --template none, the passages, each
    /// followed by a blank line, then the prompt. A Retro model still retrieves at every chunk (the encoder on) unless
    /// --no-retrieval (encoder off); a plain GPT uses the DB for the passages only.
    #[arg(long, default_value_t = 0, value_name = "N")]
    context_k: usize,
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
    /// Print one JSON object at the end ({"text", "tokens", "prompt", "contexts", "retrievals"}; prompt: the text the
    /// model was given, template and passages included) instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let sampling = a.sampling.options()?;
    if a.context_k > 0 && a.db.is_none() {
        bail!(
            "--context-k {} needs --db DB to find passages in",
            a.context_k
        );
    }
    let is_retro = a.model.is_dir() && is_retro_checkpoint(&a.model);
    // A plain GPT takes a DB only for prompt passages; the engine's DB is for retrieval during generation.
    let db = if a.no_retrieval || (!is_retro && a.context_k > 0) {
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
    let contexts = match (a.context_k, a.db.as_deref()) {
        (0, _) | (_, None) => Vec::new(),
        (k, Some(dir)) => match engine.retriever_mut() {
            Some(r) => prompt_contexts(r.db_mut(), &a.prompt, k)?,
            None => prompt_contexts(&mut RetrievalDb::open(dir, None, None)?, &a.prompt, k)?,
        },
    };
    let user = [Message::new(Role::User, a.prompt.as_str())];
    let prompt = match (a.template, contexts.is_empty()) {
        (Template::None, true) => a.prompt.clone(),
        (Template::None, false) => format!("{}\n\n{}", contexts.join("\n\n"), a.prompt),
        (Template::Megatron, true) => {
            engine.chat_prompt(ChatTemplate::Megatron, Some(MEGATRON_SFT_SYSTEM), &user)?
        }
        (Template::Chatml, true) => engine.chat_prompt(ChatTemplate::Chatml, None, &user)?,
        (Template::Megatron, false) => {
            ChatTemplate::Megatron.dialogue_qa_prompt(&contexts, &[], &a.prompt)
        }
        (Template::Chatml, false) => {
            ChatTemplate::Chatml.check_tokenizer(engine.tokenizer().inner())?;
            ChatTemplate::Chatml.dialogue_qa_prompt(&contexts, &[], &a.prompt)
        }
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
    let done = engine.generate(&Prompt::Text(prompt.clone()), &request, &mut |piece| {
        if stream && !piece.is_empty() {
            write_stdout(piece)?;
        }
        Ok(())
    })?;
    if a.json {
        let out = serde_json::json!({
            "text": done.text,
            "tokens": done.tokens,
            "prompt": prompt,
            "contexts": contexts,
            "retrievals": retro_serve::api::retrievals_json(&engine, &done.retrievals),
        });
        write_stdout(&(serde_json::to_string_pretty(&out)? + "\n"))
    } else {
        write_stdout("\n")
    }
}
