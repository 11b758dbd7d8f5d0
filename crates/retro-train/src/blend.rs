//! The order of a blend of several sample sets (SFT's `--data FILE:WEIGHT ...`): position p draws
//! from the set that is furthest behind its share (Megatron's `build_blending_indices`: the set d
//! maximising `w_d·(p+1) − drawn_d`), and within the set the next sample of that set's own seeded
//! per-epoch order. Everything is a function of (seed, weights, sizes), so the data position stays
//! the only state a checkpoint needs.

use crate::order::{DataOrder, SampleOrder};

pub struct BlendOrder {
    /// Normalised weights.
    weights: Vec<f64>,
    /// Per set: its first sample in the concatenation.
    offsets: Vec<usize>,
    orders: Vec<SampleOrder>,
    /// Per position so far: (set, rank within the set).
    picks: Vec<(u16, u64)>,
    drawn: Vec<u64>,
}

impl BlendOrder {
    /// `sets`: per set, its first sample in the concatenation and its size (> 0); `weights` > 0.
    pub fn new(seed: u64, sets: &[(usize, usize)], weights: &[f64]) -> Self {
        assert_eq!(sets.len(), weights.len());
        assert!(!sets.is_empty() && sets.len() <= u16::MAX as usize);
        let total: f64 = weights.iter().sum();
        Self {
            weights: weights.iter().map(|w| w / total).collect(),
            offsets: sets.iter().map(|s| s.0).collect(),
            orders: sets
                .iter()
                .enumerate()
                .map(|(d, s)| SampleOrder::new(seed.wrapping_add(d as u64), s.1))
                .collect(),
            picks: Vec::new(),
            drawn: vec![0; sets.len()],
        }
    }

    /// The set each of the first `n` positions draws from.
    pub fn sets_of_first(&mut self, n: u64) -> Vec<usize> {
        (0..n)
            .map(|p| {
                self.sample_at(p);
                self.picks[p as usize].0 as usize
            })
            .collect()
    }
}

impl DataOrder for BlendOrder {
    fn sample_at(&mut self, position: u64) -> usize {
        while self.picks.len() as u64 <= position {
            let next = self.picks.len() as f64 + 1.0;
            let d = (0..self.weights.len())
                .max_by(|&a, &b| {
                    let ea = self.weights[a] * next - self.drawn[a] as f64;
                    let eb = self.weights[b] * next - self.drawn[b] as f64;
                    // Ties go to the first set, as in Megatron.
                    ea.partial_cmp(&eb).unwrap().then(b.cmp(&a))
                })
                .unwrap();
            self.picks.push((d as u16, self.drawn[d]));
            self.drawn[d] += 1;
        }
        let (d, rank) = self.picks[position as usize];
        let d = d as usize;
        self.offsets[d] + self.orders[d].sample_at(rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_drawn_in_proportion_and_each_set_in_its_own_permutation() {
        let sets = [(0, 10), (10, 50)];
        let mut order = BlendOrder::new(3, &sets, &[3.0, 1.0]);
        let picks = order.sets_of_first(400);
        assert_eq!(picks.iter().filter(|&&d| d == 0).count(), 300);
        // The first 10 draws of set 0 are a permutation of its samples 0..10.
        let mut first: Vec<usize> = (0..40)
            .map(|p| order.sample_at(p))
            .filter(|&s| s < 10)
            .take(10)
            .collect();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        // Random access equals sequential reading.
        let mut fresh = BlendOrder::new(3, &sets, &[3.0, 1.0]);
        assert_eq!(fresh.sample_at(123), order.sample_at(123));
    }
}
