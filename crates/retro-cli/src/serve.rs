//! `retro serve`: the OpenAI-compatible HTTP server (docs/serve.md); a shell over `retro_serve::serve`.

use anyhow::{bail, Result};
use clap::Args;
use retro_data::chat::ChatTemplate;
use retro_serve::{Engine, ServeOptions};

use crate::decode_weights_arg::DecodeWeightsArg;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// The model: a Retro checkpoint directory, an HF directory, a GGUF file, or a directory holding a GGUF.
    #[arg(long)]
    model: PathBuf,
    /// Retrieval DB (from `retro db build`); requests then retrieve unless they say `"retrieval": {"enabled": false}`.
    #[arg(long)]
    db: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port; 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests that may wait while one runs; more get 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Upper bound and default of a request's max_tokens.
    #[arg(long, default_value_t = 512)]
    max_tokens_cap: usize,
    /// Seconds a request may take, from arrival to its last token (504 after).
    #[arg(long, default_value_t = 300.0)]
    timeout_s: f64,
    /// Largest request body in bytes (413 over it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Chat template (default: the model's own, ChatML when its tokenizer has the markers, else the reference's).
    #[arg(long, value_enum)]
    template: Option<ChatTemplate>,
    /// System turn for chats that send no system message (default: the reference's for --template megatron).
    #[arg(long)]
    system: Option<String>,
    /// The model id that clients use (default: the model's file or directory name).
    #[arg(long)]
    model_name: Option<String>,
    #[command(flatten)]
    decode: DecodeWeightsArg,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if !(a.timeout_s.is_finite() && a.timeout_s > 0.0) {
        bail!(
            "--timeout-s must be a number of seconds above 0, got {}",
            a.timeout_s
        );
    }
    let opts = ServeOptions {
        host: a.host,
        port: a.port,
        queue: a.queue,
        max_tokens_cap: a.max_tokens_cap,
        timeout: Duration::from_secs_f64(a.timeout_s),
        max_body_bytes: a.max_body_bytes,
        template: a.template,
        system: a.system,
        model_name: a.model_name,
    };
    opts.validate()?;
    let engine = Engine::load_with(&a.model, a.db.as_deref(), a.decode.decode_weights)?;
    retro_serve::serve(engine, opts)
}
