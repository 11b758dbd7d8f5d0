//! Megatron indexed datasets (`PREFIX.bin` + `PREFIX.idx`, the `MMIDIDX` format of
//! `megatron/core/datasets/indexed_dataset.py`), already GPT-tokenised.
//!
//! `.idx` layout, little-endian: magic `MMIDIDX\0\0` (9 bytes), version u64 (= 1), dtype code u8, sequence count u64,
//! document count u64, sequence lengths i32[sequences], sequence byte offsets into `.bin` i64[sequences], document
//! indices i64[documents] (the first sequence of each document, starting with 0, ending with the sequence count).

use crate::corpus::{with_suffix, Content, Document};
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
const VERSION: u64 = 1;

/// Megatron's dtype codes (`DType` in indexed_dataset.py).
fn dtype_size(code: u8) -> Option<usize> {
    match code {
        1 | 2 => Some(1), // uint8, int8
        3 | 8 => Some(2), // int16, uint16
        4 => Some(4),     // int32
        5 => Some(8),     // int64
        _ => None,        // float types are not token datasets
    }
}

pub struct IndexedDataset {
    prefix: PathBuf,
    bin: Mmap,
    dtype: u8,
    sequence_lengths: Vec<i32>,
    sequence_offsets: Vec<i64>,
    document_indices: Vec<i64>,
}

impl IndexedDataset {
    pub fn open(prefix: &Path) -> Result<Self> {
        let idx_path = with_suffix(prefix, ".idx");
        let bin_path = with_suffix(prefix, ".bin");
        let idx = std::fs::read(&idx_path)
            .with_context(|| format!("{}: cannot read", idx_path.display()))?;
        let name = idx_path.display();
        if idx.len() < 34 || &idx[..9] != MAGIC {
            bail!("{name}: not a Megatron index (expected MMIDIDX header)");
        }
        let version = u64::from_le_bytes(idx[9..17].try_into().unwrap());
        if version != VERSION {
            bail!("{name}: MMIDIDX version {version}, only version {VERSION} is supported");
        }
        let dtype = idx[17];
        if dtype_size(dtype).is_none() {
            bail!("{name}: unsupported token dtype code {dtype}");
        }
        let n_sequences = u64::from_le_bytes(idx[18..26].try_into().unwrap()) as usize;
        let n_documents = u64::from_le_bytes(idx[26..34].try_into().unwrap()) as usize;
        let expected = 34 + n_sequences * (4 + 8) + n_documents * 8;
        if idx.len() != expected {
            bail!("{name}: truncated or corrupt: expected {expected} bytes for {n_sequences} sequences, found {}", idx.len());
        }
        let mut offset = 34;
        let mut take = |n: usize| {
            let s = &idx[offset..offset + n];
            offset += n;
            s
        };
        let sequence_lengths = take(n_sequences * 4)
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let sequence_offsets: Vec<i64> = take(n_sequences * 8)
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let document_indices: Vec<i64> = take(n_documents * 8)
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let file = std::fs::File::open(&bin_path)
            .with_context(|| format!("{}: cannot open", bin_path.display()))?;
        // Safety: read-only map of a file we do not modify.
        let bin = unsafe { Mmap::map(&file) }
            .with_context(|| format!("{}: cannot map", bin_path.display()))?;
        let dataset = Self {
            prefix: prefix.to_path_buf(),
            bin,
            dtype,
            sequence_lengths,
            sequence_offsets,
            document_indices,
        };
        dataset.check_bounds()?;
        Ok(dataset)
    }

    fn check_bounds(&self) -> Result<()> {
        let size = dtype_size(self.dtype).unwrap();
        for (i, (&len, &off)) in self
            .sequence_lengths
            .iter()
            .zip(&self.sequence_offsets)
            .enumerate()
        {
            if len < 0 || off < 0 || off as usize + len as usize * size > self.bin.len() {
                bail!(
                    "{}.bin: sequence {i} lies outside the file (truncated .bin?)",
                    self.prefix.display()
                );
            }
        }
        let n = self.sequence_lengths.len() as i64;
        if self.document_indices.windows(2).any(|w| w[0] > w[1])
            || self.document_indices.iter().any(|&d| d < 0 || d > n)
        {
            bail!(
                "{}.idx: document indices are not increasing sequence numbers",
                self.prefix.display()
            );
        }
        Ok(())
    }

    pub fn n_documents(&self) -> usize {
        self.document_indices.len().saturating_sub(1)
    }

    /// Tokens of document `i`: its sequences concatenated.
    pub fn document_tokens(&self, i: usize) -> Vec<u32> {
        let size = dtype_size(self.dtype).unwrap();
        let mut tokens = Vec::new();
        for s in self.document_indices[i] as usize..self.document_indices[i + 1] as usize {
            let off = self.sequence_offsets[s] as usize;
            let bytes = &self.bin[off..off + self.sequence_lengths[s] as usize * size];
            tokens.extend(bytes.chunks_exact(size).map(|b| match self.dtype {
                1 => b[0] as u32,
                2 => b[0] as i8 as u32,
                3 => i16::from_le_bytes([b[0], b[1]]) as u32,
                8 => u16::from_le_bytes([b[0], b[1]]) as u32,
                4 => i32::from_le_bytes(b.try_into().unwrap()) as u32,
                _ => i64::from_le_bytes(b.try_into().unwrap()) as u32,
            }));
        }
        tokens
    }

    pub fn into_documents(self) -> impl Iterator<Item = Result<Document>> + Send {
        let name = self.prefix.display().to_string();
        (0..self.n_documents()).map(move |i| {
            Ok(Document {
                id: format!("{name}:{i}"),
                title: None,
                content: Content::Tokens(self.document_tokens(i)),
            })
        })
    }
}

/// Writes documents as a Megatron indexed dataset with uint16 (vocabulary < 65500) or int32 tokens, one sequence per
/// document, as Megatron's `preprocess_data.py` does.
pub fn write_indexed_dataset(prefix: &Path, documents: &[Vec<u32>]) -> Result<()> {
    let max = documents.iter().flatten().copied().max().unwrap_or(0);
    let (code, size): (u8, usize) = if max < 65500 { (8, 2) } else { (4, 4) };
    let mut bin = Vec::new();
    let mut lengths = Vec::new();
    let mut offsets = Vec::new();
    for doc in documents {
        offsets.push(bin.len() as i64);
        lengths.push(doc.len() as i32);
        for &t in doc {
            if size == 2 {
                bin.extend_from_slice(&(t as u16).to_le_bytes());
            } else {
                bin.extend_from_slice(&(t as i32).to_le_bytes());
            }
        }
    }
    let mut idx = Vec::new();
    idx.extend_from_slice(MAGIC);
    idx.extend_from_slice(&VERSION.to_le_bytes());
    idx.push(code);
    idx.extend_from_slice(&(documents.len() as u64).to_le_bytes());
    idx.extend_from_slice(&(documents.len() as u64 + 1).to_le_bytes());
    lengths
        .iter()
        .for_each(|l| idx.extend_from_slice(&l.to_le_bytes()));
    offsets
        .iter()
        .for_each(|o| idx.extend_from_slice(&o.to_le_bytes()));
    (0..=documents.len() as i64).for_each(|d| idx.extend_from_slice(&d.to_le_bytes()));
    crate::atomic_write::write_atomic(&with_suffix(prefix, ".bin"), &bin)?;
    crate::atomic_write::write_atomic(&with_suffix(prefix, ".idx"), &idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_checks() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("corpus_text_document");
        let docs = vec![vec![1, 2, 3], vec![], vec![40000, 5]];
        write_indexed_dataset(&prefix, &docs).unwrap();
        let ds = IndexedDataset::open(&prefix).unwrap();
        assert_eq!(ds.n_documents(), 3);
        for (i, doc) in docs.iter().enumerate() {
            assert_eq!(&ds.document_tokens(i), doc);
        }
        // The header bytes a Python reader would check.
        let idx = std::fs::read(with_suffix(&prefix, ".idx")).unwrap();
        assert_eq!(&idx[..9], b"MMIDIDX\x00\x00");
        assert_eq!(idx[17], 8, "uint16 dtype code");

        let mut bad = idx.clone();
        bad[9] = 2;
        std::fs::write(with_suffix(&prefix, ".idx"), &bad).unwrap();
        assert!(IndexedDataset::open(&prefix)
            .err()
            .unwrap()
            .to_string()
            .contains("version 2"));
        std::fs::write(with_suffix(&prefix, ".idx"), &idx[..idx.len() - 3]).unwrap();
        assert!(IndexedDataset::open(&prefix)
            .err()
            .unwrap()
            .to_string()
            .contains("truncated"));
        std::fs::write(
            with_suffix(&prefix, ".idx"),
            b"not an index at all, definitely not",
        )
        .unwrap();
        assert!(IndexedDataset::open(&prefix)
            .err()
            .unwrap()
            .to_string()
            .contains("MMIDIDX"));
    }
}
