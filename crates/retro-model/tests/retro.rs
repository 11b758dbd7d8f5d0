//! The Retro model on seeded random tiny models: shapes, the exact causal structure implied by the
//! CCA alignment, gate 0 / no neighbours = the plain decoder, gradients, retro-fitting and
//! checkpoints.

mod common;

use std::collections::HashMap;

use candle_core::{Device, IndexOp, Tensor};
use common::{max_abs_diff, save_hf_dir, write_gguf};
use retro_model::retro_weights::{
    copy_tokenizer_files, read_safetensors_header, retro_checkpoint_info, source_dir,
};
use retro_model::tiny::{random_ids, random_retro_weights, random_weights, tiny_retro_config};
use retro_model::{
    cca_alignment, retrofit, CcaInit, RetroConfig, RetroInit, RetroModel, RetroOptions,
    RetroWeights, RopeLayout, Weights,
};

const V: usize = 97;

fn ids(b: usize, n: usize, seed: u64) -> Tensor {
    Tensor::from_vec(random_ids(V, b * n, seed), (b, n), &Device::Cpu).unwrap()
}

/// Random neighbour tokens `(b, l, k, r)` for the tiny config.
fn neighbors(cfg: &RetroConfig, b: usize, ns: usize, seed: u64) -> Tensor {
    let l = ns.div_ceil(cfg.chunk_len);
    let (k, r) = (cfg.num_neighbors, cfg.retrieved_len);
    Tensor::from_vec(
        random_ids(V, b * l * k * r, seed),
        (b, l, k, r),
        &Device::Cpu,
    )
    .unwrap()
}

fn tiny(seed: u64) -> (RetroWeights, RetroModel) {
    let w = random_retro_weights(&tiny_retro_config(), seed, &Device::Cpu).unwrap();
    let m = w.build().unwrap();
    (w, m)
}

/// The decoder tensors alone, as a plain Llama.
fn plain_decoder(w: &RetroWeights) -> retro_model::Llama {
    let tensors: HashMap<String, Tensor> =
        retro_model::weights::expected_tensors(&w.config.decoder)
            .into_iter()
            .map(|(n, _)| {
                let t = w.tensors[&n].clone();
                (n, t)
            })
            .collect();
    Weights {
        config: w.config.decoder.clone(),
        tensors,
        blocks: Default::default(),
        source: retro_model::Source::Random { seed: 0 },
    }
    .build()
    .unwrap()
}

/// Max |a - b| over the positions before `p` of two `(batch, seq, vocab)` logits.
fn diff_before(a: &Tensor, b: &Tensor, p: usize) -> f32 {
    max_abs_diff(&a.i((.., ..p)).unwrap(), &b.i((.., ..p)).unwrap())
}

/// Sets chunk `j`'s neighbours (all k of them) to other random tokens.
fn change_chunk(nb: &Tensor, j: usize, seed: u64) -> Tensor {
    let (b, l, k, r) = nb.dims4().unwrap();
    let mut v: Vec<u32> = nb.flatten_all().unwrap().to_vec1().unwrap();
    let fresh = random_ids(V, k * r, seed);
    for bi in 0..b {
        for (i, t) in fresh.iter().enumerate() {
            let idx = ((bi * l + j) * k) * r + i;
            v[idx] = (*t + 1 + v[idx]) % V as u32; // differs from the old token
        }
    }
    Tensor::from_vec(v, (b, l, k, r), &Device::Cpu).unwrap()
}

/// The reference unit test's sizes (ns = 32, m = 4, k = 2, r = 8): logits and encoder output
/// shapes; wrong neighbour shapes are one-line errors.
#[test]
fn shapes_at_reference_sizes() {
    let (_, m) = tiny(1);
    let cfg = m.config().clone();
    let x = ids(2, 32, 2);
    let nb = neighbors(&cfg, 2, 32, 3);
    assert_eq!(nb.dims(), [2, 8, 2, 8]);
    let logits = m.forward(&x, Some(&nb)).unwrap();
    assert_eq!(logits.dims(), [2, 32, V]);
    let y = Tensor::randn(0f32, 1.0, (2, 32, 64), &Device::Cpu).unwrap();
    let enc = m.encoder_output(&nb, &y).unwrap();
    assert_eq!(enc.dims(), [2 * 8, 2 * 8, 64], "(b·l, k·r, d)");

    // Partial sequence: ceil(30/4) = 8 chunks too; 10 tokens need 3.
    assert_eq!(
        m.forward(&ids(2, 30, 4), Some(&nb)).unwrap().dims(),
        [2, 30, V]
    );
    let nb10 = neighbors(&cfg, 1, 10, 5);
    assert_eq!(nb10.dims(), [1, 3, 2, 8]);
    assert_eq!(
        m.forward(&ids(1, 10, 6), Some(&nb10)).unwrap().dims(),
        [1, 10, V]
    );

    let msg = |r: anyhow::Result<Tensor>| format!("{:#}", r.unwrap_err());
    let e = msg(m.forward(&ids(2, 28, 7), Some(&nb)));
    assert!(
        e.contains("neighbours must be (batch, chunks, k, r) = (2, 7, 2, 8)"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let bad = Tensor::full(500u32, (1, 3, 2, 8), &Device::Cpu).unwrap();
    let e = msg(m.forward(&ids(1, 10, 8), Some(&bad)));
    assert!(
        e.contains("neighbour tokens") && e.contains("out of range"),
        "{e}"
    );
}

/// Without neighbours, and with gate 0, the Retro model computes the plain decoder's logits; with
/// gate 1 it differs, but only from position `pad` on (the first m-1 tokens get no retrieval).
#[test]
fn gate_zero_and_no_neighbors_give_the_plain_decoder() {
    let (w, m) = tiny(10);
    let plain = plain_decoder(&w);
    for ns in [32usize, 30, 3] {
        let x = ids(2, ns, 11);
        let nb = neighbors(&w.config, 2, ns, 12);
        let expect = plain.forward(&x, None).unwrap();

        let none = m.forward(&x, None).unwrap();
        assert_eq!(max_abs_diff(&none, &expect), 0.0, "no neighbours, ns {ns}");

        let mut w0 = w.clone();
        w0.config.gate = 0.0;
        let g0 = w0.build().unwrap().forward(&x, Some(&nb)).unwrap();
        let d = max_abs_diff(&g0, &expect);
        assert!(
            d <= 1e-6,
            "gate 0 differs from the plain decoder by {d} (ns {ns})"
        );

        let g1 = m.forward(&x, Some(&nb)).unwrap();
        let pad = cca_alignment(ns, 4).unwrap().pad;
        if pad > 0 {
            let before = diff_before(&g1, &expect, pad);
            assert_eq!(
                before, 0.0,
                "positions before pad {pad} saw retrieval (ns {ns})"
            );
        }
        let after = max_abs_diff(&g1.i((.., pad..)).unwrap(), &expect.i((.., pad..)).unwrap());
        assert!(
            after > 1e-3,
            "retrieval did not change the logits (ns {ns}: {after})"
        );
    }
}

/// Changing the neighbours of chunk j changes no logit before the first position attending to
/// them, `(j+1)·m - 1` for a whole number of chunks (the last token of chunk j), and does change
/// the logits there. Checked for every chunk, for a whole and a partial (right-aligned) sequence.
#[test]
fn neighbors_of_chunk_j_reach_no_earlier_position() {
    let (w, m) = tiny(20);
    for ns in [32usize, 30] {
        let al = cca_alignment(ns, 4).unwrap();
        let x = ids(2, ns, 21);
        let nb = neighbors(&w.config, 2, ns, 22);
        let base = m.forward(&x, Some(&nb)).unwrap();
        for j in 0..al.num_chunks {
            let first = al.attending_positions(j).start;
            if ns % 4 == 0 {
                assert_eq!(first, (j + 1) * 4 - 1);
            }
            assert_eq!(first, al.chunk_tokens(j).end - 1);
            let other = m
                .forward(&x, Some(&change_chunk(&nb, j, 100 + j as u64)))
                .unwrap();
            if first > 0 {
                let before = diff_before(&base, &other, first);
                assert_eq!(
                    before, 0.0,
                    "ns {ns}: neighbours of chunk {j} reached a position before {first}"
                );
            }
            let at = max_abs_diff(
                &base.i((.., first)).unwrap(),
                &other.i((.., first)).unwrap(),
            );
            assert!(
                at > 1e-4,
                "ns {ns}: neighbours of chunk {j} did not reach position {first} ({at})"
            );
        }
    }
}

/// Changing token t changes no logit before t (neighbours fixed) and changes the logit at t; and
/// the logits of a whole-chunk prefix do not depend on what follows it.
#[test]
fn tokens_after_p_reach_no_position_up_to_p() {
    let (w, m) = tiny(30);
    let x = ids(1, 32, 31);
    let nb = neighbors(&w.config, 1, 32, 32);
    let base = m.forward(&x, Some(&nb)).unwrap();
    let xv: Vec<u32> = x.flatten_all().unwrap().to_vec1().unwrap();
    for t in [0usize, 2, 3, 4, 7, 13, 31] {
        let mut y = xv.clone();
        y[t] = (y[t] + 5) % V as u32;
        let other = m
            .forward(
                &Tensor::from_vec(y, (1, 32), &Device::Cpu).unwrap(),
                Some(&nb),
            )
            .unwrap();
        if t > 0 {
            let before = diff_before(&base, &other, t);
            assert_eq!(before, 0.0, "token {t} reached an earlier position");
        }
        let at = max_abs_diff(&base.i((.., t)).unwrap(), &other.i((.., t)).unwrap());
        assert!(at > 1e-4, "token {t} did not change its own logits");
    }
    // A prefix of p = 4c tokens with its c chunks' neighbours gives the same logits.
    for p in [4usize, 16, 28] {
        let pre = m
            .forward(
                &x.i((.., ..p)).unwrap(),
                Some(&nb.i((.., ..p / 4)).unwrap()),
            )
            .unwrap();
        let d = max_abs_diff(&pre, &base.i((.., ..p)).unwrap());
        assert!(d < 1e-4, "prefix {p} differs by {d}");
    }
}

/// The trainable model matches the inference one, and a loss gradient reaches the encoder (both
/// layers, its cross-attention included), the CCA of both Retro layers and their norms.
#[test]
fn gradients_reach_encoder_and_cca() {
    let (w, m) = tiny(40);
    let (mt, varmap) = w.build_trainable().unwrap();
    let x = ids(2, 30, 41);
    let nb = neighbors(&w.config, 2, 30, 42);
    let a = m.forward(&x, Some(&nb)).unwrap();
    let b = mt.forward(&x, Some(&nb)).unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "trainable and inference models differ by {d}");

    let targets = Tensor::from_vec(random_ids(V, 60, 43), 60, &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&b.reshape((60, V)).unwrap(), &targets).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    for name in [
        "model.encoder.layers.0.input_layernorm.weight",
        "model.encoder.layers.0.self_attn.q_proj.weight",
        "model.encoder.layers.0.pre_cross_attn_layernorm.weight",
        "model.encoder.layers.0.cross_attn.k_proj.weight",
        "model.encoder.layers.0.cross_attn.o_proj.weight",
        "model.encoder.layers.1.self_attn.v_proj.weight",
        "model.encoder.layers.1.mlp.down_proj.weight",
        "model.layers.1.pre_cross_attn_layernorm.weight",
        "model.layers.1.cross_attn.q_proj.weight",
        "model.layers.1.cross_attn.k_proj.weight",
        "model.layers.2.cross_attn.v_proj.weight",
        "model.layers.2.cross_attn.o_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.embed_tokens.weight",
    ] {
        let g = grads
            .get(data[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let n: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(n > 0.0, "zero gradient for {name}");
    }
}

fn tiny_options() -> RetroOptions {
    let c = tiny_retro_config();
    RetroOptions {
        chunk_len: c.chunk_len,
        num_neighbors: c.num_neighbors,
        retrieved_len: c.retrieved_len,
        retro_layer_numbers: Some(c.retro_layer_numbers.clone()),
        encoder_layers: c.encoder_layers,
        gate: c.gate,
    }
}

/// Retro-fitting a GGUF (interleaved RoPE) GPT: `--cca-init zero` computes exactly the GPT's
/// logits with neighbours; random init does not; the decoder is stored in the HF layout (its q/k
/// equal the HF originals); the same seed gives the same new tensors.
#[test]
fn retrofit_zero_equals_the_gpt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = random_weights(&tiny_retro_config().decoder, 50, &Device::Cpu).unwrap();
    let file = tmp.path().join("gpt.gguf");
    write_gguf(&base, &file, &[], "llama");
    let gguf = Weights::load(&file, &Device::Cpu).unwrap();
    assert_eq!(gguf.config.rope_layout, RopeLayout::Interleaved);
    let x = ids(2, 30, 51);
    let expect = base.build().unwrap().forward(&x, None).unwrap();

    let zero = RetroInit {
        cca: CcaInit::Zero,
        ..RetroInit::default()
    };
    let rz = retrofit(&gguf, &tiny_options(), &zero).unwrap();
    assert_eq!(rz.config.decoder.rope_layout, RopeLayout::RotateHalf);
    let q = "model.layers.1.self_attn.q_proj.weight";
    assert_eq!(max_abs_diff(&rz.tensors[q], &base.tensors[q]), 0.0);
    let nb = neighbors(&rz.config, 2, 30, 52);
    let got = rz.build().unwrap().forward(&x, Some(&nb)).unwrap();
    let d = max_abs_diff(&got, &expect);
    assert!(d <= 1e-6, "zero-init Retro differs from its GPT by {d}");
    let o: f32 = rz.tensors["model.layers.2.cross_attn.o_proj.weight"]
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(o, 0.0);
    // Only the decoder CCA output projections are zero; the encoder's are not.
    let eo: f32 = rz.tensors["model.encoder.layers.0.cross_attn.o_proj.weight"]
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(eo > 0.0);

    let rr = retrofit(&gguf, &tiny_options(), &RetroInit::default()).unwrap();
    let moved = max_abs_diff(
        &rr.build().unwrap().forward(&x, Some(&nb)).unwrap(),
        &expect,
    );
    assert!(moved > 1e-6, "random CCA init left the logits unchanged");
    let again = retrofit(&gguf, &tiny_options(), &RetroInit::default()).unwrap();
    let other = retrofit(
        &gguf,
        &tiny_options(),
        &RetroInit {
            seed: 7,
            ..RetroInit::default()
        },
    )
    .unwrap();
    let n = "model.encoder.layers.1.mlp.up_proj.weight";
    assert_eq!(max_abs_diff(&rr.tensors[n], &again.tensors[n]), 0.0);
    assert!(max_abs_diff(&rr.tensors[n], &other.tensors[n]) > 0.0);
    // Megatron's init: std 0.02 for input projections, scaled for output projections.
    let std = |t: &Tensor| -> f32 {
        t.sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let s_in = std(&rr.tensors[n]);
    let s_out = std(&rr.tensors["model.encoder.layers.1.mlp.down_proj.weight"]);
    assert!((s_in - 0.02).abs() < 0.002, "input std {s_in}");
    assert!(
        (s_out - 0.02 / 6f32.sqrt()).abs() < 0.001,
        "output std {s_out}"
    );
}

/// A checkpoint saved from an HF directory reloads to the same tensors, config and logits; its
/// safetensors are f32 with HF-style names; the tokenizer next to the source is copied; `info`
/// counts the parts from the header.
#[test]
fn checkpoint_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let base = random_weights(&tiny_retro_config().decoder, 60, &Device::Cpu).unwrap();
    let src = tmp.path().join("gpt");
    save_hf_dir(&base, &src);
    std::fs::write(src.join("tokenizer.json"), "{\"model\": {}}").unwrap();
    let gpt = Weights::load(&src, &Device::Cpu).unwrap();
    let rw = retrofit(
        &gpt,
        &tiny_options(),
        &RetroInit {
            seed: 61,
            ..RetroInit::default()
        },
    )
    .unwrap();

    let out = tmp.path().join("retro");
    rw.save(&out).unwrap();
    let copied = copy_tokenizer_files(&source_dir(&gpt.source).unwrap(), &out).unwrap();
    assert_eq!(copied, vec!["tokenizer.json".to_string()]);
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        b"{\"model\": {}}"
    );

    let back = RetroWeights::load(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config, rw.config);
    assert_eq!(back.tensors.len(), rw.tensors.len());
    for (n, t) in &rw.tensors {
        assert_eq!(
            max_abs_diff(t, &back.tensors[n]),
            0.0,
            "{n} changed in the round trip"
        );
    }
    let x = ids(1, 13, 62);
    let nb = neighbors(&rw.config, 1, 13, 63);
    let a = rw.build().unwrap().forward(&x, Some(&nb)).unwrap();
    let b = back.build().unwrap().forward(&x, Some(&nb)).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    // config.json: the decoder nested as an HF Llama config, 1-based layer numbers.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "RetroLlamaForCausalLM");
    assert_eq!(cfg["retro_layer_numbers"], serde_json::json!([2, 3]));
    assert_eq!(cfg["decoder"]["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["decoder"]["rope_layout"], "rotate_half");

    let header = read_safetensors_header(&out.join("model.safetensors")).unwrap();
    assert_eq!(header.len(), rw.tensors.len());
    assert!(header.iter().all(|t| t.dtype == "F32"));
    assert!(header.iter().any(
        |t| t.name == "model.encoder.layers.0.cross_attn.q_proj.weight" && t.shape == vec![64, 64]
    ));

    let info = retro_checkpoint_info(&out).unwrap();
    let counts = rw.param_counts();
    assert_eq!(info.parameters, counts);
    let decoder: usize = base.tensors.values().map(|t| t.elem_count()).sum();
    assert_eq!(counts.decoder, decoder);
    // CCA per Retro layer: norm 64 + q 64·64 + k,v 32·64 each + o 64·64 = 12352.
    assert_eq!(counts.cca, 2 * 12352);
    // Encoder: 2 × (2 norms + self-attn 12288 + MLP 3·64·128) + cross-attn 12288 + norm 64.
    assert_eq!(counts.encoder, 2 * (128 + 12288 + 24576) + 12288 + 64);
    assert_eq!(counts.total, counts.decoder + counts.encoder + counts.cca);
    assert_eq!(info.retro_layer_numbers, vec![2, 3]);
}

/// Bad Retro checkpoints are one-line errors naming the problem.
#[test]
fn bad_retro_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let load =
        |p: &std::path::Path| format!("{:#}", RetroWeights::load(p, &Device::Cpu).unwrap_err());

    // A plain GPT directory.
    let base = random_weights(&tiny_retro_config().decoder, 70, &Device::Cpu).unwrap();
    let gpt = tmp.path().join("gpt");
    save_hf_dir(&base, &gpt);
    let e = load(&gpt);
    assert!(e.contains("not a Retro checkpoint config"), "{e}");

    let rw = random_retro_weights(&tiny_retro_config(), 71, &Device::Cpu).unwrap();
    // A missing tensor.
    let mut missing = rw.clone();
    missing
        .tensors
        .remove("model.layers.2.cross_attn.k_proj.weight");
    let dir = tmp.path().join("missing");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&rw.config).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(&missing.tensors, dir.join("model.safetensors")).unwrap();
    let e = load(&dir);
    assert!(
        e.contains("model.layers.2.cross_attn.k_proj.weight") && e.contains("missing"),
        "{e}"
    );
    assert!(!e.contains('\n'));

    // The config names fewer Retro layers than the tensors have.
    let mut cfg = rw.config.clone();
    cfg.retro_layer_numbers = vec![2];
    let dir = tmp.path().join("extra");
    rw.save(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let e = load(&dir);
    assert!(
        e.contains("tensors not in the config") && e.contains("model.layers.2.cross_attn"),
        "{e}"
    );

    // Layer numbers are 1-based.
    cfg.retro_layer_numbers = vec![0, 2];
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let e = load(&dir);
    assert!(e.contains("outside 1..=3") && e.contains("1-based"), "{e}");

    // Too few layers for the default rule.
    let e = RetroConfig::new(base.config.clone(), &RetroOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("no Retro layer"), "{e:#}");
}

/// Reference §1.5: no positions reach the encoder, so reversing the tokens of every neighbour only
/// reverses the encoder's output rows (it is a bag of tokens to the model); with `encoder_rope`
/// the rows depend on where each token sits. Why that matters: experiments/retrofit/notes-duplicates.md.
#[test]
fn the_reference_encoder_sees_no_positions_and_encoder_rope_adds_them() {
    let (mut w, m) = tiny(21);
    let cfg = m.config().clone();
    let (b, ns) = (1, 16);
    let nb = neighbors(&cfg, b, ns, 22);
    let reversed = nb.flip(&[3]).unwrap();
    let y = Tensor::randn(0f32, 1.0, (b, ns, 64), &Device::Cpu).unwrap();
    // How far the encoder's output for reversed neighbours, reversed back, is from its output:
    // (b·l, k·r, d) viewed as (b·l, k, r, d) and reversed along r to line up.
    let reversal_gap = |m: &RetroModel| {
        let per_neighbour = |e: Tensor| {
            let (bl, kr, d) = e.dims3().unwrap();
            let k = cfg.num_neighbors;
            e.reshape((bl, k, kr / k, d)).unwrap()
        };
        let out = per_neighbour(m.encoder_output(&nb, &y).unwrap());
        let back = per_neighbour(m.encoder_output(&reversed, &y).unwrap());
        max_abs_diff(&out, &back.flip(&[2]).unwrap())
    };
    let bag = reversal_gap(&m);
    assert!(
        bag < 1e-4,
        "without RoPE, reversed neighbours give reversed rows: {bag}"
    );
    w.config.encoder_rope = true;
    let positional = reversal_gap(&w.build().unwrap());
    assert!(
        positional > 1e-2,
        "with RoPE, token order must matter: {positional}"
    );
    // The config says so, and a config without it keeps its old bytes.
    let json = serde_json::to_value(&w.config).unwrap();
    assert_eq!(json["encoder_rope"], true);
    w.config.encoder_rope = false;
    assert!(serde_json::to_value(&w.config)
        .unwrap()
        .get("encoder_rope")
        .is_none());
}
