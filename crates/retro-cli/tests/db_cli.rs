//! `retro db` end to end, on a few hundred real documents of ../shared/data/corpus/wiki-vital-en.jsonl.gz with the
//! real SmolLM2 tokenizer, MiniLM embedder and Faiss: the invariants of a Retro retrieval DB, kill -9 resume, and the
//! one-line errors for bad input.

mod common;

use common::{fails, ok, p, shared_data};
use retro_data::ChunkDb;
use retro_db::{Embeddings, Neighbors};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Well-known articles that plain questions must find (see `search_finds_the_obvious_article`).
const KNOWN_TITLES: [&str; 8] = [
    "Albert Einstein",
    "Paris",
    "Jupiter",
    "Mount Everest",
    "Photosynthesis",
    "William Shakespeare",
    "DNA",
    "Amazon River",
];

fn tokenizer_path() -> PathBuf {
    shared_data().join("models/smollm2-135m-instruct/tokenizer.json")
}

fn embedder_path() -> PathBuf {
    shared_data().join("models/minilm-l6-v2")
}

/// The known articles plus the first `n_other` others, as a jsonl file.
fn write_corpus(path: &Path, n_other: usize) {
    let file = std::fs::File::open(shared_data().join("corpus/wiki-vital-en.jsonl.gz")).unwrap();
    let mut out = std::fs::File::create(path).unwrap();
    let mut others = 0;
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
        let line = line.unwrap();
        let row: serde_json::Value = serde_json::from_str(&line).unwrap();
        let known = KNOWN_TITLES.contains(&row["title"].as_str().unwrap());
        if known || others < n_other {
            others += !known as usize;
            writeln!(out, "{line}").unwrap();
        }
    }
}

fn build_args<'a>(corpus: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "db".into(),
        "build".into(),
        "--corpus".into(),
        p(corpus).into(),
        "--tokenizer".into(),
    ];
    args.push(p(&tokenizer_path()).into());
    args.extend([
        "--embedder".into(),
        p(&embedder_path()).into(),
        "--out".into(),
        p(out).into(),
    ]);
    args.extend(["--valid-fraction".into(), "0.05".into()]);
    if !extra.contains(&"--block-size") {
        args.extend(["--block-size".into(), "128".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// One DB of about 300 documents, built once and shared read-only by the tests of this file.
fn shared_db() -> &'static Path {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("wiki.jsonl");
        write_corpus(&corpus, 292);
        let db = dir.path().join("db");
        let args = build_args(&corpus, &db, &["--json"]);
        let summary: serde_json::Value =
            serde_json::from_str(&ok(&args.iter().map(String::as_str).collect::<Vec<_>>()))
                .unwrap();
        assert_eq!(summary["complete"], true);
        (dir, db)
    })
    .1
}

#[test]
fn stats_report_counts_and_recall() {
    let db = shared_db();
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["db", "stats", p(db), "--json"])).unwrap();
    for key in [
        "documents",
        "chunks",
        "chunks_train",
        "chunks_valid",
        "tokens",
        "index",
        "index_bytes",
        "bytes_per_chunk",
        "self_recall_at_2",
        "recall_at_10",
    ] {
        assert!(stats.get(key).is_some(), "missing {key} in {stats}");
    }
    assert_eq!(stats["documents"], 300);
    assert_eq!(
        stats["index"], "Flat",
        "a 300-document corpus is too small for IVF: exact search"
    );
    assert!(stats["chunks_valid"].as_u64().unwrap() > 0);
    assert!(
        stats["self_recall_at_2"].as_f64().unwrap() >= 0.95,
        "{stats}"
    );
    assert!(
        stats["recall_at_10"].as_f64().unwrap() >= 0.99,
        "Flat is exact: {stats}"
    );
}

#[test]
fn valid_chunks_are_never_retrievable_and_neighbors_skip_own_document() {
    let db = ChunkDb::open(shared_db()).unwrap();
    let neighbors = Neighbors::open(&db).unwrap();
    assert_eq!(neighbors.meta.save_k, 20);
    let train: std::collections::HashSet<u32> = db.train_chunk_ids().iter().copied().collect();
    let mut n_valid_queries = 0;
    for chunk in 0..db.n_chunks() {
        assert_eq!(train.contains(&(chunk as u32)), !db.is_valid_chunk(chunk));
        let own_doc = db.chunk_info(chunk).doc;
        let ids = neighbors.ids(chunk);
        let scores = neighbors.scores(chunk);
        assert!(ids[0] >= 0, "chunk {chunk} has neighbours");
        for (j, &id) in ids.iter().enumerate() {
            if id < 0 {
                assert!(ids[j..].iter().all(|&i| i == -1), "padding comes last");
                break;
            }
            assert_ne!(
                db.chunk_info(id as usize).doc,
                own_doc,
                "chunk {chunk}: neighbour from its own document"
            );
            assert!(
                !db.is_valid_chunk(id as usize),
                "chunk {chunk}: neighbour {id} is a validation chunk"
            );
            if j > 0 {
                assert!(scores[j] <= scores[j - 1] + 1e-6, "best first");
            }
        }
        n_valid_queries += db.is_valid_chunk(chunk) as usize;
    }
    assert!(n_valid_queries > 0, "validation chunks get neighbours too");

    // The saved neighbour of a chunk is what an exact search over the train chunks finds first.
    let embeddings = Embeddings::open(&db).unwrap();
    let chunk = db.train_chunk_ids()[3] as usize;
    let query = embeddings.vector(chunk);
    let best = db
        .train_chunk_ids()
        .iter()
        .map(|&c| c as usize)
        .filter(|&c| db.chunk_info(c).doc != db.chunk_info(chunk).doc)
        .max_by(|&a, &b| {
            let score = |c: usize| {
                embeddings
                    .vector(c)
                    .iter()
                    .zip(&query)
                    .map(|(x, y)| x * y)
                    .sum::<f32>()
            };
            score(a).total_cmp(&score(b))
        })
        .unwrap();
    assert_eq!(neighbors.ids(chunk)[0], best as i64);
}

#[test]
fn search_finds_the_obvious_article() {
    let db = shared_db();
    for (question, title) in [
        ("Who developed the theory of relativity?", "Albert Einstein"),
        ("What is the capital city of France?", "Paris"),
        ("What is the largest planet in the Solar System?", "Jupiter"),
        ("What is the highest mountain on Earth?", "Mount Everest"),
        (
            "How do plants turn sunlight into chemical energy?",
            "Photosynthesis",
        ),
        ("Who wrote Hamlet?", "William Shakespeare"),
    ] {
        let hits: serde_json::Value =
            serde_json::from_str(&ok(&["db", "search", p(db), question, "-k", "3", "--json"]))
                .unwrap();
        let hits = hits.as_array().unwrap();
        assert_eq!(hits.len(), 3);
        for key in ["chunk", "doc", "title", "score", "text"] {
            assert!(hits[0].get(key).is_some(), "missing {key}");
        }
        assert_eq!(hits[0]["title"], title, "{question}: {hits:?}");
    }
}

#[test]
fn neighbors_command_shows_chunk_and_continuations() {
    let db = shared_db();
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["db", "neighbors", p(db), "5", "--json"])).unwrap();
    assert_eq!(shown["chunk"], 5);
    let chunks = ChunkDb::open(db).unwrap();
    let tokenizer = chunks.tokenizer().unwrap();
    assert_eq!(shown["text"], chunks.chunk_text(5, &tokenizer).unwrap());
    let neighbors = shown["neighbors"].as_array().unwrap();
    assert_eq!(neighbors.len(), 20);
    for n in neighbors {
        let id = n["chunk"].as_u64().unwrap() as usize;
        let mut tokens = chunks.chunk_tokens(id);
        if let Some(next) = chunks.continuation(id) {
            assert_eq!(
                chunks.chunk_info(next).doc,
                chunks.chunk_info(id).doc,
                "continuation stays in the document"
            );
            tokens.extend(chunks.chunk_tokens(next));
        }
        assert_eq!(n["text"], tokenizer.decode(&tokens).unwrap());
    }
    fails(&["db", "neighbors", p(db), "999999"], "out of range");
}

fn list_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                // The embeddings record where the embedder lives; everything else must match byte for byte.
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn kill_9_during_embedding_then_rerun_gives_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("wiki.jsonl");
    write_corpus(&corpus, 120);
    let reference = dir.path().join("uninterrupted");
    let args = build_args(&corpus, &reference, &["--block-size", "32"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let resumed = dir.path().join("resumed");
    let tokenizer = tokenizer_path();
    let chunk_args: Vec<&str> = vec![
        "db",
        "chunk",
        "--corpus",
        p(&corpus),
        "--tokenizer",
        p(&tokenizer),
        "--out",
        p(&resumed),
        "--valid-fraction",
        "0.05",
    ];
    ok(&chunk_args);
    let embedder = embedder_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_retro"))
        .args([
            "db",
            "embed",
            p(&resumed),
            "--embedder",
            p(&embedder),
            "--block-size",
            "32",
            "--threads",
            "2",
        ])
        .spawn()
        .unwrap();
    let blocks_dir = resumed.join("embeddings");
    let started = std::time::Instant::now();
    loop {
        let n_blocks = std::fs::read_dir(&blocks_dir)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "bin")
                })
                .count()
            })
            .unwrap_or(0);
        if n_blocks >= 2 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 300,
            "embedding made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "embedding finished before it could be killed; use more documents"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before: usize = std::fs::read_dir(&blocks_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "bin")
        })
        .count();
    let total_blocks = ChunkDb::open(&resumed).unwrap().n_chunks().div_ceil(32);
    assert!(
        done_before < total_blocks,
        "killed before the end ({done_before} of {total_blocks})"
    );

    let args = build_args(&corpus, &resumed, &["--block-size", "32"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let a = list_files(&reference);
    let b = list_files(&resumed);
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{name} differs between the uninterrupted and the resumed build"
        );
    }
}

#[test]
fn shards_split_the_work_and_a_plain_run_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("wiki.jsonl");
    write_corpus(&corpus, 40);
    let db = dir.path().join("db");
    let args = build_args(
        &corpus,
        &db,
        &["--block-size", "16", "--shard", "0/2", "--json"],
    );
    let summary: serde_json::Value =
        serde_json::from_str(&ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    assert_eq!(summary["complete"], false, "{summary}");
    let blocks = |dir: &Path| {
        std::fs::read_dir(dir.join("embeddings"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "bin")
            })
            .count()
    };
    let n_chunks = ChunkDb::open(&db).unwrap().n_chunks();
    assert_eq!(
        blocks(&db),
        n_chunks.div_ceil(16).div_ceil(2),
        "shard 0/2 did every other block"
    );
    let embedder = embedder_path();
    ok(&[
        "db",
        "embed",
        p(&db),
        "--embedder",
        p(&embedder),
        "--block-size",
        "16",
        "--shard",
        "1/2",
    ]);
    assert_eq!(blocks(&db), n_chunks.div_ceil(16));
    let args = build_args(&corpus, &db, &["--block-size", "16", "--json"]);
    let summary: serde_json::Value =
        serde_json::from_str(&ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    assert_eq!(summary["complete"], true, "{summary}");
}

#[test]
fn ivf_factory_strings_work_on_small_corpora() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("wiki.jsonl");
    write_corpus(&corpus, 150);
    let db = dir.path().join("db");
    let args = build_args(
        &corpus,
        &db,
        &["--index", "IVF8_HNSW32,Flat", "--nprobe", "8"],
    );
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["db", "stats", p(&db), "--json"])).unwrap();
    assert_eq!(stats["index"], "IVF8_HNSW32,Flat");
    assert_eq!(stats["nprobe"], 8);
    assert!(
        stats["self_recall_at_2"].as_f64().unwrap() >= 0.95,
        "{stats}"
    );
    // A factory string Faiss rejects, and one too big for the corpus, are clear errors.
    fails(
        &["db", "index", p(&db), "--index", "NotAnIndex42"],
        "NotAnIndex42",
    );
    fails(
        &["db", "index", p(&db), "--index", "IVF100000,Flat"],
        "IVF lists need at least",
    );
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = |name: &str| dir.path().join(name);
    let tok = tokenizer_path();
    let emb = embedder_path();
    fails(
        &[
            "db",
            "chunk",
            "--corpus",
            p(&tmp("nope.jsonl")),
            "--tokenizer",
            p(&tok),
            "--out",
            p(&tmp("o1")),
        ],
        "nope.jsonl: no such file",
    );
    std::fs::write(tmp("empty.jsonl"), "").unwrap();
    fails(
        &[
            "db",
            "chunk",
            "--corpus",
            p(&tmp("empty.jsonl")),
            "--tokenizer",
            p(&tok),
            "--out",
            p(&tmp("o2")),
        ],
        "empty corpus",
    );
    std::fs::write(tmp("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \n").unwrap();
    fails(
        &[
            "db",
            "chunk",
            "--corpus",
            p(&tmp("bad.jsonl")),
            "--tokenizer",
            p(&tok),
            "--out",
            p(&tmp("o3")),
        ],
        "bad.jsonl:2",
    );
    assert!(!tmp("o3").join("db.json").exists());
    std::fs::write(tmp("notext.jsonl"), "{\"body\": \"x\"}\n").unwrap();
    fails(
        &[
            "db",
            "chunk",
            "--corpus",
            p(&tmp("notext.jsonl")),
            "--tokenizer",
            p(&tok),
            "--out",
            p(&tmp("o4")),
        ],
        "no field \"text\"",
    );
    fails(
        &[
            "db",
            "chunk",
            "--corpus",
            p(&tmp("notext.jsonl")),
            "--tokenizer",
            p(&tmp("missing-tokenizer.json")),
            "--out",
            p(&tmp("o5")),
        ],
        "missing-tokenizer.json",
    );

    // A small finished DB to break in various ways.
    let corpus = tmp("wiki.jsonl");
    write_corpus(&corpus, 10);
    let db = tmp("db");
    let args = build_args(&corpus, &db, &[]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let empty_model = tmp("empty-model");
    std::fs::create_dir(&empty_model).unwrap();
    fails(
        &["db", "embed", p(&db), "--embedder", p(&empty_model)],
        "config.json: missing",
    );
    fails(
        &[
            "db",
            "embed",
            p(&db),
            "--embedder",
            p(&emb),
            "--shard",
            "2/2",
        ],
        "out of range",
    );
    fails(
        &["db", "embed", p(&db), "--embedder", p(&emb), "--shard", "x"],
        "expected I/N",
    );
    // Rebuilding the DB directory with another tokenizer.
    fails(
        &[
            "db",
            "chunk",
            "--corpus",
            p(&corpus),
            "--tokenizer",
            p(&emb.join("tokenizer.json")),
            "--out",
            p(&db),
        ],
        "does not match",
    );
    fails(
        &["db", "stats", p(&tmp("no-such-db"))],
        "no such DB directory",
    );

    // A truncated array file, a foreign index file.
    let tokens = db.join("chunk-tokens.bin");
    let bytes = std::fs::read(&tokens).unwrap();
    std::fs::write(&tokens, &bytes[..bytes.len() - 7]).unwrap();
    fails(&["db", "search", p(&db), "anything"], "truncated");
    std::fs::write(&tokens, &bytes).unwrap();
    let index = db.join("index/index.faissindex");
    std::fs::write(&index, b"this is not a faiss index").unwrap();
    fails(
        &["db", "search", p(&db), "anything"],
        "not a readable Faiss index",
    );
}
