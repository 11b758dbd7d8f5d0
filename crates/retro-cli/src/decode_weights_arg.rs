//! `--decode-weights`, shared by the commands that generate (`generate`, `chat`, `serve`, `bench decode`).

use clap::Args;
use retro_model::DecodeWeights;

#[derive(Args, Debug, Clone, Copy)]
pub struct DecodeWeightsArg {
    /// The weights that decoding (one token per step) multiplies. auto: a GGUF's own 4/8-bit blocks, which equal its
    /// weights exactly, else the f32 weights; f32: always the f32 weights; q8_0: like auto, but f32 matrices (a Retro
    /// checkpoint, an HF model) are also rounded to Q8_0 blocks at load: faster decoding, slightly different logits.
    /// Prompts are always multiplied in f32.
    #[arg(long, value_enum, default_value = "auto")]
    pub decode_weights: DecodeWeights,
}
