//! Fast properties of the decoder on seeded random tiny models (no files needed).

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::max_abs_diff;
use retro_model::tiny::{random_ids, random_weights, tiny_config};
use retro_model::{Llama, RopeLayout, Weights};

fn tiny(seed: u64) -> (Weights, Llama) {
    let w = random_weights(&tiny_config(), seed, &Device::Cpu).unwrap();
    let m = w.build().unwrap();
    (w, m)
}

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// Changing token t changes no logit at positions < t, and does change the logits at t.
#[test]
fn causality() {
    let (_, m) = tiny(1);
    let a = random_ids(97, 24, 1);
    let base = m.forward(&ids(&a), None).unwrap();
    for t in [0usize, 5, 17, 23] {
        let mut b = a.clone();
        b[t] = (b[t] + 1 + t as u32) % 97;
        let other = m.forward(&ids(&b), None).unwrap();
        if t > 0 {
            let before = max_abs_diff(&base.i((.., ..t)).unwrap(), &other.i((.., ..t)).unwrap());
            assert_eq!(
                before, 0.0,
                "changing token {t} changed an earlier logit by {before}"
            );
        }
        let at = max_abs_diff(&base.i((.., t)).unwrap(), &other.i((.., t)).unwrap());
        assert!(
            at > 1e-3,
            "changing token {t} did not change its own logits ({at})"
        );
    }
}

/// The KV-cached forward over uneven pieces equals the full forward, for a batch of two.
#[test]
fn kv_cache_matches_full_forward() {
    let (_, m) = tiny(2);
    let seqs: Vec<u32> = [random_ids(97, 40, 3), random_ids(97, 40, 4)].concat();
    let all = Tensor::from_vec(seqs, (2, 40), &Device::Cpu).unwrap();
    let full = m.forward(&all, None).unwrap();
    let mut cache = m.new_cache();
    let mut start = 0;
    let mut pieces = Vec::new();
    for len in [7usize, 1, 1, 13, 2, 1, 15] {
        let out = m
            .forward(&all.i((.., start..start + len)).unwrap(), Some(&mut cache))
            .unwrap();
        pieces.push(out);
        start += len;
        assert_eq!(cache.seq_len(), start);
    }
    assert_eq!(start, 40);
    let inc = Tensor::cat(&pieces, 1).unwrap();
    let d = max_abs_diff(&full, &inc);
    assert!(d < 1e-4, "cached vs full forward differ by {d}");
}

/// Each sequence of a batch is computed independently of the others.
#[test]
fn batch_rows_are_independent() {
    let (_, m) = tiny(5);
    let (a, b) = (random_ids(97, 12, 6), random_ids(97, 12, 7));
    let both = Tensor::from_vec([a.clone(), b.clone()].concat(), (2, 12), &Device::Cpu).unwrap();
    let out = m.forward(&both, None).unwrap();
    let oa = m.forward(&ids(&a), None).unwrap();
    let ob = m.forward(&ids(&b), None).unwrap();
    assert!(max_abs_diff(&out.i(0..1).unwrap(), &oa) < 1e-5);
    assert!(max_abs_diff(&out.i(1..2).unwrap(), &ob) < 1e-5);
}

/// A failed forward (bad token id) leaves the cache untouched, so decoding can go on.
#[test]
fn failed_forward_leaves_cache_unchanged() {
    let (_, m) = tiny(8);
    let s = random_ids(97, 10, 9);
    let mut cache = m.new_cache();
    m.forward(&ids(&s[..6]), Some(&mut cache)).unwrap();
    let err = m.forward(&ids(&[3, 500]), Some(&mut cache)).unwrap_err();
    assert!(
        format!("{err:#}").contains("token id 500 is out of range"),
        "{err:#}"
    );
    assert_eq!(cache.seq_len(), 6);
    let inc = m.forward(&ids(&s[6..]), Some(&mut cache)).unwrap();
    let full = m.forward(&ids(&s), None).unwrap();
    assert!(max_abs_diff(&inc, &full.i((.., 6..)).unwrap()) < 1e-4);
}

/// Interleaved RoPE on GGUF-ordered q/k rows equals rotate-half RoPE on HF-ordered rows; using
/// the wrong layout for the weight order changes the logits from position 1 on (not at 0).
#[test]
fn rope_layouts_agree_only_with_matching_weight_order() {
    let (hf, m_hf) = tiny(10);
    let gg = hf.to_rope_layout(RopeLayout::Interleaved).unwrap();
    assert_eq!(gg.config.rope_layout, RopeLayout::Interleaved);
    let m_gg = gg.build().unwrap();
    let x = ids(&random_ids(97, 16, 11));
    let a = m_hf.forward(&x, None).unwrap();
    let b = m_gg.forward(&x, None).unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "layouts disagree by {d}");

    // Back to HF order gives the original tensors exactly.
    let back = gg.to_rope_layout(RopeLayout::RotateHalf).unwrap();
    let name = "model.layers.1.self_attn.k_proj.weight";
    assert_eq!(max_abs_diff(&back.tensors[name], &hf.tensors[name]), 0.0);

    // Wrong: GGUF-ordered weights with HF's rotate-half RoPE.
    let mut wrong = gg.clone();
    wrong.config.rope_layout = RopeLayout::RotateHalf;
    let c = wrong.build().unwrap().forward(&x, None).unwrap();
    assert!(max_abs_diff(&a.i((.., 0)).unwrap(), &c.i((.., 0)).unwrap()) < 1e-4);
    let later = max_abs_diff(&a.i((.., 1..)).unwrap(), &c.i((.., 1..)).unwrap());
    assert!(later > 0.1, "wrong layout went unnoticed ({later})");
}

/// The trainable (Var-backed, differentiable kernels) model computes the same logits as the
/// inference one (fused kernels), and gradients reach the embedding, attention, MLP and norms.
#[test]
fn trainable_model_matches_and_has_gradients() {
    let (w, m) = tiny(12);
    let (mt, varmap) = w.build_trainable().unwrap();
    let x = ids(&random_ids(97, 20, 13));
    let a = m.forward(&x, None).unwrap();
    let b = mt.forward(&x, None).unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "fused vs differentiable kernels differ by {d}");

    let targets = Tensor::new(&random_ids(97, 20, 14)[..], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&b.squeeze(0).unwrap(), &targets).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    for name in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.norm.weight",
    ] {
        let g = grads
            .get(data[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let n: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(n > 0.0, "zero gradient for {name}");
    }
}

/// With an untied head, `lm_head.weight` is used; with a tied one, it is not needed.
#[test]
fn tied_and_untied_heads() {
    let mut cfg = tiny_config();
    cfg.tie_word_embeddings = false;
    let w = random_weights(&cfg, 15, &Device::Cpu).unwrap();
    let x = ids(&random_ids(97, 5, 16));
    let a = w.build().unwrap().forward(&x, None).unwrap();
    let mut w2 = w.clone();
    let head = &w.tensors["lm_head.weight"];
    w2.tensors
        .insert("lm_head.weight".into(), (head * 2.0).unwrap());
    let b = w2.build().unwrap().forward(&x, None).unwrap();
    let d = max_abs_diff(&(a * 2.0).unwrap(), &b);
    assert!(d < 1e-4, "untied head not used as expected ({d})");

    let (tied, m) = tiny(17);
    assert!(!tied.tensors.contains_key("lm_head.weight"));
    let h = m.forward_hidden(&x, None).unwrap();
    let manual = h
        .broadcast_matmul(&tied.tensors["model.embed_tokens.weight"].t().unwrap())
        .unwrap();
    assert!(max_abs_diff(&manual, &m.forward(&x, None).unwrap()) < 1e-4);
}

/// Bad inputs to the forward are errors with a message, not panics.
#[test]
fn forward_rejects_bad_input() {
    let (_, m) = tiny(18);
    let msg = |r: anyhow::Result<Tensor>| format!("{:#}", r.unwrap_err());
    assert!(msg(m.forward(&ids(&[1, 97]), None)).contains("out of range"));
    let long = vec![1u32; 129];
    assert!(msg(m.forward(&ids(&long), None)).contains("exceeds the model context"));
    let flat = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    assert!(msg(m.forward(&flat, None)).contains("(batch, seq)"));
    let float = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(msg(m.forward(&float, None)).contains("must be integers"));
    let neg = Tensor::new(&[[1i64, -3]], &Device::Cpu).unwrap();
    assert!(msg(m.forward(&neg, None)).contains("negative token id -3"));

    // A cache filled with batch 1 cannot take batch 2; a context overflow through the cache.
    let mut cache = m.new_cache();
    m.forward(&ids(&[1; 100]), Some(&mut cache)).unwrap();
    let two = Tensor::zeros((2, 1), DType::U32, &Device::Cpu).unwrap();
    assert!(msg(m.forward(&two, Some(&mut cache))).contains("batch size"));
    assert!(msg(m.forward(&ids(&[1; 29]), Some(&mut cache))).contains("exceeds the model context"));
    assert_eq!(cache.seq_len(), 100);
}

/// Greedy decoding with the cache equals argmax of full re-forwards at every step.
#[test]
fn greedy_with_cache_equals_full_reforward() {
    let (_, m) = tiny(19);
    let prompt = random_ids(97, 9, 20);
    let fast = retro_model::generate::greedy(&m, &prompt, 12, &[]).unwrap();
    let mut seq = prompt.clone();
    for _ in 0..12 {
        let logits = m.forward(&ids(&seq), None).unwrap();
        let last = logits.i((0, seq.len() - 1)).unwrap();
        seq.push(last.argmax(0).unwrap().to_scalar::<u32>().unwrap());
    }
    assert_eq!(fast, seq[prompt.len()..]);
}
