//! `retro serve` driven over real HTTP (a small client on `TcpStream`): a seeded tiny Retro model with the SmolLM2
//! tokenizer and a real DB of 150 Wikipedia articles. Plain and streamed completions (the streamed pieces join to the
//! plain greedy text, which equals `retro generate`'s), retrieval in the response, 400 / 404 / 413 / 503 / 504,
//! concurrent requests, and a clean exit on SIGTERM.

mod common;
mod tiny_retro;

use common::{fails, ok, p};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiny_retro::fixture;

/// A running `retro serve` on a free port; killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let f = fixture();
        let mut child = Command::new(env!("CARGO_BIN_EXE_retro"))
            .args([
                "serve",
                "--model",
                p(&f.model),
                "--port",
                "0",
                "--threads",
                "2",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.split("listening on http://").nth(1) {
                        break a.trim().to_string();
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                _ => panic!("retro serve exited before listening: {seen}"),
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    fn get(&self, path: &str) -> Response {
        http(&self.addr, "GET", path, b"")
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        http(&self.addr, "POST", path, body.to_string().as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of a server-sent-event body, up to `[DONE]` (which must be there).
    fn events(&self) -> Vec<Value> {
        let text = String::from_utf8(self.body.clone()).unwrap();
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let data = line.strip_prefix("data: ").expect("an SSE data line");
            if data == "[DONE]" {
                return out;
            }
            out.push(serde_json::from_str(data).unwrap());
        }
        panic!("no data: [DONE] in {text}");
    }
}

fn send_request(addr: &str, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    s
}

/// One HTTP/1.1 request; the whole response (chunked bodies decoded).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Response {
    let s = send_request(addr, method, path, body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response {
        status,
        headers,
        body,
    }
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            return (status, headers);
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
}

fn error_of(r: &Response, status: u16, expected: &str) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(expected), "{expected:?} in {message:?}");
    assert!(v["error"]["type"].is_string(), "{v}");
    v
}

const PROMPT: &str = "The Eiffel Tower is located in";

/// `retro generate --json` on the same model: the reference for the server's greedy text.
fn generate_json(extra: &[&str], max_new: &str) -> Value {
    let f = fixture();
    let out = ok(&[
        &[
            "generate",
            "--model",
            p(&f.model),
            "--prompt",
            PROMPT,
            "--max-new",
            max_new,
        ][..],
        extra,
    ]
    .concat());
    serde_json::from_str(&out).unwrap()
}

#[test]
fn completions_plain_streamed_retrieval_and_bad_requests() {
    let f = fixture();
    let server = Server::start(&[
        "--db",
        p(&f.db),
        "--max-body-bytes",
        "4096",
        "--max-tokens-cap",
        "40",
    ]);

    // Plain, no retrieval: the text of `retro generate --no-retrieval`.
    let reference = generate_json(&["--no-retrieval", "--json"], "24");
    let r = server.post(
        "/v1/completions",
        &json!({"model": "tiny-retro", "prompt": PROMPT, "max_tokens": 24, "retrieval": {"enabled": false}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let plain = r.json();
    let text = plain["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, reference["text"].as_str().unwrap());
    assert!(!text.is_empty());
    let n_generated = reference["tokens"].as_array().unwrap().len() as u64;
    let usage = &plain["usage"];
    assert_eq!(usage["completion_tokens"], n_generated);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + n_generated
    );
    assert_eq!(plain["object"], "text_completion");
    assert_eq!(plain["retrieval"], json!([]));

    // Streamed: the pieces join to the plain text; the last chunk has the finish reason and the same usage.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 24, "stream": true, "retrieval": {"enabled": false}}),
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = r.events();
    assert!(events.len() > 2, "{events:?}");
    let joined: String = events
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, text);
    let last = events.last().unwrap();
    assert_eq!(last["usage"], *usage);
    assert_eq!(
        last["choices"][0]["finish_reason"],
        plain["choices"][0]["finish_reason"]
    );

    // Stop strings: the text ends just before the first occurrence of a string taken from the reference text,
    // plain and streamed alike (no piece carries any of it), and `retro generate --stop` agrees.
    let at = (text.len() / 4..text.len())
        .find(|&i| text.is_char_boundary(i) && text[i..].chars().nth(2).is_some())
        .unwrap();
    let stop: String = text[at..].chars().take(3).collect();
    let expected = &text[..text.find(stop.as_str()).unwrap()];
    let body = json!({"prompt": PROMPT, "max_tokens": 24, "stop": [stop, "never appears \u{1}"],
        "retrieval": {"enabled": false}});
    let stopped = server.post("/v1/completions", &body).json();
    assert_eq!(stopped["choices"][0]["text"], expected, "stop {stop:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    assert!(stopped["usage"]["completion_tokens"].as_u64().unwrap() < n_generated);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = server.post("/v1/completions", &streamed).events();
    let joined: String = events
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, expected);
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let cli = generate_json(&["--no-retrieval", "--json", "--stop", &stop], "24");
    assert_eq!(cli["text"], expected);
    for bad in [json!(""), json!(["a", "b", "c", "d", "e"]), json!(3)] {
        error_of(
            &server.post("/v1/completions", &json!({"prompt": PROMPT, "stop": bad})),
            400,
            "stop",
        );
    }

    // With retrieval (the default when the server has a DB): the retrievals of `retro generate --db`.
    let reference = generate_json(&["--db", p(&f.db), "--json"], "24");
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 24}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let with = r.json();
    assert_eq!(with["choices"][0]["text"], reference["text"]);
    let retrieval = with["retrieval"].as_array().unwrap();
    assert!(!retrieval.is_empty());
    for (got, want) in retrieval
        .iter()
        .zip(reference["retrievals"].as_array().unwrap())
    {
        assert_eq!(got["position"], want["position"]);
        let (g, w) = (&got["neighbors"], &want["neighbors"]);
        assert_eq!(g.as_array().unwrap().len(), 2);
        for i in 0..2 {
            assert_eq!(g[i]["chunk"], w[i]["chunk"]);
            assert_eq!(g[i]["text"], w[i]["text"]);
            assert!(g[i]["doc"].is_u64() && !g[i]["text"].as_str().unwrap().is_empty());
        }
    }
    // k = 1: one neighbour per chunk, also in the last chunk of a stream.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 20, "stream": true, "retrieval": {"enabled": true, "k": 1}}),
    );
    let events = r.events();
    let retrieval = events.last().unwrap()["retrieval"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!retrieval.is_empty());
    assert!(retrieval
        .iter()
        .all(|r| r["neighbors"].as_array().unwrap().len() == 1));

    // Chat: plain and streamed agree; the prompt goes through the model's ChatML template.
    let chat = json!({"messages": [{"role": "user", "content": "Where is the Eiffel Tower?"}], "max_tokens": 16,
        "retrieval": {"enabled": false}});
    let r = server.post("/v1/chat/completions", &chat);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let plain = r.json();
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["choices"][0]["message"]["role"], "assistant");
    let content = plain["choices"][0]["message"]["content"].as_str().unwrap();
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let events = server.post("/v1/chat/completions", &streamed).events();
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, content);
    assert_eq!(events.last().unwrap()["usage"], plain["usage"]);
    // The same conversation as ChatML through `retro generate --template chatml`.
    let out = ok(&[
        "generate",
        "--model",
        p(&f.model),
        "--prompt",
        "Where is the Eiffel Tower?",
        "--template",
        "chatml",
        "--max-new",
        "16",
        "--no-retrieval",
        "--json",
    ]);
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["text"].as_str().unwrap(), content);

    // max_tokens is capped at --max-tokens-cap.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 100000, "retrieval": {"enabled": false}}),
    );
    let v = r.json();
    // Exactly what 40 greedy tokens give (a cap that let more through, or stopped short, differs).
    let capped = generate_json(&["--no-retrieval", "--json"], "40");
    let n_capped = capped["tokens"].as_array().unwrap().len() as u64;
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        n_capped,
        "{v}"
    );
    assert_eq!(v["choices"][0]["text"], capped["text"], "{v}");
    if n_capped == 40 {
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    }

    // Models and health.
    let models = server.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "tiny-retro");
    let health = server.get("/health").json();
    assert_eq!(health["status"], "ok");

    // Errors: OpenAI-style objects with the field and the cause.
    error_of(
        &http(&server.addr, "POST", "/v1/completions", b"{\"prompt\": "),
        400,
        "malformed JSON",
    );
    error_of(
        &http(&server.addr, "POST", "/v1/chat/completions", b"not json"),
        400,
        "malformed JSON",
    );
    error_of(
        &server.post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "tool", "content": "x"}]}),
        ),
        400,
        "messages[0].role",
    );
    error_of(
        &server.post("/v1/chat/completions", &json!({"prompt": "x"})),
        400,
        "messages",
    );
    error_of(
        &server.post(
            "/v1/completions",
            &json!({"prompt": PROMPT, "temperature": -1}),
        ),
        400,
        "temperature",
    );
    error_of(
        &server.post(
            "/v1/completions",
            &json!({"prompt": PROMPT, "max_tokens": 0}),
        ),
        400,
        "max_tokens",
    );
    error_of(
        &server.post(
            "/v1/completions",
            &json!({"prompt": PROMPT, "retrieval": {"k": 3}}),
        ),
        400,
        "retrieval.k",
    );
    error_of(
        &server.post(
            "/v1/completions",
            &json!({"prompt": PROMPT, "retrieval": {"path": "x"}}),
        ),
        400,
        "retrieval",
    );
    error_of(
        &server.post("/v1/completions", &json!({"prompt": [1, 2, 99999999]})),
        400,
        "prompt",
    );
    error_of(
        &server.post("/v1/completions", &json!({"prompt": ""})),
        400,
        "prompt",
    );
    let v = error_of(
        &server.post(
            "/v1/completions",
            &json!({"model": "gpt-4", "prompt": PROMPT}),
        ),
        404,
        "gpt-4",
    );
    assert_eq!(v["error"]["code"], "model_not_found");
    // A model cannot be named by path: only the served id exists.
    let smollm2 = common::shared_data().join("models/smollm2-135m-instruct");
    error_of(
        &server.post(
            "/v1/completions",
            &json!({"model": p(&smollm2), "prompt": PROMPT}),
        ),
        404,
        "does not exist",
    );
    let big = json!({"prompt": "word ".repeat(2000), "max_tokens": 1});
    error_of(&server.post("/v1/completions", &big), 413, "4096 bytes");
    assert_eq!(server.get("/no/such/path").status, 404);
    // The server still serves after all that.
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn full_queue_gets_503_then_drains_and_concurrent_requests_are_all_answered() {
    // Queue 1: one running (a long stream), one waiting, the third refused.
    let server = Server::start(&["--queue", "1", "--max-tokens-cap", "4000"]);
    let long = json!({"prompt": PROMPT, "max_tokens": 4000, "stream": true});
    let s = send_request(
        &server.addr,
        "POST",
        "/v1/completions",
        long.to_string().as_bytes(),
    );
    let mut running = BufReader::new(s);
    let (status, _) = read_head(&mut running);
    assert_eq!(status, 200);
    let mut line = String::new();
    while !line.contains("data: ") {
        line.clear();
        running.read_line(&mut line).unwrap();
    }
    let addr = server.addr.clone();
    let waiting = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/completions",
            json!({"prompt": PROMPT, "max_tokens": 4})
                .to_string()
                .as_bytes(),
        )
    });
    let start = Instant::now();
    while server.get("/health").json()["queued"] != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the second request was never queued"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 4}),
    );
    error_of(&r, 503, "queue is full");
    assert_eq!(r.header("retry-after"), Some("1"));
    // The long stream's client goes away: its generation stops and the waiting request is served.
    drop(running);
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    drop(server);

    // Concurrent requests, all answered, each with its own sequential answer.
    let server = Server::start(&["--queue", "8"]);
    let prompts: Vec<String> = (0..6)
        .map(|i| format!("Question {i}: what is {i} plus {i}?"))
        .collect();
    let body = |p: &str| json!({"prompt": p, "max_tokens": 12});
    let sequential: Vec<Value> = prompts
        .iter()
        .map(|p| server.post("/v1/completions", &body(p)).json()["choices"][0]["text"].clone())
        .collect();
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (addr, b) = (server.addr.clone(), body(p).to_string());
            std::thread::spawn(move || http(&addr, "POST", "/v1/completions", b.as_bytes()))
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&sequential) {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["choices"][0]["text"], *want);
    }
}

#[test]
fn timeout_then_clean_exit_on_sigterm() {
    let mut server = Server::start(&["--timeout-s", "0.3", "--max-tokens-cap", "4000"]);
    let t = Instant::now();
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 4000}),
    );
    error_of(&r, 504, "timeout");
    assert!(t.elapsed() < Duration::from_secs(10));
    // Streamed: the error arrives as the stream's last event.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 4000, "stream": true}),
    );
    if r.status == 200 {
        let events = r.events();
        assert!(events.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout"));
    } else {
        error_of(&r, 504, "timeout");
    }
    assert_eq!(server.get("/health").status, 200);

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_are_one_line_errors() {
    let f = fixture();
    let m = p(&f.model);
    fails(&["serve", "--model", m, "--queue", "0"], "--queue");
    fails(&["serve", "--model", m, "--timeout-s", "0"], "--timeout-s");
    fails(
        &["serve", "--model", "no-such-model", "--port", "0"],
        "no-such-model",
    );
    let smollm2 = common::shared_data().join("models/smollm2-135m-instruct");
    fails(
        &["serve", "--model", p(&smollm2), "--db", p(&f.db)],
        "needs a Retro checkpoint",
    );
    fails(
        &["serve", "--model", m, "--host", "256.1.1.1", "--port", "0"],
        "cannot listen",
    );
}

/// A copy of the fixture's model whose `edit` changes one JSON file of it (config.json or tokenizer.json).
fn edited_model(name: &str, file: &str, edit: impl Fn(&mut Value)) -> std::path::PathBuf {
    let f = fixture();
    let dir = f.model.parent().unwrap().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&f.model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let path = dir.join(file);
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut doc);
    std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
    dir
}

/// `retro generate` with a DB built with another tokenizer, or with chunks of another length, and with a prompt that
/// fills the context: one-line errors.
#[test]
fn generate_refuses_a_foreign_db_and_a_prompt_that_fills_the_context() {
    let f = fixture();
    // Two tokens swap ids: the same vocabulary size, another tokenizer.
    let other_tokenizer = edited_model("other-tokenizer", "tokenizer.json", |t| {
        let vocab = t["model"]["vocab"].as_object_mut().unwrap();
        let (a, b) = (vocab["the"].clone(), vocab["of"].clone());
        vocab.insert("the".into(), b);
        vocab.insert("of".into(), a);
    });
    fails(
        &[
            "generate",
            "--model",
            p(&other_tokenizer),
            "--db",
            p(&f.db),
            "--prompt",
            "Hi",
        ],
        "tokenizer",
    );
    let other_chunks = edited_model("other-chunks", "config.json", |c| {
        c["chunk_len"] = json!(8);
    });
    fails(
        &[
            "generate",
            "--model",
            p(&other_chunks),
            "--db",
            p(&f.db),
            "--prompt",
            "Hi",
        ],
        "chunks of 16 tokens, the model's chunk_len is 8",
    );
    let long = "word ".repeat(5000);
    fails(
        &[
            "generate",
            "--model",
            p(&f.model),
            "--db",
            p(&f.db),
            "--prompt",
            &long,
        ],
        "context",
    );
}

/// `--context-k` on a Retro model with the encoder on: the passages open the ChatML prompt after the evaluation system
/// turn, and the model still retrieves at every chunk of that prompt.
#[test]
fn generate_context_k_on_a_retro_model_with_the_encoder() {
    let f = fixture();
    #[rustfmt::skip]
    let out: Value = serde_json::from_str(&ok(&["generate", "--model", p(&f.model), "--db", p(&f.db),
        "--context-k", "2", "--template", "chatml", "--prompt", "Who painted the Mona Lisa?", "--max-new", "3",
        "--json"])).unwrap();
    let contexts = out["contexts"].as_array().unwrap();
    assert_eq!(contexts.len(), 2);
    let prompt = out["prompt"].as_str().unwrap();
    let first_user = format!("<|im_start|>user\n{}\n\n", contexts[0].as_str().unwrap());
    assert!(
        prompt.starts_with("<|im_start|>system\nSystem: ")
            || prompt.starts_with("<|im_start|>system\n"),
        "{prompt:?}"
    );
    assert!(prompt.contains("based on the context"), "{prompt:?}");
    assert!(prompt.contains(&first_user), "{prompt:?}");
    assert!(
        prompt.ends_with("Who painted the Mona Lisa?<|im_end|>\n<|im_start|>assistant\n"),
        "{prompt:?}"
    );
    // The prompt is far longer than a chunk of 16: retrievals at 16, 32, ...
    let positions: Vec<u64> = out["retrievals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.len() >= 3 && positions[..3] == [16, 32, 48],
        "{positions:?}"
    );
}
