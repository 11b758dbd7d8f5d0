//! Learning rate: linear warmup from 0 to `lr` over `warmup` steps, then cosine decay to `min_lr`
//! at `decay_steps` (Megatron's `--lr-decay-style cosine`, reference §2), constant after.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub decay_steps: u64,
}

impl LrSchedule {
    /// The rate used for optimizer step `step` (1-based: the first update is step 1).
    pub fn at(&self, step: u64) -> f64 {
        if self.warmup > 0 && step <= self.warmup {
            return self.lr * step as f64 / self.warmup as f64;
        }
        if step >= self.decay_steps || self.decay_steps <= self.warmup {
            return self.min_lr;
        }
        let progress = (step - self.warmup) as f64 / (self.decay_steps - self.warmup) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.lr - self.min_lr) * cosine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_min() {
        let s = LrSchedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 10,
            decay_steps: 110,
        };
        assert!((s.at(1) - 1e-4).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        // Halfway through the decay the cosine is at its midpoint.
        assert!((s.at(60) - 5.5e-4).abs() < 1e-12);
        assert!((s.at(110) - 1e-4).abs() < 1e-12);
        assert!((s.at(500) - 1e-4).abs() < 1e-12);
        assert!(s.at(30) > s.at(31));
    }
}
