//! Loading checkpoints from HF directories and GGUF files (whole, in a directory, split into
//! `.partNN` pieces), and the one-line errors for bad checkpoints. Uses tiny random models written
//! to a temporary directory.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{max_abs_diff, save_hf_dir, split_file, write_gguf};
use retro_model::tiny::{random_ids, random_weights, tiny_config};
use retro_model::{LlamaConfig, RopeLayout, Source, Weights};

fn logits(w: &Weights, ids: &[u32]) -> Tensor {
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    w.build().unwrap().forward(&x, None).unwrap()
}

fn load_err(path: &Path) -> String {
    format!("{:#}", Weights::load(path, &Device::Cpu).unwrap_err())
}

/// The same weights written as HF safetensors and as a GGUF (whole file, directory, 3 pieces)
/// load to the same model.
#[test]
fn hf_and_gguf_sources_give_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config();
    cfg.tie_word_embeddings = false; // exercise output.weight / lm_head.weight too
    let w = random_weights(&cfg, 21, &Device::Cpu).unwrap();
    let ids = random_ids(97, 20, 22);
    let expect = logits(&w, &ids);

    let hf_dir = tmp.path().join("hf");
    save_hf_dir(&w, &hf_dir);
    let hf = Weights::load(&hf_dir, &Device::Cpu).unwrap();
    assert_eq!(hf.source, Source::HfDir(hf_dir.clone()));
    assert_eq!(hf.config.rope_layout, RopeLayout::RotateHalf);
    assert_eq!(max_abs_diff(&logits(&hf, &ids), &expect), 0.0);

    let gguf_dir = tmp.path().join("gguf");
    std::fs::create_dir_all(&gguf_dir).unwrap();
    let file = gguf_dir.join("tiny.gguf");
    write_gguf(&w, &file, &[], "llama");
    let split_dir = tmp.path().join("split");
    std::fs::create_dir_all(&split_dir).unwrap();
    split_file(&file, &split_dir, 3);
    std::fs::write(split_dir.join("notes.txt"), "not a model").unwrap();

    for path in [&file, &gguf_dir, &split_dir] {
        let g = Weights::load(path, &Device::Cpu).unwrap();
        assert_eq!(g.config.rope_layout, RopeLayout::Interleaved);
        assert!(!g.config.tie_word_embeddings);
        assert_eq!(g.config.num_kv_heads(), 2);
        let d = max_abs_diff(&logits(&g, &ids), &expect);
        assert!(d < 1e-4, "{}: GGUF logits differ by {d}", path.display());
    }
    match Weights::load(&split_dir, &Device::Cpu).unwrap().source {
        Source::Gguf(parts) => {
            let names: Vec<_> = parts
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
                .collect();
            assert_eq!(
                names,
                ["tiny.gguf.part00", "tiny.gguf.part01", "tiny.gguf.part02"]
            );
        }
        other => panic!("split directory loaded as {other:?}"),
    }
}

/// A tied GGUF (no output.weight) loads with tie_word_embeddings; bf16 safetensors are converted.
#[test]
fn tied_gguf_and_bf16_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let w = random_weights(&tiny_config(), 23, &Device::Cpu).unwrap();
    let file = tmp.path().join("tied.gguf");
    write_gguf(&w, &file, &[], "llama");
    let g = Weights::load(&file, &Device::Cpu).unwrap();
    assert!(g.config.tie_word_embeddings);
    let ids = random_ids(97, 8, 24);
    assert!(max_abs_diff(&logits(&g, &ids), &logits(&w, &ids)) < 1e-4);

    let mut b = w.clone();
    for t in b.tensors.values_mut() {
        *t = t.to_dtype(candle_core::DType::BF16).unwrap();
    }
    let dir = tmp.path().join("bf16");
    save_hf_dir(&b, &dir);
    let h = Weights::load(&dir, &Device::Cpu).unwrap();
    let t = &h.tensors["model.layers.0.mlp.up_proj.weight"];
    assert_eq!(t.dtype(), candle_core::DType::F32);
    // bf16 keeps ~3 significant digits: the model is close to, not equal to, the f32 one.
    let d = max_abs_diff(&logits(&h, &ids), &logits(&w, &ids));
    assert!(d > 0.0 && d < 0.5, "bf16 model differs by {d}");
}

#[test]
fn missing_paths_and_empty_or_ambiguous_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_err(&tmp.path().join("nope"));
    assert!(e.contains("nope") && e.contains("cannot be read"), "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(load_err(&empty).contains("no model found"));

    let w = random_weights(&tiny_config(), 25, &Device::Cpu).unwrap();
    let two = tmp.path().join("two");
    std::fs::create_dir_all(&two).unwrap();
    write_gguf(&w, &two.join("a.gguf"), &[], "llama");
    write_gguf(&w, &two.join("b.gguf"), &[], "llama");
    let e = load_err(&two);
    assert!(
        e.contains("more than one GGUF") && e.contains("a.gguf") && e.contains("b.gguf"),
        "{e}"
    );

    // Pieces 00 and 02 without 01.
    let gap = tmp.path().join("gap");
    std::fs::create_dir_all(&gap).unwrap();
    split_file(&two.join("a.gguf"), &gap, 3);
    std::fs::remove_file(gap.join("a.gguf.part01")).unwrap();
    let e = load_err(&gap);
    assert!(e.contains("a.gguf.part02") && e.contains("part 01"), "{e}");

    // HF directory without config.json.
    let hf = tmp.path().join("hf");
    save_hf_dir(&w, &hf);
    std::fs::remove_file(hf.join("config.json")).unwrap();
    let e = load_err(&hf);
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn bad_checkpoints_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let w = random_weights(&tiny_config(), 26, &Device::Cpu).unwrap();

    // GGUF without a tensor: both names are reported.
    let f = tmp.path().join("missing.gguf");
    write_gguf(&w, &f, &["model.layers.1.mlp.up_proj.weight"], "llama");
    let e = load_err(&f);
    assert!(e.contains("1 of 20 tensors missing"), "{e}");
    assert!(
        e.contains("blk.1.ffn_up.weight (model.layers.1.mlp.up_proj.weight)"),
        "{e}"
    );

    // Unknown GGUF architecture.
    let f = tmp.path().join("gpt2.gguf");
    write_gguf(&w, &f, &[], "gpt2");
    assert!(load_err(&f).contains("unsupported GGUF architecture \"gpt2\""));

    // Truncated GGUF.
    let bytes = std::fs::read(tmp.path().join("missing.gguf")).unwrap();
    let f = tmp.path().join("trunc.gguf");
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    let e = load_err(&f);
    assert!(e.contains("trunc.gguf"), "{e}");

    // Not a GGUF at all.
    let f = tmp.path().join("text.gguf");
    std::fs::write(&f, b"hello, this is not a model file").unwrap();
    assert!(load_err(&f).contains("not a readable GGUF file"));

    // Unsupported tensor type: patch the ggml type code of the first tensor to 99.
    let good = tmp.path().join("good.gguf");
    write_gguf(&w, &good, &[], "llama");
    let mut bytes = std::fs::read(&good).unwrap();
    let name = b"blk.0.attn_k.weight";
    let pos = bytes
        .windows(name.len())
        .position(|s| s == name)
        .expect("tensor name in header");
    // name, n_dims u32, n_dims * u64 dims, then the type u32.
    let ndims_at = pos + name.len();
    let ndims = u32::from_le_bytes(bytes[ndims_at..ndims_at + 4].try_into().unwrap()) as usize;
    let ty_at = ndims_at + 4 + 8 * ndims;
    bytes[ty_at..ty_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let f = tmp.path().join("q99.gguf");
    std::fs::write(&f, &bytes).unwrap();
    let e = load_err(&f);
    assert!(
        e.contains("unsupported tensor type") && e.contains("99"),
        "{e}"
    );

    // HF: a shape mismatch names the tensor and both shapes.
    let mut bad = w.clone();
    bad.tensors.insert(
        "model.layers.0.self_attn.v_proj.weight".into(),
        Tensor::zeros((16, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tmp.path().join("shape");
    save_hf_dir(&bad, &dir);
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.0.self_attn.v_proj.weight: expected [32, 64], found [16, 64]"),
        "{e}"
    );

    // HF: unknown architecture in config.json.
    let dir = tmp.path().join("arch");
    save_hf_dir(&w, &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("LlamaForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("unknown architecture") && e.contains("GPT2LMHeadModel"),
        "{e}"
    );
    assert!(!e.contains('\n'), "error is not one line: {e}");
}

/// An HF config.json without our rope_layout field means rotate-half; defaults follow HF.
#[test]
fn hf_config_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("config.json");
    std::fs::write(
        &p,
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":97,"bos_token_id":1}"#,
    )
    .unwrap();
    let c = LlamaConfig::from_json_file(&p).unwrap();
    assert_eq!(c.rope_layout, RopeLayout::RotateHalf);
    assert_eq!(
        (c.num_kv_heads(), c.head_dim(), c.rope_theta),
        (4, 16, 10_000.0)
    );
    assert!(!c.tie_word_embeddings);

    std::fs::write(
        &p,
        r#"{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":3,"vocab_size":97}"#,
    )
    .unwrap();
    let e = format!("{:#}", LlamaConfig::from_json_file(&p).unwrap_err());
    assert!(e.contains("not a multiple of num_key_value_heads 3"), "{e}");

    std::fs::write(&p, r#"{"hidden_size":64}"#).unwrap();
    let e = format!("{:#}", LlamaConfig::from_json_file(&p).unwrap_err());
    assert!(
        e.contains("not a valid Llama config.json") && e.contains("intermediate_size"),
        "{e}"
    );
}
