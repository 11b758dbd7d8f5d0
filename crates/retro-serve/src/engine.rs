//! The inference engine: a loaded model, its tokenizer and stop tokens, and optionally a retrieval DB; one
//! [`Engine::generate`] call per completion, streaming its text through a callback.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use retro_serve::{Engine, GenerateRequest, Prompt, RetrievalRequest};
//! let mut engine = Engine::load("run/step-100".as_ref(), Some("db".as_ref()))?;
//! let request = GenerateRequest { max_new: 64, retrieval: RetrievalRequest::Off, ..Default::default() };
//! let done = engine.generate(&Prompt::from("Question: ..."), &request, &mut |_piece| Ok(()))?;
//! println!("{} ({} tokens, {:?})", done.text, done.tokens.len(), done.finish_reason);
//! # Ok(()) }
//! ```
//!
//! Errors caused by the request itself (an empty or too long prompt, retrieval asked of a model or engine that cannot
//! retrieve, bad sampling values) are [`InvalidRequest`]s, so a server can answer them with a 400; anything else is an
//! engine failure.

use crate::db_retriever::DbRetriever;
use crate::loaded::{stop_tokens, LoadedModel};
use crate::stop_strings::StopStrings;
use crate::text_stream::TextStream;
use anyhow::{Context, Result};
use retro_data::chat::{ChatTemplate, Message};
use retro_data::GptTokenizer;
use retro_model::candle_core::Device;
use retro_model::{
    generate, generate_plain, DecodeWeights, GenerateOptions, Generation, Mode, Retrieval,
    SamplingOptions, TokenFlow,
};
use std::path::Path;

/// A request that cannot be served as asked; the message names the field and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(InvalidRequest(message.into()).into())
}

/// What to generate after: text (tokenised as is, special-token markers included) or token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Self {
        Self::Text(text.to_string())
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(tokens: Vec<u32>) -> Self {
        Self::Tokens(tokens)
    }
}

/// Whether the Retro model retrieves while generating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetrievalRequest {
    /// Retrieve when the engine was loaded with a DB (a Retro model without one generates with its plain decoder).
    #[default]
    Auto,
    /// The plain decoder (gate 0): no retrieval, no cross-attention.
    Off,
    /// Retrieve at every chunk; `k` neighbours per chunk, at most the model's k (`None`: the model's k). Needs a Retro
    /// model and a DB.
    On { k: Option<usize> },
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Tokens to generate at most; generation also ends after a stop token or at the model's context.
    pub max_new: usize,
    pub sampling: SamplingOptions,
    pub retrieval: RetrievalRequest,
    /// Generation also ends when the text contains one of these (at most 4, none empty); the text
    /// then ends just before it (OpenAI's `stop`).
    pub stop_strings: Vec<String>,
}

impl Default for GenerateRequest {
    /// 128 tokens, greedy, retrieval when there is a DB, no stop strings.
    fn default() -> Self {
        Self {
            max_new: 128,
            sampling: SamplingOptions::greedy(),
            retrieval: RetrievalRequest::Auto,
            stop_strings: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop (end-of-text) token, or a stop string.
    Stop,
    /// `max_new` tokens, or the model's context.
    Length,
}

impl FinishReason {
    /// OpenAI's name: "stop" or "length".
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// One finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The decoded generated tokens (special tokens such as the stop token decode to nothing), cut before a stop
    /// string. Equals the pieces passed to `on_piece`, joined.
    pub text: String,
    /// The generated tokens; the stop token, or the token that completed a stop string, is the last.
    pub tokens: Vec<u32>,
    /// Length of the prompt in tokens.
    pub prompt_tokens: usize,
    /// Every retrieval, in order (chunks of the prompt included); empty without retrieval.
    pub retrievals: Vec<Retrieval>,
    pub finish_reason: FinishReason,
}

/// A model ready to generate (see the module docs).
pub struct Engine {
    model: LoadedModel,
    tokenizer: GptTokenizer,
    stop: Vec<u32>,
    retriever: Option<DbRetriever>,
    name: String,
}

impl Engine {
    /// Loads the model at `model` (Retro checkpoint directory, HF directory, GGUF file or a directory with a GGUF;
    /// its tokenizer.json must be next to it) on the CPU, and the retrieval DB at `db`, which needs a Retro model whose
    /// tokenizer and chunk length the DB was built with.
    pub fn load(model: &Path, db: Option<&Path>) -> Result<Self> {
        Self::load_with(model, db, DecodeWeights::Auto)
    }

    /// [`Engine::load`] with a choice of the weights decoding multiplies (`--decode-weights`).
    pub fn load_with(model: &Path, db: Option<&Path>, decode: DecodeWeights) -> Result<Self> {
        let device = Device::Cpu;
        let (loaded, tokenizer_dir) = LoadedModel::load(model, &device, decode)?;
        let tokenizer = GptTokenizer::load(&tokenizer_dir, None).with_context(|| {
            format!(
                "cannot load the model's tokenizer from {}",
                tokenizer_dir.display()
            )
        })?;
        let stop = stop_tokens(&tokenizer, &tokenizer_dir);
        let retriever = match (&loaded, db) {
            (_, None) => None,
            (LoadedModel::Gpt(_), Some(_)) => anyhow::bail!(
                "db: needs a Retro checkpoint (made by `retro model retrofit`); {} is a plain GPT",
                model.display()
            ),
            (LoadedModel::Retro(retro), Some(dir)) => {
                Some(DbRetriever::open(dir, &tokenizer, retro)?)
            }
        };
        let name = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "retro".to_string());
        Ok(Self {
            model: loaded,
            tokenizer,
            stop,
            retriever,
            name,
        })
    }

    /// A short name for the model: the file or directory name it was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    pub fn tokenizer(&self) -> &GptTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    pub fn is_retro(&self) -> bool {
        matches!(self.model, LoadedModel::Retro(_))
    }

    /// Whether a retrieval DB was loaded.
    pub fn has_db(&self) -> bool {
        self.retriever.is_some()
    }

    /// The loaded DB's retriever (e.g. to search for prompt contexts).
    pub fn retriever_mut(&mut self) -> Option<&mut DbRetriever> {
        self.retriever.as_mut()
    }

    /// The model's context in tokens (prompt and generation together).
    pub fn context_len(&self) -> usize {
        self.model.context_len()
    }

    /// Neighbours per chunk of a Retro model; `None` for a plain GPT.
    pub fn num_neighbors(&self) -> Option<usize> {
        match &self.model {
            LoadedModel::Retro(m) => Some(m.config().num_neighbors),
            LoadedModel::Gpt(_) => None,
        }
    }

    /// Tokens that end generation.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// The model's own chat template when its tokenizer has ChatML's markers, else the reference's.
    pub fn default_template(&self) -> ChatTemplate {
        ChatTemplate::default_for(self.tokenizer.inner())
    }

    /// The prompt asking for the next assistant turn of `messages` in `template` (failing when the tokenizer cannot
    /// express the template).
    pub fn chat_prompt(
        &self,
        template: ChatTemplate,
        system: Option<&str>,
        messages: &[Message],
    ) -> Result<String> {
        template.check_tokenizer(self.tokenizer.inner())?;
        Ok(template.generation_prompt(system, messages))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// Generates after `prompt`. `on_piece` is called once per generated token with the text it completes (empty
    /// while a UTF-8 character is incomplete, or for a special token), then once more with any remaining text; the
    /// pieces join to [`Completion::text`]. Text that may begin a stop string is held back until it is known not to
    /// (and a stop string itself is never passed). An error from `on_piece` stops generation and is returned (use it
    /// to cancel).
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        request: &GenerateRequest,
        on_piece: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<Completion> {
        if let Err(e) = request.sampling.validate() {
            return invalid(format!("sampling: {e}"));
        }
        let ids = self.prompt_ids(prompt)?;
        let ctx = self.context_len();
        if ids.len() >= ctx {
            return invalid(format!(
                "prompt: {} tokens; the model's context is {ctx} tokens, which leaves no room to generate",
                ids.len()
            ));
        }
        let mut stop_strings = match StopStrings::new(request.stop_strings.clone()) {
            Ok(s) => s,
            Err(e) => return invalid(format!("stop: {e}")),
        };
        let retrieve = self.resolve_retrieval(request.retrieval)?;
        let opts = GenerateOptions {
            max_new: request.max_new,
            sampling: request.sampling,
            stop: self.stop.clone(),
        };
        let Self {
            model,
            tokenizer,
            retriever,
            ..
        } = self;
        let mut stream = TextStream::new();
        let mut text = String::new();
        let mut on_token = |t: u32| -> Result<TokenFlow> {
            let piece = stop_strings.push(&stream.push(tokenizer, t)?);
            text.push_str(&piece);
            on_piece(&piece)?;
            Ok(if stop_strings.hit() {
                TokenFlow::Break(())
            } else {
                TokenFlow::Continue(())
            })
        };
        let generation = match (&*model, retrieve) {
            (LoadedModel::Gpt(gpt), _) => Generation {
                tokens: generate_plain(gpt, &ids, &opts, &mut on_token)?,
                retrievals: Vec::new(),
            },
            (LoadedModel::Retro(retro), None) => {
                generate(retro, &ids, None, &opts, Mode::Cached, &mut on_token)?
            }
            (LoadedModel::Retro(retro), Some(k)) => {
                let r = retriever
                    .as_mut()
                    .expect("resolve_retrieval checked the retriever");
                r.max_k = k;
                generate(retro, &ids, Some(r), &opts, Mode::Cached, &mut on_token)?
            }
        };
        let decoded = tokenizer.decode(&generation.tokens)?;
        let mut rest = stop_strings.push(stream.rest(&decoded));
        rest.push_str(&stop_strings.finish());
        if !rest.is_empty() {
            text.push_str(&rest);
            on_piece(&rest)?;
        }
        let stopped = stop_strings.hit()
            || generation
                .tokens
                .last()
                .is_some_and(|t| self.stop.contains(t));
        Ok(Completion {
            text,
            tokens: generation.tokens,
            prompt_tokens: ids.len(),
            retrievals: generation.retrievals,
            finish_reason: if stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            },
        })
    }

    /// The title of a retrieved document, when the DB's corpus had one.
    pub fn doc_title(&self, doc: usize) -> Option<String> {
        self.retriever.as_ref().and_then(|r| r.title(doc))
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text(text) => self.tokenizer.encode(text)?,
            Prompt::Tokens(ids) => {
                let vocab = match &self.model {
                    LoadedModel::Gpt(m) => m.config().vocab_size,
                    LoadedModel::Retro(m) => m.config().decoder.vocab_size,
                };
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return invalid(format!(
                        "prompt: token id {bad} is not below the vocabulary size {vocab}"
                    ));
                }
                ids.clone()
            }
        };
        if ids.is_empty() {
            return invalid("prompt: is empty");
        }
        Ok(ids)
    }

    /// `None`: no retrieval; `Some(k)`: retrieve (with at most k neighbours when given).
    fn resolve_retrieval(&self, request: RetrievalRequest) -> Result<Option<Option<usize>>> {
        match request {
            RetrievalRequest::Off => Ok(None),
            RetrievalRequest::Auto => Ok(self.has_db().then_some(None)),
            RetrievalRequest::On { k } => {
                let Some(max) = self.num_neighbors() else {
                    return invalid(format!(
                        "retrieval: needs a Retro checkpoint (made by `retro model retrofit`); {} is a plain GPT",
                        self.name
                    ));
                };
                if !self.has_db() {
                    return invalid("retrieval: no retrieval DB was loaded (--db)");
                }
                if let Some(k) = k {
                    if k == 0 || k > max {
                        return invalid(format!(
                            "retrieval.k: must be between 1 and the model's {max} neighbours, got {k}"
                        ));
                    }
                }
                Ok(Some(k))
            }
        }
    }
}
