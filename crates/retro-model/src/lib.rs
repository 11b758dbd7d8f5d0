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

pub mod attention;
pub mod config;
pub mod decoder;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod kv_cache;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod rope;
pub mod tiny;
pub mod weights;

pub use config::{LlamaConfig, RopeLayout};
pub use decoder::{DecoderLayer, Llama};
pub use kv_cache::KvCache;
pub use weights::{Source, Weights};
