//! Inference for people and programs (issue 5, "Chat and HTTP"): one [`Engine`] that loads a model (a Retro
//! checkpoint, an HF directory or a GGUF), its tokenizer and stop tokens, and optionally a retrieval DB, and generates
//! with streamed text; and the OpenAI-compatible HTTP server over it ([`serve`]).
//!
//! `retro generate`, `retro chat` and `retro serve` are thin shells over this crate, and the QA evaluation calls
//! [`Engine::generate`] directly (greedy, retrieval on or off).
//!
//! - [`engine`]: [`Engine`], [`GenerateRequest`], [`Completion`].
//! - [`loaded`]: loading a model file or directory ([`LoadedModel`]) and its stop tokens.
//! - [`db_retriever`]: the DB-backed [`retro_model::Retriever`]; [`prompt_contexts`]: passages for a prompt (§5).
//! - [`text_stream`]: incremental decoding that never splits a UTF-8 character; [`stop_strings`]: OpenAI's `stop`.
//! - [`api`]: the JSON wire format (OpenAI-compatible bodies, retrievals); [`api_error`]: its error objects.
//! - [`worker`]: the model's thread and its bounded queue; [`server`]: the routes, limits and shutdown.

pub mod api;
pub mod api_error;
pub mod db_retriever;
pub mod engine;
pub mod loaded;
pub mod prompt_contexts;
pub mod server;
pub mod stop_strings;
pub mod text_stream;
pub mod worker;

pub use db_retriever::DbRetriever;
pub use engine::{
    Completion, Engine, FinishReason, GenerateRequest, InvalidRequest, Prompt, RetrievalRequest,
};
pub use loaded::LoadedModel;
pub use prompt_contexts::prompt_contexts;
pub use server::{serve, ServeOptions};
pub use text_stream::TextStream;
