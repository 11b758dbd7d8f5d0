//! Hand-written f32 CPU kernels for training with candle (issue 6).
//!
//! candle composes RMSNorm, RoPE, SiLU, softmax and cross-entropy from many small tensor ops in
//! autograd, each allocating a fresh tensor and calling scalar libm `exp`, and its fused kernels
//! have no backward. Each op here is one candle custom op with a hand-written backward: one
//! rayon-parallel pass over rows, vectorisable inner loops and a polynomial `exp`.
//! `docs/kernels.md` explains why each exists. Every op needs contiguous f32 CPU tensors; the
//! `*` wrappers make inputs contiguous, and callers use [`enabled`] to pick these ops or candle's.
//! [`BlockMatrix`] is the decoding-side exception: a GGUF weight kept in its 4/8-bit blocks and
//! multiplied by one f32 row, with no backward.

mod adamw;
mod attention;
mod block_matrix;
mod cross_entropy;
mod fast_exp;
mod head_cross_entropy;
mod linear;
mod matmul;
mod rms_norm;
mod rope;
mod rows;
mod softmax;
mod swiglu;
mod switch;

pub use adamw::{adamw_update, AdamWHyper};
pub use attention::attention;
pub use block_matrix::{block_linear, BlockFormat, BlockMatrix, BLOCK};
pub use cross_entropy::masked_nll_sum;
pub use fast_exp::exp;
pub use head_cross_entropy::{linear_masked_nll_sum, linear_masked_nll_sum_blocked};
pub use linear::linear;
pub use matmul::{gemm, Operand, Write};
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use softmax::{masked_softmax_last_dim, softmax_last_dim};
pub use swiglu::swiglu;
pub use switch::{allowed_by_env, blocks_allowed_by_env, enabled};
