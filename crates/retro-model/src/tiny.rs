//! Seeded random decoders for fast tests: a small config and weights drawn from a self-contained
//! generator (candle's CPU RNG cannot be seeded), so the same seed gives the same model on every
//! machine and candle version.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::config::{LlamaConfig, RopeLayout};
use crate::weights::{expected_tensors, Source, Weights};

/// 2 layers, hidden 64, 4 query heads sharing 2 key/value heads (so grouped-query attention is
/// exercised), head_dim 16, vocab 97, tied head, HF (rotate-half) layout.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        architectures: Some(vec!["LlamaForCausalLM".into()]),
        model_type: Some("llama".into()),
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: Some(16),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        vocab_size: 97,
        tie_word_embeddings: true,
        max_position_embeddings: 128,
        hidden_act: Some("silu".into()),
        rope_scaling: None,
        attention_bias: false,
        mlp_bias: false,
        rope_layout: RopeLayout::RotateHalf,
    }
}

/// SplitMix64: tiny, well-mixed, and stable across platforms.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// Random weights for `cfg`: matrices `N(0, 1/fan_in)` (unit-scale activations, so every layer
/// matters), embeddings `N(0, 1)`, norm gains `1 + N(0, 0.1²)`. Tensors are drawn in name order,
/// so the result depends only on `cfg` and `seed`.
pub fn random_weights(cfg: &LlamaConfig, seed: u64, device: &Device) -> Result<Weights> {
    cfg.validate()?;
    let mut rng = SplitMix64::new(seed);
    let mut spec = expected_tensors(cfg);
    spec.sort();
    let mut tensors = HashMap::new();
    for (name, shape) in spec {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 1 {
            (0..n).map(|_| (1.0 + 0.1 * rng.normal()) as f32).collect()
        } else if name.contains("embed_tokens") || name.starts_with("lm_head") {
            (0..n).map(|_| rng.normal() as f32).collect()
        } else {
            let std = 1.0 / (shape[1] as f64).sqrt();
            (0..n).map(|_| (std * rng.normal()) as f32).collect()
        };
        tensors.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(Weights {
        config: cfg.clone(),
        tensors,
        blocks: Default::default(),
        source: Source::Random { seed },
    })
}

/// `len` random token ids below `vocab`.
pub fn random_ids(vocab: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed ^ 0xA5A5_A5A5);
    (0..len).map(|_| rng.below(vocab) as u32).collect()
}

/// [`tiny_config`] with 3 layers, as a Retro model: layers 2 and 3 (1-based) have CCA, so layer 1
/// is a plain layer before the first Retro layer; chunks of m = 4, k = 2 neighbours of r = 8 tokens
/// (the reference unit test's sizes), 2 encoder layers, gate 1.
pub fn tiny_retro_config() -> crate::retro_config::RetroConfig {
    let mut d = tiny_config();
    d.num_hidden_layers = 3;
    let opts = crate::retro_config::RetroOptions {
        chunk_len: 4,
        num_neighbors: 2,
        retrieved_len: 8,
        retro_layer_numbers: Some(vec![2, 3]),
        encoder_layers: 2,
        gate: 1.0,
    };
    crate::retro_config::RetroConfig::new(d, &opts).expect("valid tiny retro config")
}

/// A seeded random Retro model for `cfg`: [`random_weights`] for the decoder, and the new tensors
/// drawn by [`crate::retro_weights::init_retro_tensors`] with std 0.125 = 1/sqrt(hidden) (the
/// decoder's fan-in scale, not Megatron's 0.02) so that retrieval visibly moves the logits in tests.
/// (With std 0.5 activations blow up and f32 round-off alone moves logits by 1e-2.)
pub fn random_retro_weights(
    cfg: &crate::retro_config::RetroConfig,
    seed: u64,
    device: &Device,
) -> Result<crate::retro_weights::RetroWeights> {
    let base = random_weights(&cfg.decoder, seed, device)?;
    let init = crate::retro_weights::RetroInit {
        seed: seed.wrapping_add(1),
        std: 0.125,
        cca: crate::retro_weights::CcaInit::Random,
    };
    let mut tensors = base.tensors;
    tensors.extend(crate::retro_weights::init_retro_tensors(
        cfg, &init, device,
    )?);
    let w = crate::retro_weights::RetroWeights {
        config: cfg.clone(),
        tensors,
    };
    w.check()?;
    Ok(w)
}
