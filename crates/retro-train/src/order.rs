//! The order samples are read in: a seeded permutation per epoch, so the whole run is a function of
//! (seed, number of samples), and a data position (samples consumed) is all a checkpoint needs.

use retro_model::tiny::SplitMix64;

/// Maps data positions (samples consumed so far) to sample indices.
pub trait DataOrder {
    fn sample_at(&mut self, position: u64) -> usize;
}

impl DataOrder for SampleOrder {
    fn sample_at(&mut self, position: u64) -> usize {
        SampleOrder::sample_at(self, position)
    }
}

/// Maps a data position to a sample index: position p is sample `perm_e[p mod n]` of epoch
/// e = p / n, each epoch a fresh Fisher–Yates permutation drawn from (seed, e).
#[derive(Debug, Clone)]
pub struct SampleOrder {
    seed: u64,
    n: usize,
    epoch: usize,
    perm: Vec<usize>,
}

impl SampleOrder {
    pub fn new(seed: u64, n_samples: usize) -> Self {
        assert!(n_samples > 0, "no samples to order");
        Self {
            seed,
            n: n_samples,
            epoch: 0,
            perm: permutation(seed, 0, n_samples),
        }
    }

    /// The sample read at data position `position`.
    pub fn sample_at(&mut self, position: u64) -> usize {
        let epoch = (position / self.n as u64) as usize;
        if epoch != self.epoch {
            self.epoch = epoch;
            self.perm = permutation(self.seed, epoch, self.n);
        }
        self.perm[(position % self.n as u64) as usize]
    }

    /// Epochs completed (fractional) after `position` samples.
    pub fn epochs(&self, position: u64) -> f64 {
        position as f64 / self.n as f64
    }
}

fn permutation(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_epochs_differ() {
        let mut order = SampleOrder::new(7, 50);
        let e0: Vec<usize> = (0..50).map(|p| order.sample_at(p)).collect();
        let e1: Vec<usize> = (50..100).map(|p| order.sample_at(p)).collect();
        for e in [&e0, &e1] {
            let mut s = e.clone();
            s.sort();
            assert_eq!(s, (0..50).collect::<Vec<_>>());
        }
        assert_ne!(e0, e1);
        // Random access gives what sequential reading gave.
        let mut fresh = SampleOrder::new(7, 50);
        assert_eq!(fresh.sample_at(73), e1[23]);
        assert_eq!(fresh.sample_at(3), e0[3]);
        let mut other = SampleOrder::new(8, 50);
        assert_ne!((0..50).map(|p| other.sample_at(p)).collect::<Vec<_>>(), e0);
    }
}
