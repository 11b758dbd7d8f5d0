//! Whether to use the fused kernels: on a CPU device, for f32 tensors, unless the environment
//! variable `RETRO_FUSED` is `0` (then callers use candle's composed ops, e.g. to compare).

use candle_core::{DType, Tensor};

/// True when `RETRO_FUSED` is not `0` and every tensor is f32 on the CPU.
pub fn enabled(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
        && allowed_by_env()
}

/// False when the environment variable `RETRO_FUSED` is `0`. Read on every call, so that a
/// process (a test, a benchmark) can compare both paths.
pub fn allowed_by_env() -> bool {
    std::env::var("RETRO_FUSED").map_or(true, |v| v.trim() != "0")
}

/// False when the environment variable `RETRO_DECODE_BLOCKS` is `0`: one-row products then use
/// the f32 weights even where GGUF blocks are attached (to compare both paths).
pub fn blocks_allowed_by_env() -> bool {
    std::env::var("RETRO_DECODE_BLOCKS").map_or(true, |v| v.trim() != "0")
}
