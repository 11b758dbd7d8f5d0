//! Next-token sampling: greedy at temperature 0, otherwise temperature, top-k and top-p (nucleus)
//! sampling with a seeded [`SplitMix64`], so that a seed reproduces a generation on every machine.

use anyhow::{bail, Result};

use crate::tiny::SplitMix64;

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// 0 = greedy (argmax; top-k, top-p and the seed are then unused).
    pub temperature: f64,
    /// Keep only the k most likely tokens (after temperature).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p, in `(0, 1]`.
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

impl SamplingOptions {
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            );
        }
        if self.top_k == Some(0) {
            bail!("top-k must be at least 1");
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("top-p must be in (0, 1], got {p}");
            }
        }
        Ok(())
    }
}

/// A seeded sampler; draws one uniform number per sampled token (none when greedy).
pub struct Sampler {
    opts: SamplingOptions,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(opts: SamplingOptions) -> Result<Self> {
        opts.validate()?;
        Ok(Self {
            opts,
            rng: SplitMix64::new(opts.seed),
        })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.opts
    }

    /// The next token for the logits of one position.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            bail!("no logits to sample from");
        }
        if logits.iter().any(|l| l.is_nan()) {
            bail!("the logits contain NaN");
        }
        if self.opts.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let probs = self.distribution(logits);
        let u = self.rng.uniform();
        let mut acc = 0.0;
        for &(id, p) in &probs {
            acc += p;
            if u < acc {
                return Ok(id);
            }
        }
        Ok(probs.last().expect("non-empty distribution").0)
    }

    /// The filtered, renormalised distribution `(token, probability)`, most likely first.
    pub fn distribution(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let t = self.opts.temperature.max(f64::MIN_POSITIVE);
        let mut scored: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l as f64 / t))
            .collect();
        // Descending by logit; ties by id so that the order (and the draw) is deterministic. The
        // order is total, so selecting the top k first and sorting only them gives the same list
        // without sorting the whole vocabulary for every token.
        let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if let Some(k) = self.opts.top_k.map(|k| k.max(1)) {
            if k < scored.len() {
                scored.select_nth_unstable_by(k - 1, order);
                scored.truncate(k);
            }
        }
        scored.sort_by(order);
        let max = scored[0].1;
        let mut probs: Vec<(u32, f64)> =
            scored.iter().map(|&(i, l)| (i, (l - max).exp())).collect();
        let z: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= z);
        if let Some(top_p) = self.opts.top_p {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p.1;
                if acc >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let z: f64 = probs.iter().map(|p| p.1).sum();
            probs.iter_mut().for_each(|p| p.1 /= z);
        }
        probs
    }
}

/// Index of the largest logit (the first one on ties, as candle's `argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> SamplingOptions {
        SamplingOptions {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    const LOGITS: [f32; 5] = [1.0, 3.0, 2.0, 0.5, 2.9];

    #[test]
    fn greedy_and_degenerate_filters_pick_the_argmax() {
        let mut s = Sampler::new(SamplingOptions::greedy()).unwrap();
        assert_eq!(s.sample(&LOGITS).unwrap(), 1);
        let mut k1 = Sampler::new(opts(1.5, Some(1), None)).unwrap();
        let mut p0 = Sampler::new(opts(1.5, None, Some(1e-9))).unwrap();
        for _ in 0..50 {
            assert_eq!(k1.sample(&LOGITS).unwrap(), 1);
            assert_eq!(p0.sample(&LOGITS).unwrap(), 1);
        }
    }

    #[test]
    fn filters_keep_the_right_tokens() {
        let s = Sampler::new(opts(1.0, Some(3), None)).unwrap();
        let ids: Vec<u32> = s.distribution(&LOGITS).iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![1, 4, 2]);
        // Softmax of LOGITS: p(1) ≈ 0.379, p(4) ≈ 0.343: 0.5 needs both, 0.3 only the first.
        let s = Sampler::new(opts(1.0, None, Some(0.5))).unwrap();
        let d = s.distribution(&LOGITS);
        assert_eq!(d.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 4]);
        assert!((d.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-12);
        let s = Sampler::new(opts(1.0, None, Some(0.3))).unwrap();
        assert_eq!(s.distribution(&LOGITS).len(), 1);
    }

    #[test]
    fn seeded_draws_reproduce_and_follow_the_distribution() {
        let draw = |seed| {
            let mut s = Sampler::new(SamplingOptions {
                seed,
                ..opts(1.0, None, None)
            })
            .unwrap();
            (0..4000)
                .map(|_| s.sample(&LOGITS).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(3);
        assert_eq!(a, draw(3));
        assert_ne!(a, draw(4));
        let s = Sampler::new(opts(1.0, None, None)).unwrap();
        for (id, p) in s.distribution(&LOGITS) {
            let freq = a.iter().filter(|&&t| t == id).count() as f64 / a.len() as f64;
            assert!((freq - p).abs() < 0.03, "token {id}: {freq} vs {p}");
        }
    }

    #[test]
    fn bad_options_are_errors() {
        assert!(Sampler::new(opts(-1.0, None, None)).is_err());
        assert!(Sampler::new(opts(f64::NAN, None, None)).is_err());
        assert!(Sampler::new(opts(1.0, Some(0), None)).is_err());
        assert!(Sampler::new(opts(1.0, None, Some(0.0))).is_err());
        assert!(Sampler::new(opts(1.0, None, Some(1.5))).is_err());
    }
}
