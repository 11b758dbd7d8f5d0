//! Work cut into fixed-size blocks of chunks, each saved in its own file, and `--shard I/N`.
//!
//! As in the reference (§3, `get_blocks`): a block is done when its file exists; a rerun skips done blocks, so a job
//! killed with `kill -9` resumes at the first missing block. A shard `I/N` takes every N-th block starting at I, so N
//! machines (a Slurm or Kubernetes job array) share a stage; a later run without a shard finds their blocks done.

use anyhow::{bail, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `--shard I/N`: this worker does blocks `I, I+N, I+2N, …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, block_idx: usize) -> bool {
        block_idx % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let Some((i, n)) = s.split_once('/') else {
            bail!("--shard {s:?}: expected I/N, e.g. 0/4")
        };
        let (Ok(index), Ok(count)) = (i.trim().parse::<usize>(), n.trim().parse::<usize>()) else {
            bail!("--shard {s:?}: expected I/N with whole numbers, e.g. 0/4")
        };
        if count == 0 || index >= count {
            bail!("--shard {s:?}: out of range, I must be in 0..N");
        }
        Ok(Shard { index, count })
    }
}

/// The block ranges covering `0..n_items`.
pub fn block_ranges(n_items: usize, block_size: usize) -> Vec<Range<usize>> {
    assert!(block_size > 0, "block size must be positive");
    (0..n_items)
        .step_by(block_size)
        .map(|s| s..(s + block_size).min(n_items))
        .collect()
}

/// The file of block `range` in `dir`, named by its zero-padded chunk range.
pub fn block_path(dir: &Path, range: &Range<usize>, extension: &str) -> PathBuf {
    dir.join(format!("{:012}-{:012}.{extension}", range.start, range.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_blocks() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for b in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(b)).count(), 1);
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert_eq!(block_ranges(10, 4), vec![0..4, 4..8, 8..10]);
    }
}
