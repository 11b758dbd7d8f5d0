//! Fixtures for the chat and serve tests: a seeded random Retro checkpoint that uses the real SmolLM2 tokenizer
//! (so text round-trips and ChatML works), and a real retrieval DB of 150 Wikipedia articles in chunks of 16 tokens
//! built with that tokenizer and MiniLM.

#![allow(dead_code)]

use crate::common::{shared_data, small_db};
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct Fixture {
    _tmp: tempfile::TempDir,
    /// The Retro checkpoint directory.
    pub model: PathBuf,
    pub db: PathBuf,
}

/// Built once per test binary.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A static is never dropped: keep its directory under target/, not in /tmp.
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let smollm2 = shared_data().join("models/smollm2-135m-instruct");
        let model = tmp.path().join("tiny-retro");
        write_tiny_retro(&model, &smollm2);
        let db = small_db(tmp.path());
        Fixture {
            _tmp: tmp,
            model,
            db,
        }
    })
}

/// A 3-layer Retro model (hidden 64, CCA in layers 2 and 3, chunks of 16, 2 neighbours of 32 tokens, context 4096)
/// over the SmolLM2 vocabulary, with seeded random weights, and SmolLM2's tokenizer files beside it.
fn write_tiny_retro(dir: &std::path::Path, smollm2: &std::path::Path) {
    use retro_model::candle_core::Device;
    let mut d = retro_model::tiny::tiny_config();
    d.num_hidden_layers = 3;
    d.vocab_size = 49152;
    d.max_position_embeddings = 4096;
    let opts = retro_model::RetroOptions {
        chunk_len: 16,
        num_neighbors: 2,
        retrieved_len: 32,
        retro_layer_numbers: Some(vec![2, 3]),
        encoder_layers: 2,
        gate: 1.0,
    };
    let cfg = retro_model::RetroConfig::new(d, &opts).unwrap();
    let w = retro_model::tiny::random_retro_weights(&cfg, 7, &Device::Cpu).unwrap();
    w.save(dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smollm2.join(f), dir.join(f)).unwrap();
    }
}
