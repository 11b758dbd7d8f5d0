//! The HTTP API's wire format (OpenAI-compatible request bodies and responses) and the retrievals as JSON, which
//! `retro generate --json` prints too.

use crate::engine::Engine;
use retro_model::Retrieval;
use serde_json::{json, Value};

/// `[{"position", "neighbors": [{"chunk", "doc", "title"?, "text"}]}]`: every retrieval of a generation, the chunk
/// and document ids in the DB, the document's title when the corpus had one, and the retrieved text (chunk and
/// continuation).
pub fn retrievals_json(engine: &Engine, retrievals: &[Retrieval]) -> Value {
    retrievals
        .iter()
        .map(|r| {
            json!({
                "position": r.position,
                "neighbors": r.neighbors.iter().map(|n| {
                    let mut v = json!({"chunk": n.chunk, "doc": n.doc, "text": n.text});
                    if let Some(title) = engine.doc_title(n.doc) {
                        v["title"] = json!(title);
                    }
                    v
                }).collect::<Vec<_>>(),
            })
        })
        .collect()
}

// ---- The OpenAI-compatible request bodies -------------------------------------------------------------------------

use crate::api_error::ApiError;
use crate::engine::{Completion, GenerateRequest, Prompt, RetrievalRequest};
use crate::stop_strings::StopStrings;
use retro_data::chat::{ChatTemplate, Message, Role};
use retro_model::SamplingOptions;
use serde::Deserialize;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// /v1/chat/completions: messages in, an assistant message out.
    Chat,
    /// /v1/completions: a prompt in, its continuation out.
    Text,
}

/// Fields common to both endpoints (others that OpenAI clients send are accepted and ignored; none names a file).
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<u64>,
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stop: Option<StopParam>,
    pub retrieval: Option<RetrievalParam>,
}

/// OpenAI's `stop`: one string or a list of up to four.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopParam {
    One(String),
    Many(Vec<String>),
}

/// The optional `retrieval` field: `{"enabled": bool, "k": n}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalParam {
    pub enabled: Option<bool>,
    pub k: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

/// A message's content: a string, or OpenAI's array of parts of which only `{"type": "text", "text"}` is supported.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A parsed and checked request, ready for the engine.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub prompt: Prompt,
    pub request: GenerateRequest,
    pub stream: bool,
}

/// How the server turns chat messages into a prompt.
#[derive(Debug, Clone)]
pub struct PromptFormat {
    pub template: ChatTemplate,
    /// The system turn used when the request has no system message.
    pub default_system: Option<String>,
}

/// Deserialises `value` (the field `name` of the body, "" for the body itself) as `T`; errors name the field, e.g.
/// `messages[0].role: ...`.
fn field<T: serde::de::DeserializeOwned>(value: &Value, name: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (name, inner.as_str()) {
            ("", ".") => "body".to_string(),
            ("", p) => p.to_string(),
            (n, ".") => n.to_string(),
            (n, p) if p.starts_with('[') => format!("{n}{p}"),
            (n, p) => format!("{n}.{p}"),
        };
        ApiError::bad_request(format!("{path}: {}", e.into_inner()))
    })
}

/// Parses a request to `endpoint`; `max_tokens_cap` caps (and is the default of) `max_tokens`.
pub fn parse(
    endpoint: Endpoint,
    body: &[u8],
    format: &PromptFormat,
    max_tokens_cap: usize,
) -> Result<Parsed, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body: malformed JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_request("body: must be a JSON object"));
    }
    let params: Params = field(&body, "")?;
    let prompt = match endpoint {
        Endpoint::Chat => {
            let messages: Vec<ChatMessage> = match body.get("messages") {
                Some(m) => field(m, "messages")?,
                None => return Err(ApiError::bad_request("messages: missing")),
            };
            Prompt::Text(chat_prompt(&messages, format)?)
        }
        Endpoint::Text => match body.get("prompt") {
            Some(p) => text_prompt(p)?,
            None => return Err(ApiError::bad_request("prompt: missing")),
        },
    };
    let request = generate_request(&params, max_tokens_cap)?;
    Ok(Parsed {
        endpoint,
        model: params.model,
        prompt,
        request,
        stream: params.stream,
    })
}

fn chat_prompt(messages: &[ChatMessage], format: &PromptFormat) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages: must not be empty"));
    }
    let mut system: Vec<String> = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content[{j}]: only {{\"type\": \"text\", \"text\"}} parts are supported"
                            )))
                        }
                    }
                }
                text
            }
        };
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push(Message::new(Role::User, text)),
            "assistant" => turns.push(Message::new(Role::Assistant, text)),
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role: must be system, user or assistant, got '{other}'"
                )))
            }
        }
    }
    let system = if system.is_empty() {
        format.default_system.clone()
    } else {
        Some(system.join("\n\n"))
    };
    Ok(format.template.generation_prompt(system.as_deref(), &turns))
}

fn text_prompt(prompt: &serde_json::Value) -> Result<Prompt, ApiError> {
    use serde_json::Value;
    let bad = || ApiError::bad_request("prompt: must be a string, or an array of token ids");
    match prompt {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Value::Array(a) if a.len() > 1 && a.iter().all(|v| v.is_string()) => Err(
            ApiError::bad_request("prompt: only one prompt per request is supported"),
        ),
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<u32>, _>>()
            .map(Prompt::Tokens),
        _ => Err(bad()),
    }
}

fn generate_request(p: &Params, cap: usize) -> Result<GenerateRequest, ApiError> {
    if let Some(n) = p.n {
        if n != 1 {
            return Err(ApiError::bad_request(format!(
                "n: only 1 is supported, got {n}"
            )));
        }
    }
    let stop_strings = match &p.stop {
        None => Vec::new(),
        Some(StopParam::One(s)) => vec![s.clone()],
        Some(StopParam::Many(v)) => v.clone(),
    };
    if let Err(e) = StopStrings::new(stop_strings.clone()) {
        return Err(ApiError::bad_request(format!("stop: {e}")));
    }
    let max_new = match (p.max_tokens, p.max_completion_tokens) {
        (Some(m), _) | (None, Some(m)) if m < 1 => {
            return Err(ApiError::bad_request(format!(
                "max_tokens: must be at least 1, got {m}"
            )))
        }
        (Some(m), _) | (None, Some(m)) => (m as u64).min(cap as u64) as usize,
        (None, None) => cap,
    };
    let temperature = p.temperature.unwrap_or(0.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(ApiError::bad_request(format!(
            "temperature: must be a finite number >= 0, got {temperature}"
        )));
    }
    if let Some(top_p) = p.top_p {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(format!(
                "top_p: must be in (0, 1], got {top_p}"
            )));
        }
    }
    let top_k = match p.top_k {
        None => None,
        Some(k) if k >= 1 => Some(k as usize),
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "top_k: must be at least 1, got {k}"
            )))
        }
    };
    // top_p = 1 keeps every token: the same as none.
    let top_p = p.top_p.filter(|&t| t < 1.0);
    let retrieval = match &p.retrieval {
        None => RetrievalRequest::Auto,
        Some(RetrievalParam {
            enabled: Some(false),
            ..
        }) => RetrievalRequest::Off,
        Some(RetrievalParam {
            enabled: Some(true),
            k,
        }) => RetrievalRequest::On { k: *k },
        Some(RetrievalParam {
            enabled: None,
            k: None,
        }) => RetrievalRequest::Auto,
        Some(RetrievalParam {
            enabled: None,
            k: Some(k),
        }) => RetrievalRequest::On { k: Some(*k) },
    };
    Ok(GenerateRequest {
        max_new,
        sampling: SamplingOptions {
            temperature,
            top_k,
            top_p,
            seed: p.seed.unwrap_or(0),
        },
        retrieval,
        stop_strings,
    })
}

// ---- Responses ----------------------------------------------------------------------------------------------------

/// `{"prompt_tokens", "completion_tokens", "total_tokens"}`.
pub fn usage_json(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.tokens.len(),
        "total_tokens": c.prompt_tokens + c.tokens.len(),
    })
}

/// The whole (non-streamed) response.
pub fn response_json(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    c: &Completion,
    retrieval: Value,
) -> Value {
    let choice = match endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": c.text},
            "finish_reason": c.finish_reason.as_str(),
        }),
        Endpoint::Text => json!({
            "index": 0,
            "text": c.text,
            "logprobs": null,
            "finish_reason": c.finish_reason.as_str(),
        }),
    };
    json!({
        "id": id,
        "object": match endpoint { Endpoint::Chat => "chat.completion", Endpoint::Text => "text_completion" },
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_json(c),
        "retrieval": retrieval,
    })
}

/// One streamed chunk: a piece of text (`piece`), or the last chunk with the finish reason, usage and retrievals
/// (`done`). A chat stream's first chunk carries the role (`piece` = "" and `role` true).
pub fn chunk_json(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    piece: &str,
    role: bool,
    done: Option<(&Completion, Value)>,
) -> Value {
    let finish = done.as_ref().map(|(c, _)| c.finish_reason.as_str());
    let choice = match endpoint {
        Endpoint::Chat => {
            let delta = if role {
                json!({"role": "assistant", "content": piece})
            } else if done.is_some() {
                json!({})
            } else {
                json!({"content": piece})
            };
            json!({"index": 0, "delta": delta, "finish_reason": finish})
        }
        Endpoint::Text => {
            json!({"index": 0, "text": piece, "logprobs": null, "finish_reason": finish})
        }
    };
    let mut v = json!({
        "id": id,
        "object": match endpoint { Endpoint::Chat => "chat.completion.chunk", Endpoint::Text => "text_completion" },
        "created": created,
        "model": model,
        "choices": [choice],
    });
    if let Some((c, retrieval)) = done {
        v["usage"] = usage_json(c);
        v["retrieval"] = retrieval;
    }
    v
}
