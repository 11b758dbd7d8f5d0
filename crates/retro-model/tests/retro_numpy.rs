//! The tiny Retro model against an independent float64 numpy transcription of Megatron's legacy
//! Retro forward (`scripts/retro_reference.py`), on a whole-chunk batch, a partial
//! (right-aligned) sequence, and no neighbours.
//!
//! The fixture `tests/fixtures/retro_tiny_numpy.json` holds the inputs and the numpy logits; the
//! model is rebuilt here from its seed (`tiny::random_retro_weights`, SplitMix64, so the same on
//! every machine). To regenerate it (needs python3 with numpy and safetensors):
//! `cargo test --release -p retro-model --test retro_numpy -- --ignored`.

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{max_abs, max_abs_diff};
use retro_model::tiny::{random_ids, random_retro_weights, tiny_retro_config};
use retro_model::RetroWeights;

const SEED: u64 = 2024;
const TOL: f32 = 1e-4;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/retro_tiny_numpy.json")
}

fn model() -> RetroWeights {
    random_retro_weights(&tiny_retro_config(), SEED, &Device::Cpu).unwrap()
}

fn tensor(v: &serde_json::Value) -> Tensor {
    fn walk(v: &serde_json::Value, shape: &mut Vec<usize>, out: &mut Vec<f64>, depth: usize) {
        match v {
            serde_json::Value::Array(a) => {
                if shape.len() == depth {
                    shape.push(a.len());
                }
                for x in a {
                    walk(x, shape, out, depth + 1);
                }
            }
            x => out.push(x.as_f64().unwrap()),
        }
    }
    let (mut shape, mut data) = (Vec::new(), Vec::new());
    walk(v, &mut shape, &mut data, 0);
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

#[test]
fn matches_numpy_reference() {
    let text =
        std::fs::read_to_string(fixture_path()).expect("fixture missing: see the module docs");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = model().build().unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for (i, case) in cases.iter().enumerate() {
        let ids = tensor(&case["ids"])
            .to_dtype(candle_core::DType::U32)
            .unwrap();
        let nb = case
            .get("neighbors")
            .map(|n| tensor(n).to_dtype(candle_core::DType::U32).unwrap());
        let expect = tensor(&case["logits"])
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let got = m.forward(&ids, nb.as_ref()).unwrap();
        let d = max_abs_diff(&got, &expect);
        let scale = max_abs(&expect);
        eprintln!("case {i}: max |rust - numpy| = {d:.2e}, logits up to {scale:.1}");
        assert!(
            d < TOL,
            "case {i}: max |rust - numpy| = {d} (logits up to {scale})"
        );
    }
}

/// Regenerates the fixture: writes the model and inputs, runs the numpy script.
#[test]
#[ignore = "regenerates tests/fixtures/retro_tiny_numpy.json; needs python3 with numpy and safetensors"]
fn regenerate_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let w = model();
    let ckpt = tmp.path().join("ckpt");
    w.save(&ckpt).unwrap();
    let cfg = &w.config;
    let (k, r, v) = (cfg.num_neighbors, cfg.retrieved_len, cfg.decoder.vocab_size);
    let case = |b: usize, ns: usize, with_nb: bool, seed: u64| {
        let ids: Vec<Vec<u32>> = (0..b).map(|i| random_ids(v, ns, seed + i as u64)).collect();
        let mut c = serde_json::json!({ "ids": ids });
        if with_nb {
            let l = ns.div_ceil(cfg.chunk_len);
            let nb: Vec<Vec<Vec<Vec<u32>>>> = (0..b)
                .map(|bi| {
                    (0..l)
                        .map(|j| {
                            (0..k)
                                .map(|n| {
                                    random_ids(v, r, seed * 1000 + (bi * 100 + j * 10 + n) as u64)
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect();
            c["neighbors"] = serde_json::json!(nb);
        }
        c
    };
    let inputs = serde_json::json!({
        "model": format!("tiny::random_retro_weights(tiny_retro_config(), {SEED})"),
        "cases": [case(2, 16, true, 1), case(1, 13, true, 7), case(1, 13, false, 9)],
    });
    let inp = tmp.path().join("inputs.json");
    std::fs::write(&inp, inputs.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/retro_reference.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(&ckpt)
        .arg(&inp)
        .arg(fixture_path())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
}
