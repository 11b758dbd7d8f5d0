//! Llama-family decoder in candle, the base of the Retro model (issue 3; `docs/retro-reference.md`
//! §1 in the shared docs describes the Retro parts that build on it).
//!
//! - [`LlamaConfig`] from an HF `config.json` or GGUF metadata, with a [`RopeLayout`] saying which
//!   RoPE pairing the q/k weights expect.
//! - [`Weights::load`]: HF directory (`config.json` + `*.safetensors`), GGUF file, or a directory
//!   with a GGUF whole or split into `.partNN` pieces; always dequantised to f32 so that it can be
//!   trained ([`Weights::build_trainable`]).
//! - [`Llama`]: RMSNorm, RoPE, SwiGLU MLP, grouped-query attention, tied or untied head, with a
//!   [`KvCache`] for incremental decoding.
//! - [`tiny`]: seeded random models for fast tests.
//! - Retro (reference §1): [`RetroConfig`], [`RetroModel`] (decoder + chunked cross-attention +
//!   retrieval encoder), the CCA alignment in one function, [`cca_alignment`], and checkpoints /
//!   retro-fitting in [`retro_weights`].
//! - Generation: [`retro_generate`] (KV cache, retrieval at every chunk through a [`Retriever`],
//!   encoder output cached per chunk) and [`sampling`] (greedy / temperature / top-k / top-p).

pub mod alignment;
pub mod attention;
pub mod compute_pool;
pub mod config;
pub mod cross_attention;
pub mod decode_weights;
pub mod decoder;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod kv_cache;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod precision;
pub mod retro;
pub mod retro_config;
pub mod retro_generate;
pub mod retro_weights;
pub mod rope;
pub mod sampling;
pub mod tiny;
pub mod weights;

pub use alignment::{cca_alignment, CcaAlignment};
/// The candle version the model is built on, for callers that need a `Device` or `Tensor`.
pub use candle_core;
pub use compute_pool::in_compute_pool;
pub use config::{LlamaConfig, RopeLayout};
pub use decode_weights::DecodeWeights;
pub use decoder::{DecoderLayer, Llama};
pub use kv_cache::KvCache;
pub use precision::{precision, scoped_precision, set_precision, Precision};
pub use retro::RetroModel;
pub use retro_config::{default_retro_layer_numbers, RetroConfig, RetroOptions};
pub use retro_generate::{
    generate, generate_plain, pad_tokens, GenerateOptions, Generation, Mode, Neighbor, Retrieval,
    Retriever, RetroCache, TokenFlow,
};
pub use retro_weights::{retrofit, CcaInit, ParamCounts, RetroInit, RetroWeights};
pub use sampling::{Sampler, SamplingOptions};
pub use weights::{Source, Weights};
