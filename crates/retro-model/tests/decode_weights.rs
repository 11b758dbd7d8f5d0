//! `--decode-weights`: which weights one-row products multiply. The prompt (many rows) is always
//! f32; q8_0 changes decoding steps a little, and only them; auto and f32 are the f32 weights for a
//! model without GGUF blocks. (GGUF blocks against f32: tests/smollm2_reference.rs.)

mod common;

use candle_core::{Device, Tensor};
use common::max_abs_diff;
use retro_model::tiny::{random_retro_weights, random_weights, tiny_config, tiny_retro_config};
use retro_model::{DecodeWeights, Llama};

fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// Logits of a 5-token prompt, then of 6 one-token steps, with the KV cache.
fn steps(m: &Llama) -> Vec<Tensor> {
    let mut cache = m.new_cache();
    let mut out = vec![m
        .forward(&ids(&[3, 17, 5, 9, 30]), Some(&mut cache))
        .unwrap()];
    for t in [1u32, 44, 2, 8, 60, 7] {
        out.push(m.forward(&ids(&[t]), Some(&mut cache)).unwrap());
    }
    out
}

fn max_abs(t: &Tensor) -> f32 {
    common::max_abs(t)
}

fn check_q8_0_against_f32(f32_steps: &[Tensor], q8_steps: &[Tensor]) {
    assert_eq!(
        max_abs_diff(&f32_steps[0], &q8_steps[0]),
        0.0,
        "the prompt must be multiplied in f32"
    );
    for (i, (a, b)) in f32_steps.iter().zip(q8_steps).enumerate().skip(1) {
        let diff = max_abs_diff(a, b);
        assert!(diff > 0.0, "step {i}: q8_0 blocks were not used");
        assert!(
            diff < 0.02 * max_abs(a),
            "step {i}: q8_0 moved the logits by {diff} (max |logit| {})",
            max_abs(a)
        );
    }
}

#[test]
fn gpt_decoding_with_q8_0_blocks_is_close_and_the_prompt_exact() {
    let w = random_weights(&tiny_config(), 7, &Device::Cpu).unwrap();
    let f32_steps = steps(&w.build_for(DecodeWeights::F32).unwrap());
    let auto_steps = steps(&w.build_for(DecodeWeights::Auto).unwrap());
    for (a, b) in f32_steps.iter().zip(&auto_steps) {
        assert_eq!(max_abs_diff(a, b), 0.0, "auto without GGUF blocks is f32");
    }
    check_q8_0_against_f32(
        &f32_steps,
        &steps(&w.build_for(DecodeWeights::Q8_0).unwrap()),
    );
}

#[test]
fn retro_decoder_decodes_with_q8_0_blocks() {
    let cfg = tiny_retro_config();
    let w = random_retro_weights(&cfg, 3, &Device::Cpu).unwrap();
    let f32_steps = steps(w.build().unwrap().decoder());
    let q8 = w.build_for(DecodeWeights::Q8_0).unwrap();
    check_q8_0_against_f32(&f32_steps, &steps(q8.decoder()));
}
