//! The chunk stage on real documents from ../shared/data/corpus with the real SmolLM2 tokenizer.

use retro_data::megatron::write_indexed_dataset;
use retro_data::{build_chunk_db, ChunkDb, ChunkOptions, Content, GptTokenizer, ReadOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

fn shared_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        dir.join("MANIFEST.md").is_file(),
        "{}: shared assets missing (see README: the demo fetches them)",
        dir.display()
    );
    dir
}

fn gpt_tokenizer() -> GptTokenizer {
    GptTokenizer::load(
        &shared_data().join("models/smollm2-135m-instruct/tokenizer.json"),
        None,
    )
    .unwrap()
}

/// The first `n` wiki-vital articles as parsed JSON values.
fn wiki_rows(n: usize) -> Vec<serde_json::Value> {
    let file = std::fs::File::open(shared_data().join("corpus/wiki-vital-en.jsonl.gz")).unwrap();
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let mut f = std::fs::File::create(path).unwrap();
    for r in rows {
        writeln!(f, "{r}").unwrap();
    }
}

fn quiet(_: usize) {}

#[test]
fn chunks_never_cross_documents_and_give_back_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let rows = wiki_rows(300);
    let corpus = dir.path().join("wiki.jsonl");
    write_jsonl(&corpus, &rows);
    let tokenizer = gpt_tokenizer();
    let options = ChunkOptions {
        valid_fraction: 0.1,
        batch_documents: 64,
        ..Default::default()
    };
    let db_dir = dir.path().join("db");
    let manifest = build_chunk_db(&db_dir, &[corpus], &tokenizer, &options, &quiet).unwrap();
    assert_eq!(manifest.n_documents, 300);
    assert_eq!(manifest.token_dtype, "u16");
    let db = ChunkDb::open(&db_dir).unwrap();
    let m = db.chunk_len();

    let mut next_chunk = 0;
    let mut n_valid_docs = 0;
    for (doc_idx, row) in rows.iter().enumerate() {
        let info = db.doc_info(doc_idx);
        assert_eq!(info.id, row["id"].as_str().unwrap());
        assert_eq!(info.title.as_deref(), row["title"].as_str());
        assert_eq!(
            info.first_chunk, next_chunk,
            "documents' chunks are contiguous and in order"
        );
        let expected = tokenizer.encode(row["text"].as_str().unwrap()).unwrap();
        let mut got = Vec::new();
        for c in info.first_chunk..info.first_chunk + info.n_chunks {
            let chunk = db.chunk_info(c);
            assert_eq!(chunk.doc, doc_idx, "chunk {c} belongs to its document only");
            assert!(chunk.len >= 1 && chunk.len <= m);
            let padded = db.padded_chunk(c);
            assert!(
                padded[chunk.len..].iter().all(|&t| t == tokenizer.pad_id),
                "padding uses the pad id"
            );
            got.extend(db.chunk_tokens(c));
            assert_eq!(
                db.continuation(c).is_some(),
                c + 1 < info.first_chunk + info.n_chunks
            );
        }
        assert_eq!(
            got, expected,
            "document {doc_idx}: chunks minus padding give back its tokens"
        );
        next_chunk += info.n_chunks;
        n_valid_docs += info.valid as usize;
    }
    assert_eq!(next_chunk, db.n_chunks());
    assert!(
        n_valid_docs > 10 && n_valid_docs < 60,
        "about 10% of 300 documents are held out, got {n_valid_docs}"
    );

    // The retrievable chunks are exactly the chunks of training documents.
    let train: Vec<u32> = db.train_chunk_ids().to_vec();
    let expected_train: Vec<u32> = (0..db.n_chunks() as u32)
        .filter(|&c| !db.is_valid_chunk(c as usize))
        .collect();
    assert_eq!(train, expected_train);
    assert_eq!(
        db.manifest.n_chunks_valid + db.manifest.n_chunks_train,
        db.n_chunks()
    );

    // The split depends on the document id only: the same documents in another order are split the same way.
    let mut reversed = rows.clone();
    reversed.reverse();
    let corpus2 = dir.path().join("reversed.jsonl");
    write_jsonl(&corpus2, &reversed);
    let db2_dir = dir.path().join("db2");
    build_chunk_db(&db2_dir, &[corpus2], &tokenizer, &options, &quiet).unwrap();
    let db2 = ChunkDb::open(&db2_dir).unwrap();
    for d in 0..300 {
        let a = db.doc_info(d);
        let b = db2.doc_info(299 - d);
        assert_eq!((a.id, a.valid), (b.id, b.valid));
    }
}

#[test]
fn mixed_inputs_jsonl_gz_text_and_megatron() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = gpt_tokenizer();
    let rows = wiki_rows(20);
    // jsonl.gz
    let gz_path = dir.path().join("part.jsonl.gz");
    {
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz_path).unwrap(),
            flate2::Compression::fast(),
        );
        for r in &rows[..10] {
            writeln!(gz, "{r}").unwrap();
        }
        gz.finish().unwrap();
    }
    // one plain-text document
    let txt_path = dir.path().join("speech.txt");
    std::fs::write(&txt_path, rows[10]["text"].as_str().unwrap()).unwrap();
    // a Megatron dataset of the rest, tokenised with the same tokenizer, with a trailing end-of-document token
    let eod = tokenizer.inner().token_to_id("<|endoftext|>").unwrap();
    let docs: Vec<Vec<u32>> = rows[11..]
        .iter()
        .map(|r| {
            let mut t = tokenizer.encode(r["text"].as_str().unwrap()).unwrap();
            t.push(eod);
            t
        })
        .collect();
    let prefix = dir.path().join("mega_text_document");
    write_indexed_dataset(&prefix, &docs).unwrap();

    let db_dir = dir.path().join("db");
    let manifest = build_chunk_db(
        &db_dir,
        &[gz_path, txt_path.clone(), prefix.with_extension("bin")],
        &tokenizer,
        &ChunkOptions {
            valid_fraction: 0.0,
            ..Default::default()
        },
        &quiet,
    )
    .unwrap();
    assert_eq!(manifest.n_documents, 20);
    assert_eq!(manifest.corpora.len(), 3);
    let db = ChunkDb::open(&db_dir).unwrap();
    for (d, row) in rows.iter().enumerate() {
        let info = db.doc_info(d);
        let tokens: Vec<u32> = (info.first_chunk..info.first_chunk + info.n_chunks)
            .flat_map(|c| db.chunk_tokens(c))
            .collect();
        assert_eq!(
            tokens,
            tokenizer.encode(row["text"].as_str().unwrap()).unwrap(),
            "document {d}"
        );
    }
    assert_eq!(db.doc_info(10).title.as_deref(), Some("speech"));
    assert!(db.doc_info(11).id.ends_with("mega_text_document:0"));
}

#[test]
fn opening_with_another_tokenizer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    write_jsonl(&corpus, &wiki_rows(5));
    let db_dir = dir.path().join("db");
    build_chunk_db(
        &db_dir,
        &[corpus],
        &gpt_tokenizer(),
        &ChunkOptions::default(),
        &quiet,
    )
    .unwrap();
    let db = ChunkDb::open(&db_dir).unwrap();
    let bert = GptTokenizer::load(
        &shared_data().join("models/minilm-l6-v2/tokenizer.json"),
        None,
    )
    .unwrap();
    let err = bert
        .check_matches(&db.manifest.tokenizer_sha256, &db_dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    assert!(gpt_tokenizer()
        .check_matches(&db.manifest.tokenizer_sha256, &db_dir)
        .is_ok());
}

#[test]
fn bad_jsonl_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("bad.jsonl");
    std::fs::write(&corpus, "{\"text\": \"fine\"}\n{not json\n{\"body\": \"no text field\"}\n{\"text\": \"also fine\"}\n").unwrap();
    let tokenizer = gpt_tokenizer();
    let db_dir = dir.path().join("db");
    let err = build_chunk_db(
        &db_dir,
        &[corpus.clone()],
        &tokenizer,
        &ChunkOptions::default(),
        &quiet,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("malformed JSON"),
        "{msg}"
    );
    assert!(
        !db_dir.join("db.json").exists(),
        "a failed build leaves no finished DB"
    );

    let options = ChunkOptions {
        read: ReadOptions {
            skip_bad_lines: true,
            ..Default::default()
        },
        valid_fraction: 0.0,
        ..Default::default()
    };
    let manifest =
        build_chunk_db(&db_dir, &[corpus.clone()], &tokenizer, &options, &quiet).unwrap();
    assert_eq!(manifest.n_documents, 2);
    assert_eq!(manifest.corpora[0].skipped_lines, 2);

    std::fs::write(
        &corpus,
        "{\"text\": \"fine\"}\n{\"body\": \"no text field\"}\n",
    )
    .unwrap();
    let msg = format!(
        "{:#}",
        build_chunk_db(
            &dir.path().join("db3"),
            &[corpus.clone()],
            &tokenizer,
            &ChunkOptions::default(),
            &quiet
        )
        .unwrap_err()
    );
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("no field \"text\""),
        "{msg}"
    );

    std::fs::write(&corpus, "\n\n").unwrap();
    let msg = format!(
        "{:#}",
        build_chunk_db(
            &dir.path().join("db4"),
            &[corpus],
            &tokenizer,
            &ChunkOptions::default(),
            &quiet
        )
        .unwrap_err()
    );
    assert!(msg.contains("empty corpus"), "{msg}");

    let msg = format!(
        "{:#}",
        build_chunk_db(
            &dir.path().join("db5"),
            &[dir.path().join("missing.jsonl")],
            &tokenizer,
            &ChunkOptions::default(),
            &quiet
        )
        .unwrap_err()
    );
    assert!(msg.contains("missing.jsonl: no such file"), "{msg}");
}

#[test]
fn content_of_megatron_documents_is_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("m");
    write_indexed_dataset(&prefix, &[vec![5, 6, 7]]).unwrap();
    let ds = retro_data::megatron::IndexedDataset::open(&prefix).unwrap();
    let docs: Vec<_> = ds.into_documents().collect::<Result<_, _>>().unwrap();
    assert_eq!(docs[0].content, Content::Tokens(vec![5, 6, 7]));
}
