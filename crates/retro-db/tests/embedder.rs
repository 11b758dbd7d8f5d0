//! The BERT embedder against ../shared/data/models/minilm-l6-v2/reference_embeddings.json (a numpy float64 forward
//! pass on the original f32 weights; see MANIFEST.md §1).

use retro_db::{Embedder, Pooling};
use std::path::{Path, PathBuf};

fn minilm() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/models/minilm-l6-v2");
    assert!(
        dir.join("config.json").is_file(),
        "{}: shared assets missing",
        dir.display()
    );
    dir
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn reproduces_reference_embeddings() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(minilm().join("reference_embeddings.json")).unwrap(),
    )
    .unwrap();
    let embedder = Embedder::load(&minilm(), None).unwrap();
    assert_eq!(embedder.spec.pooling, Pooling::Mean);
    assert!(embedder.spec.normalize);
    assert_eq!(embedder.spec.max_seq_length, 256);
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    // Batched (padded, length-sorted) and one at a time must both match.
    let batched = embedder.embed(&texts, 4).unwrap();
    for (item, got) in items.iter().zip(&batched) {
        let ids: Vec<u32> = item["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            embedder.token_ids(item["text"].as_str().unwrap()).unwrap(),
            ids
        );
        let expected: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let single = embedder
            .embed(&[item["text"].as_str().unwrap().to_string()], 1)
            .unwrap()
            .remove(0);
        for (what, vector) in [("batched", got), ("single", &single)] {
            let cos = cosine(vector, &expected);
            assert!(cos >= 0.9999, "{what} {:?}: cosine {cos}", item["text"]);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        }
    }
}

#[test]
fn megatron_pooling_leaves_out_cls_and_sep() {
    let mean = Embedder::load(&minilm(), None).unwrap();
    let megatron = Embedder::load(&minilm(), Some(Pooling::Megatron)).unwrap();
    let text = "The Eiffel Tower is in Paris".to_string();
    let a = mean.embed(&[text.clone()], 1).unwrap().remove(0);
    let b = megatron.embed(&[text], 1).unwrap().remove(0);
    let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!(
        cos < 0.9999 && cos > 0.8,
        "different pooling, similar vector: {cos}"
    );
}

#[test]
fn directory_without_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Embedder::load(dir.path(), None).err().unwrap().to_string();
    assert!(err.contains("config.json: missing"), "{err}");
    std::fs::copy(minilm().join("config.json"), dir.path().join("config.json")).unwrap();
    let err = Embedder::load(dir.path(), None).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json: missing"), "{err}");
    std::fs::copy(
        minilm().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let err = Embedder::load(dir.path(), None).err().unwrap().to_string();
    assert!(err.contains("no *.safetensors"), "{err}");
}
