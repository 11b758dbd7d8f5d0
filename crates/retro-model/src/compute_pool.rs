//! Running model code as one task of candle's rayon pool on the CPU.
//!
//! Every op's parallel section (gemm, our kernels) goes to rayon. Called from a thread outside the
//! pool, each section is a hand-off: the caller queues a job, wakes a sleeping worker and sleeps
//! until it is done, two wake-ups per op and a few hundred per decoding step. From a worker of the
//! pool it is a join that the caller starts on at once. So the forwards, and the training loop's
//! whole step, run through [`in_compute_pool`] (docs/kernels.md, "Threads").

use candle_core::Device;

use crate::precision::{precision, scoped_precision};

/// `f` as one task of candle's rayon pool when `device` is the CPU (`Device::with_context`; inline
/// when this thread is already one of the pool's, a plain call on other devices). The task sees
/// this thread's [`crate::Precision`], which is per thread.
pub fn in_compute_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    let caller_precision = precision();
    device.with_context(|| {
        let _precision = scoped_precision(caller_precision);
        f()
    })
}
