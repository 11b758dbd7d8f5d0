//! Greedy decoding with the KV cache: the prompt is run once, then one token per step at position
//! offset `cache.seq_len()`, instead of re-running the whole sequence per token as the reference
//! implementation did (issue 3, "Generation").

use anyhow::{bail, Result};
use candle_core::{IndexOp, Tensor};

use crate::decoder::Llama;

/// Generates up to `max_new` tokens after `prompt`, stopping after the first token in `stop`
/// (which is included in the output, as in `reference_generation.json`).
pub fn greedy(model: &Llama, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        bail!("empty prompt");
    }
    let device = model.device();
    let mut cache = model.new_cache();
    let mut input = Tensor::new(prompt, device)?.unsqueeze(0)?;
    let mut out = Vec::with_capacity(max_new);
    for _ in 0..max_new {
        let h = model.forward_hidden(&input, Some(&mut cache))?;
        let last = h.i((.., h.dim(1)? - 1..))?;
        let logits = model.logits(&last)?.flatten_all()?;
        let next = logits.argmax(0)?.to_scalar::<u32>()?;
        out.push(next);
        if stop.contains(&next) {
            break;
        }
        input = Tensor::new(&[next], device)?.unsqueeze(0)?;
    }
    Ok(out)
}
