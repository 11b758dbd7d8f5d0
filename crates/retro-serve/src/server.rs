//! The OpenAI-compatible HTTP server (docs/serve.md): POST /v1/chat/completions and /v1/completions (whole, or
//! streamed as server-sent events ending with `data: [DONE]`), GET /v1/models and GET /health. Requests go to the
//! model's [`Worker`] through its bounded queue; the server adds the body cap (413), the max_tokens cap, the
//! per-request timeout (504) and a clean shutdown on SIGTERM or ctrl-c.

use crate::api::{chunk_json, parse, response_json, Endpoint, Parsed, PromptFormat};
use crate::api_error::ApiError;
use crate::engine::Engine;
use crate::worker::{Event, Job, JobError, Worker};
use anyhow::{bail, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use retro_data::chat::ChatTemplate;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How `retro serve` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (printed on stderr).
    pub port: u16,
    /// Requests that may wait while one runs.
    pub queue: usize,
    /// Upper bound (and default) of a request's max_tokens.
    pub max_tokens_cap: usize,
    /// A request that has not finished this long after it arrived is stopped (504).
    pub timeout: Duration,
    /// Larger bodies are refused (413).
    pub max_body_bytes: usize,
    /// Chat template; `None`: the model's own (ChatML when its tokenizer has the markers, else the reference's).
    pub template: Option<ChatTemplate>,
    /// System turn for chats without a system message.
    pub system: Option<String>,
    /// The model id clients send; `None`: the model's file or directory name.
    pub model_name: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            queue: 8,
            max_tokens_cap: 512,
            timeout: Duration::from_secs(300),
            max_body_bytes: 1 << 20,
            template: None,
            system: None,
            model_name: None,
        }
    }
}

impl ServeOptions {
    /// One-line errors naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.queue == 0 {
            bail!("--queue must be at least 1");
        }
        if self.max_tokens_cap == 0 {
            bail!("--max-tokens-cap must be at least 1");
        }
        if self.timeout.is_zero() {
            bail!("--timeout-s must be more than 0");
        }
        if self.max_body_bytes == 0 {
            bail!("--max-body-bytes must be at least 1");
        }
        Ok(())
    }
}

struct AppState {
    worker: Worker,
    model: String,
    format: PromptFormat,
    opts: ServeOptions,
    created: u64,
    next_id: AtomicU64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves `engine` until SIGTERM or ctrl-c; prints `retro serve: listening on http://ADDR` on stderr once the
/// port is open.
pub fn serve(mut engine: Engine, opts: ServeOptions) -> Result<()> {
    opts.validate()?;
    let template = opts.template.unwrap_or_else(|| engine.default_template());
    template.check_tokenizer(engine.tokenizer().inner())?;
    let default_system = opts.system.clone().or_else(|| {
        (template == ChatTemplate::Megatron)
            .then(|| retro_data::chat::MEGATRON_SFT_SYSTEM.to_string())
    });
    if let Some(name) = &opts.model_name {
        engine.set_name(name.clone());
    }
    let model = engine.name().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let state = Arc::new(AppState {
        worker: Worker::start(engine, opts.queue),
        model,
        format: PromptFormat {
            template,
            default_system,
        },
        created: now_s(),
        next_id: AtomicU64::new(1),
        opts: opts.clone(),
    });
    let result = runtime.block_on(run(state.clone()));
    state.worker.stop();
    result
}

async fn run(state: Arc<AppState>) -> Result<()> {
    let addr = format!("{}:{}", state.opts.host, state.opts.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("--host/--port: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes))
        .with_state(state.clone());
    eprintln!("retro serve: listening on http://{local}");
    let shutdown_state = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("retro serve: shutting down");
            // Running and queued generations stop at their next token, so open streams end.
            shutdown_state.worker.begin_shutdown();
        })
        .await
        .context("the server failed")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn health(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "model": s.model,
        "queued": s.worker.queued(),
        "busy": s.worker.busy(),
        "queue_capacity": s.worker.capacity(),
    }))
}

fn model_object(s: &AppState) -> serde_json::Value {
    json!({"id": s.model, "object": "model", "created": s.created, "owned_by": "retro"})
}

async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [model_object(&s)]}))
}

async fn model(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if id != s.model {
        return Err(ApiError::unknown_model(&id, &s.model));
    }
    Ok(Json(model_object(&s)))
}

async fn chat(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(s, Endpoint::Chat, body).await
}

async fn completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(s, Endpoint::Text, body).await
}

async fn complete(
    s: Arc<AppState>,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match try_complete(s, endpoint, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn job_error(e: JobError, s: &AppState) -> ApiError {
    match e {
        JobError::Invalid(m) => ApiError::bad_request(m),
        JobError::Timeout => ApiError::timeout(s.opts.timeout.as_secs_f64()),
        JobError::ShuttingDown => {
            let mut e = ApiError::internal("the server is shutting down");
            e.status = StatusCode::SERVICE_UNAVAILABLE;
            e
        }
        JobError::Internal(m) => ApiError::internal(m),
    }
}

async fn try_complete(
    s: Arc<AppState>,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(s.opts.max_body_bytes)
        } else {
            ApiError::bad_request(format!("body: {e}"))
        }
    })?;
    let Parsed {
        model,
        prompt,
        request,
        stream,
        ..
    } = parse(endpoint, &body, &s.format, s.opts.max_tokens_cap)?;
    if let Some(m) = &model {
        if m != &s.model {
            return Err(ApiError::unknown_model(m, &s.model));
        }
    }
    let deadline = arrived + s.opts.timeout;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt,
        request,
        deadline,
        stream,
        events: tx,
    };
    if s.worker.submit(job).is_err() {
        return Err(ApiError::busy(s.worker.capacity()));
    }
    let id = format!(
        "{}-{}",
        match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Text => "cmpl",
        },
        s.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let created = now_s();
    let tokio_deadline = tokio::time::Instant::from_std(deadline);
    // The first event decides the status: an error before any text is an error response, not a stream.
    let first = match tokio::time::timeout_at(tokio_deadline, rx.recv()).await {
        Err(_) => return Err(ApiError::timeout(s.opts.timeout.as_secs_f64())),
        Ok(None) => return Err(ApiError::internal("the model worker stopped")),
        Ok(Some(Event::Failed(e))) => return Err(job_error(e, &s)),
        Ok(Some(event)) => event,
    };
    if !stream {
        return match first {
            Event::Done(c, retrieval) => Ok(Json(response_json(
                endpoint, &id, created, &s.model, &c, retrieval,
            ))
            .into_response()),
            _ => Err(ApiError::internal("unexpected event from the model worker")),
        };
    }
    // Server-sent events: the worker's events become `data: {...}` lines; a task forwards them so that a client that
    // goes away drops the worker's channel (and the worker stops at the next token).
    let (out_tx, out_rx) = mpsc::channel::<Result<String, Infallible>>(64);
    let sse = |v: serde_json::Value| Ok::<_, Infallible>(format!("data: {v}\n\n"));
    let model = s.model.clone();
    let state = s.clone();
    tokio::spawn(async move {
        let chunk =
            |piece: &str, role: bool| chunk_json(endpoint, &id, created, &model, piece, role, None);
        if endpoint == Endpoint::Chat && out_tx.send(sse(chunk("", true))).await.is_err() {
            return;
        }
        let mut event = Some(first);
        loop {
            let e = match event.take() {
                Some(e) => e,
                None => match tokio::time::timeout_at(tokio_deadline, rx.recv()).await {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        Event::Failed(JobError::Internal("the model worker stopped".into()))
                    }
                    Err(_) => Event::Failed(JobError::Timeout),
                },
            };
            let (line, last) = match e {
                Event::Piece(p) => (sse(chunk(&p, false)), false),
                Event::Done(c, retrieval) => (
                    sse(chunk_json(
                        endpoint,
                        &id,
                        created,
                        &model,
                        "",
                        false,
                        Some((&c, retrieval)),
                    )),
                    true,
                ),
                Event::Failed(err) => (sse(job_error(err, &state).body()), true),
            };
            if out_tx.send(line).await.is_err() {
                return;
            }
            if last {
                let _ = out_tx.send(Ok("data: [DONE]\n\n".to_string())).await;
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out_rx));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}
