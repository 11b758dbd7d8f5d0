//! Generation with retrieval on the real SmolLM2-135M-Instruct GGUF retro-fitted with small chunks (m = 8, r = 16, so
//! that a short generation crosses several chunk boundaries) and an in-memory retriever: `--cca-init zero` generates
//! exactly the GPT's greedy tokens (those of `reference_generation.json`), and with random CCA the KV-cached forward
//! equals the full recomputation on the real architecture (9 query / 3 KV heads, 8 Retro layers).

mod common;

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{Device, Tensor};
use common::max_abs_diff;
use retro_model::generate::greedy;
use retro_model::tiny::random_ids;
use retro_model::{
    generate, retrofit, CcaInit, GenerateOptions, Mode, Neighbor, Retriever, RetroInit,
    RetroOptions, SamplingOptions, TokenFlow, Weights,
};

const V: usize = 49152;

struct Fake(usize);

impl Retriever for Fake {
    fn retrieve(&mut self, chunk: &[u32], k: usize, r: usize) -> Result<Vec<Neighbor>> {
        self.0 += 1;
        let seed = chunk.iter().map(|&t| t as u64).sum::<u64>();
        Ok((0..k)
            .map(|j| Neighbor {
                tokens: random_ids(V, r, seed + j as u64),
                chunk: j,
                doc: 0,
                text: String::new(),
            })
            .collect())
    }
}

#[test]
fn smollm2_retro_generation() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/models/smollm2-135m-instruct");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference_generation.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt = ids(&reference["items"][0]["input_ids"]);
    let expect = ids(&reference["items"][0]["greedy_ids"]);
    assert_eq!((prompt.len(), expect.len()), (16, 8));

    let gpt = Weights::load(&dir, &Device::Cpu).unwrap();
    let opts = RetroOptions {
        chunk_len: 8,
        retrieved_len: 16,
        ..RetroOptions::default()
    };
    let init = |cca| RetroInit {
        cca,
        ..RetroInit::default()
    };
    let greedy_opts = GenerateOptions {
        max_new: 8,
        sampling: SamplingOptions::greedy(),
        stop: Vec::new(),
    };

    // Zero CCA: retrieval at 8, 16 (prompt) and 24 (generated) changes nothing.
    let zero = retrofit(&gpt, &opts, &init(CcaInit::Zero))
        .unwrap()
        .build()
        .unwrap();
    let mut r = Fake(0);
    let g = generate(
        &zero,
        &prompt,
        Some(&mut r),
        &greedy_opts,
        Mode::Cached,
        &mut |_| Ok(TokenFlow::Continue(())),
    )
    .unwrap();
    assert_eq!(
        g.retrievals.iter().map(|r| r.position).collect::<Vec<_>>(),
        vec![8, 16]
    );
    assert_eq!(r.0, 2);
    assert_eq!(g.tokens, expect);
    assert_eq!(
        g.tokens,
        greedy(zero.decoder(), &prompt, 8, &[]).unwrap(),
        "the GPT's own greedy tokens"
    );

    // Random CCA: cached logits (fed in pieces) equal the full recomputation.
    let model = retrofit(&gpt, &opts, &init(CcaInit::Random))
        .unwrap()
        .build()
        .unwrap();
    let seq: Vec<u32> = prompt
        .iter()
        .chain(&expect)
        .copied()
        .chain(random_ids(V, 6, 3))
        .collect(); // 30 tokens, chunks at 8, 16, 24
    let nbs: Vec<Tensor> = (0..3)
        .map(|c| Tensor::from_vec(random_ids(V, 32, 50 + c), (2, 16), &Device::Cpu).unwrap())
        .collect();
    let full = model.forward_left_aligned(&seq, Some(&nbs)).unwrap();
    let plain = model.forward_left_aligned(&seq, None).unwrap();
    assert!(
        max_abs_diff(&full, &plain) > 1e-3,
        "random CCA moves the logits"
    );
    let mut cache = model.new_cache();
    let mut parts = Vec::new();
    let mut at = 0;
    for len in [13usize, 1, 4, 12] {
        let ids = Tensor::new(&seq[at..at + len], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let new: Vec<Option<Tensor>> = (at / 8..(at + len) / 8)
            .map(|c| Some(nbs[c].unsqueeze(0).unwrap()))
            .collect();
        let h = model.forward_cached(&ids, &new, &mut cache).unwrap();
        parts.push(model.decoder().logits(&h).unwrap());
        at += len;
    }
    let cached = Tensor::cat(&parts, 1).unwrap();
    let diff = max_abs_diff(&cached, &full);
    eprintln!(
        "cached vs recomputed: {diff}; retrieval moved the logits by {}",
        max_abs_diff(&full, &plain)
    );
    // Logits of 20-30; the decoder alone, cached vs whole, differs by about 1e-4 (docs/model.md).
    assert!(diff < 1e-3, "cached vs recomputed: {diff}");

    // And the two generation loops agree, greedy, across the boundaries at 16 and 24.
    let (mut r1, mut r2) = (Fake(0), Fake(0));
    let a = generate(
        &model,
        &prompt,
        Some(&mut r1),
        &greedy_opts,
        Mode::Cached,
        &mut |_| Ok(TokenFlow::Continue(())),
    )
    .unwrap();
    let b = generate(
        &model,
        &prompt,
        Some(&mut r2),
        &greedy_opts,
        Mode::Recompute,
        &mut |_| Ok(TokenFlow::Continue(())),
    )
    .unwrap();
    assert_eq!(a, b);
}
