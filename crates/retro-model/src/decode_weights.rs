//! Which weights one-row products (decoding) multiply: the f32 weights, or 4/8-bit blocks.
//!
//! At one row a product streams its weights once, so decoding speed is bytes per weight
//! (docs/kernels.md). A model read from a GGUF keeps that file's own blocks, which dequantise
//! exactly to its f32 weights: decoding with them changes nothing but the order of float additions
//! (`Auto`, the default). A model with f32 weights only (a Retro checkpoint, an HF directory) can
//! have its decoder matrices rounded to `Q8_0` blocks at load, as llama.cpp's `quantize` does: a
//! second copy, used only for decoding, that is close to but not equal to the f32 weights (`Q8_0`,
//! opt-in). Prompts (many rows) and training always use the f32 weights.

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Tensor;
use retro_kernels::{BlockMatrix, BLOCK};

use crate::config::LlamaConfig;
use crate::linear::BlockMap;
use crate::weights::expected_tensors;

/// The choice behind `--decode-weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DecodeWeights {
    /// The GGUF's own blocks where the model came from one, else the f32 weights.
    #[default]
    Auto,
    /// Always the f32 weights (exactly the model's arithmetic at every row count).
    F32,
    /// The GGUF's blocks, or else every decoder matrix rounded to Q8_0 at load (lossy).
    #[cfg_attr(feature = "clap", value(name = "q8_0"))]
    Q8_0,
}

/// Q8_0 blocks of the 2-D decoder tensors of `cfg` found in `tensors` and not already in `keep`,
/// together with `keep`'s blocks. A matrix whose rows are not whole blocks (`in` not a multiple of
/// 32) stays f32.
pub fn with_q8_0_blocks(
    cfg: &LlamaConfig,
    tensors: &std::collections::HashMap<String, Tensor>,
    keep: &BlockMap,
) -> Result<BlockMap> {
    let mut out = keep.clone();
    for (name, shape) in expected_tensors(cfg) {
        if shape.len() != 2 || !shape[1].is_multiple_of(BLOCK) || out.contains_key(&name) {
            continue;
        }
        let Some(t) = tensors.get(&name) else {
            continue;
        };
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let b = BlockMatrix::quantize_q8_0(shape[0], shape[1], &values)
            .with_context(|| format!("cannot round {name} to Q8_0"))?;
        out.insert(name, Arc::new(b));
    }
    Ok(out)
}
