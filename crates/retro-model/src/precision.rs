//! The precision of matrix products, autocast-style: `Bf16` multiplies every [`crate::linear::Linear`]
//! in bf16 (input and weight rounded, the product returned as f32), while the weights, their
//! gradients, the optimizer's moments, norms, softmax and the loss stay f32 (issue 4: "f32 on CPU
//! with a bf16 option"; PyTorch's `torch.autocast(dtype=torch.bfloat16)` makes the same split).
//!
//! Per thread, like autocast's context: a training run sets it once on the thread that runs the
//! model, and tests in parallel threads do not see each other's setting. The forwards run on a
//! worker of candle's pool, and [`crate::in_compute_pool`] carries the caller's setting there.
//! On a GPU bf16 products run on tensor cores; on the CPU candle widens bf16 back to f32 to
//! multiply (it has no bf16 kernel), so there it only rounds and is slower: f32 is the default and
//! what the CPU benchmarks use.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

/// The choice behind `retro train --precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products of the linear layers in bf16, the rest f32.
    Bf16,
}

thread_local! {
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Sets the precision of the linear layers' products run from this thread from now on.
pub fn set_precision(p: Precision) {
    PRECISION.with(|c| c.set(p));
}

pub fn precision() -> Precision {
    PRECISION.with(Cell::get)
}

/// Sets `p` on this thread until the returned guard is dropped, then restores the previous setting.
pub fn scoped_precision(p: Precision) -> PrecisionGuard {
    let previous = precision();
    set_precision(p);
    PrecisionGuard { previous }
}

#[must_use = "the precision is restored when the guard is dropped"]
pub struct PrecisionGuard {
    previous: Precision,
}

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        set_precision(self.previous);
    }
}
