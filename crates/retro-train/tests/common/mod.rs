//! A small real retrieval DB for the training tests, built once per test binary: the first
//! documents of ../shared/data/corpus/wiki-vital-en.jsonl.gz, the real SmolLM2 tokenizer, chunks
//! of 16 tokens, MiniLM embeddings, an exact (Flat) Faiss index and precomputed neighbours.

#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use retro_data::{build_chunk_db, ChunkDb, ChunkOptions, GptTokenizer};
use retro_db::{
    build_index, embed_db, query_neighbors, EmbedOptions, Embedder, Embeddings, IndexOptions,
    NeighborOptions, RetrievalIndex,
};
use retro_model::candle_core::{Device, Tensor};
use retro_model::RetroWeights;
use retro_train::batch::Batch;
use retro_train::metrics::{read_step_metrics, StepMetrics};
use retro_train::{Mode, Observer, Quiet, TrainOverrides};

pub const CHUNK_LEN: usize = 16;

pub fn shared_data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        dir.join("MANIFEST.md").is_file(),
        "{}: shared assets missing (see README)",
        dir.display()
    );
    dir
}

struct Fixture {
    _tmp: tempfile::TempDir,
    db: PathBuf,
    chunks_only: PathBuf,
}

fn write_corpus(path: &Path, n_docs: usize) {
    let file = std::fs::File::open(shared_data().join("corpus/wiki-vital-en.jsonl.gz")).unwrap();
    let mut out = std::fs::File::create(path).unwrap();
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .take(n_docs)
    {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // A static is never dropped: keep its directory under target/, not in /tmp.
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let corpus = tmp.path().join("wiki.jsonl");
        write_corpus(&corpus, 150);
        let tokenizer = GptTokenizer::load(
            &shared_data().join("models/smollm2-135m-instruct/tokenizer.json"),
            None,
        )
        .unwrap();
        let options = ChunkOptions {
            chunk_len: CHUNK_LEN,
            valid_fraction: 0.1,
            ..ChunkOptions::default()
        };
        let db_dir = tmp.path().join("db");
        build_chunk_db(&db_dir, &[corpus.clone()], &tokenizer, &options, &|_| {}).unwrap();
        let chunks_only = tmp.path().join("chunks-only");
        build_chunk_db(&chunks_only, &[corpus], &tokenizer, &options, &|_| {}).unwrap();

        let db = ChunkDb::open(&db_dir).unwrap();
        let embedder = Embedder::load(&shared_data().join("models/minilm-l6-v2"), None).unwrap();
        embed_db(
            &db,
            &tokenizer,
            &embedder,
            &EmbedOptions::default(),
            &|_| {},
        )
        .unwrap();
        let embeddings = Embeddings::open(&db).unwrap();
        let index_options = IndexOptions {
            factory: "Flat".into(),
            ..IndexOptions::default()
        };
        build_index(&db, &embeddings, &index_options, &|_| {}).unwrap();
        let mut index = RetrievalIndex::open(&db_dir, None).unwrap();
        let neighbor_options = NeighborOptions {
            query_k: 50,
            save_k: 10,
            ..NeighborOptions::default()
        };
        query_neighbors(&db, &embeddings, &mut index, &neighbor_options, &|_| {}).unwrap();
        Fixture {
            _tmp: tmp,
            db: db_dir,
            chunks_only,
        }
    })
}

/// The DB with neighbours.
pub fn db_dir() -> &'static Path {
    &fixture().db
}

/// The same chunks without embeddings, index or neighbours.
pub fn chunks_only_dir() -> &'static Path {
    &fixture().chunks_only
}

/// A tiny Llama config (SmolLM2's vocabulary, so that the DB's tokens fit) as a Retro config with
/// CCA at layers 2 and 3, written to `dir/tiny.json`.
pub fn tiny_model_config(dir: &Path) -> PathBuf {
    let mut cfg = retro_model::tiny::tiny_config();
    cfg.vocab_size = 49152;
    cfg.num_hidden_layers = 3;
    cfg.max_position_embeddings = 256;
    let opts = retro_model::RetroOptions {
        chunk_len: CHUNK_LEN,
        num_neighbors: 2,
        retrieved_len: 2 * CHUNK_LEN,
        retro_layer_numbers: Some(vec![2, 3]),
        encoder_layers: 2,
        gate: 1.0,
    };
    let retro = retro_model::RetroConfig::new(cfg, &opts).unwrap();
    let path = dir.join("tiny.json");
    std::fs::write(&path, serde_json::to_string_pretty(&retro).unwrap()).unwrap();
    path
}

pub fn overrides(mode: Mode, model: &Path, out: &Path) -> TrainOverrides {
    TrainOverrides {
        mode: Some(mode),
        model: Some(model.to_path_buf()),
        db: Some(db_dir().to_path_buf()),
        out: Some(out.to_path_buf()),
        steps: Some(4),
        batch: Some(2),
        seq_len: Some(4 * CHUNK_LEN),
        lr: Some(3e-3),
        eval_every: Some(0),
        eval_samples: Some(2),
        save_every: Some(100),
        ..TrainOverrides::default()
    }
}

pub fn train(o: TrainOverrides) -> Vec<StepMetrics> {
    let out = o.out.clone().unwrap();
    retro_train::train(o.resolve().unwrap(), &mut Quiet).unwrap();
    read_step_metrics(&out.join("metrics.jsonl")).unwrap()
}

pub fn train_err(o: TrainOverrides) -> String {
    let err = o
        .resolve()
        .and_then(|o| retro_train::train(o, &mut Quiet))
        .err()
        .expect("training should fail");
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "error spans lines: {msg}");
    msg
}

pub fn final_weights(run: &Path) -> RetroWeights {
    let dir = retro_train::resolve_checkpoint(run).unwrap();
    RetroWeights::load(&dir, &Device::Cpu).unwrap()
}

/// A plain GPT to start from: a tiny model pretrained for 2 steps without retrieval.
pub fn base_gpt(tmp: &Path) -> PathBuf {
    let cfg = tiny_model_config(tmp);
    let run = tmp.join("gpt");
    let mut o = overrides(Mode::Pretrain, &cfg, &run);
    o.no_retrieval = true;
    o.steps = Some(2);
    train(o);
    retro_train::resolve_checkpoint(&run).unwrap()
}

pub fn tensor_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// Records every micro-batch's inputs, targets and loss weights, and whether it had neighbours.
#[derive(Default)]
pub struct Recorder(pub Vec<(Vec<u32>, Vec<u32>, Vec<f32>, bool)>);

impl Observer for Recorder {
    fn batches(&mut self, _step: u64, micro: &[Batch]) {
        for b in micro {
            self.0.push((
                b.inputs.flatten_all().unwrap().to_vec1().unwrap(),
                b.targets.flatten_all().unwrap().to_vec1().unwrap(),
                b.loss_mask.flatten_all().unwrap().to_vec1().unwrap(),
                b.neighbors.is_some(),
            ));
        }
    }
}
