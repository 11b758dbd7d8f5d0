//! The chunked cross-attention (CCA) alignment: which decoder positions attend to which chunk's
//! neighbours, and which tokens make up each chunk. Everything in the model that depends on the
//! chunk grid goes through [`cca_alignment`].

use std::ops::Range;

use anyhow::{bail, Result};

/// The chunk grid of a sequence of `seq_len` tokens and the CCA shift, from [`cca_alignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcaAlignment {
    /// ns: tokens in the sequence.
    pub seq_len: usize,
    /// m: tokens per chunk.
    pub chunk_len: usize,
    /// l = ceil(ns / m): chunks, each with its own neighbours.
    pub num_chunks: usize,
    /// Tokens in chunk 0: `ns - (l-1)·m`, in `1..=m`. The grid is right-aligned: only the first
    /// chunk can be short (it is zero-padded at its end for the encoder).
    pub first_chunk_len: usize,
    /// `(ns - 1) % m` = `first_chunk_len - 1`: the positions `0..pad` attend to no neighbours,
    /// and position `pad` is the last token of chunk 0.
    pub pad: usize,
}

/// Chunked cross-attention alignment, exactly as Megatron's Retro (shared reference
/// `retro-reference.md` §1.4; `RetroDecoderCrossAttention.forward` in mcore `decoder_attention.py`,
/// `retro_decoder_cross_attention` in legacy `transformer.py`), which implements the RETRO paper's
/// CCA (Borgeaud et al. 2022, "Improving language models by retrieving from trillions of tokens",
/// §2.4 and Fig. 2: the encoded neighbours of chunk `C_u` are attended to by the last token of
/// `C_u` and the first m-1 tokens of `C_{u+1}`, so that no token sees neighbours retrieved with
/// its own future).
///
/// With ns = `seq_len`, m = `chunk_len`, l = ceil(ns/m) and `pad = (ns - 1) % m`:
/// - the chunk grid is **right-aligned**: chunk 0 holds tokens `0..ns-(l-1)m` (m tokens when m
///   divides ns, fewer otherwise), chunk j ≥ 1 the m tokens after chunk j-1 (see
///   [`CcaAlignment::chunk_tokens`]). Chunk j's neighbours are retrieved with chunk j, and the
///   encoder's first layer cross-attends to the decoder's hidden states of chunk j;
/// - query block j is the positions `pad + j·m .. pad + (j+1)·m` (cut at ns): the last token of
///   chunk j and the first m-1 tokens of chunk j+1. It attends to chunk j's neighbours
///   ([`CcaAlignment::attending_positions`]);
/// - positions `0..pad` attend to nothing: the first m-1 tokens when m divides ns. Position p ≥ pad
///   sees the neighbours of chunk `(p - pad) / m` ([`CcaAlignment::chunk_for_position`]).
///
/// Example (reference unit test, ns = 32, m = 4): pad = 3, l = 8, positions 0..3 see nothing,
/// 3..7 see chunk 0 (tokens 0..4), …, position 31 alone sees chunk 7 (tokens 28..32).
/// Partial (ns = 10, m = 4): l = 3, chunks `0..2`, `2..6`, `6..10`, pad = 1; position 0 sees
/// nothing, 1..5 chunk 0, 5..9 chunk 1, 9 chunk 2.
///
/// Errors when `seq_len` or `chunk_len` is 0.
pub fn cca_alignment(seq_len: usize, chunk_len: usize) -> Result<CcaAlignment> {
    if seq_len == 0 || chunk_len == 0 {
        bail!("CCA alignment needs a non-empty sequence and chunk (seq_len {seq_len}, chunk_len {chunk_len})");
    }
    let num_chunks = seq_len.div_ceil(chunk_len);
    let first_chunk_len = seq_len - (num_chunks - 1) * chunk_len;
    let pad = (seq_len - 1) % chunk_len;
    debug_assert_eq!(pad + 1, first_chunk_len);
    Ok(CcaAlignment {
        seq_len,
        chunk_len,
        num_chunks,
        first_chunk_len,
        pad,
    })
}

impl CcaAlignment {
    /// Token positions of chunk `j` (whose neighbours are retrieved for it).
    pub fn chunk_tokens(&self, j: usize) -> Range<usize> {
        assert!(j < self.num_chunks, "chunk {j} of {}", self.num_chunks);
        if j == 0 {
            0..self.first_chunk_len
        } else {
            let start = self.first_chunk_len + (j - 1) * self.chunk_len;
            start..start + self.chunk_len
        }
    }

    /// Positions whose CCA attends to chunk `j`'s neighbours: the last token of chunk j and the
    /// (up to) m-1 tokens after it.
    pub fn attending_positions(&self, j: usize) -> Range<usize> {
        assert!(j < self.num_chunks, "chunk {j} of {}", self.num_chunks);
        let start = self.pad + j * self.chunk_len;
        start..(start + self.chunk_len).min(self.seq_len)
    }

    /// The chunk whose neighbours position `p` attends to; `None` for `p < pad`.
    pub fn chunk_for_position(&self, p: usize) -> Option<usize> {
        assert!(p < self.seq_len, "position {p} of {}", self.seq_len);
        (p >= self.pad).then(|| (p - self.pad) / self.chunk_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed maps position → chunk, written out in full.
    #[test]
    fn reference_case_ns32_m4() {
        let a = cca_alignment(32, 4).unwrap();
        assert_eq!(a.pad, 3, "the reference unit test requires pad == 3");
        assert_eq!((a.num_chunks, a.first_chunk_len), (8, 4));
        #[rustfmt::skip]
        let expect: Vec<Option<usize>> = [
            None, None, None, // 0..3: the first m-1 tokens get nothing
            Some(0), Some(0), Some(0), Some(0), // 3 = last of chunk 0; 4,5,6 = first 3 of chunk 1
            Some(1), Some(1), Some(1), Some(1),
            Some(2), Some(2), Some(2), Some(2),
            Some(3), Some(3), Some(3), Some(3),
            Some(4), Some(4), Some(4), Some(4),
            Some(5), Some(5), Some(5), Some(5),
            Some(6), Some(6), Some(6), Some(6),
            Some(7), // 31: only the last token sees the last chunk's neighbours
        ]
        .to_vec();
        let got: Vec<_> = (0..32).map(|p| a.chunk_for_position(p)).collect();
        assert_eq!(got, expect);
        assert_eq!(a.chunk_tokens(0), 0..4);
        assert_eq!(a.chunk_tokens(1), 4..8);
        assert_eq!(a.chunk_tokens(7), 28..32);
        assert_eq!(a.attending_positions(0), 3..7);
        assert_eq!(a.attending_positions(1), 7..11);
        assert_eq!(a.attending_positions(7), 31..32);
    }

    #[test]
    fn partial_sequence_right_aligns_the_grid() {
        let a = cca_alignment(10, 4).unwrap();
        assert_eq!((a.num_chunks, a.first_chunk_len, a.pad), (3, 2, 1));
        assert_eq!(
            [a.chunk_tokens(0), a.chunk_tokens(1), a.chunk_tokens(2)],
            [0..2, 2..6, 6..10]
        );
        let got: Vec<_> = (0..10).map(|p| a.chunk_for_position(p)).collect();
        let (n, c0, c1, c2) = (None, Some(0), Some(1), Some(2));
        assert_eq!(got, vec![n, c0, c0, c0, c0, c1, c1, c1, c1, c2]);
        assert_eq!(a.attending_positions(2), 9..10);

        // Shorter than a chunk: one short chunk; its last token is its only attending position.
        let s = cca_alignment(3, 4).unwrap();
        assert_eq!((s.num_chunks, s.first_chunk_len, s.pad), (1, 3, 2));
        assert_eq!(
            (0..3).map(|p| s.chunk_for_position(p)).collect::<Vec<_>>(),
            vec![None, None, Some(0)]
        );
        let one = cca_alignment(1, 64).unwrap();
        assert_eq!(
            (one.num_chunks, one.pad, one.chunk_for_position(0)),
            (1, 0, Some(0))
        );
        // ns = m + 1: chunk 0 is token 0 alone.
        let b = cca_alignment(65, 64).unwrap();
        assert_eq!((b.num_chunks, b.pad, b.chunk_tokens(1)), (2, 0, 1..65));
        assert_eq!(b.attending_positions(0), 0..64);
        assert_eq!(b.attending_positions(1), 64..65);
        assert!(cca_alignment(0, 4).is_err());
        assert!(cca_alignment(4, 0).is_err());
    }

    /// Properties over many sizes: every position ≥ pad is in exactly one query block; the block
    /// of chunk j starts at the last token of chunk j, so no position sees a chunk that ends after
    /// it; and the chunks tile the sequence.
    #[test]
    fn invariants() {
        for m in 1..7 {
            for ns in 1..40 {
                let a = cca_alignment(ns, m).unwrap();
                let mut seen = vec![0; ns];
                for j in 0..a.num_chunks {
                    let c = a.chunk_tokens(j);
                    let q = a.attending_positions(j);
                    assert_eq!(q.start, c.end - 1);
                    for p in q {
                        seen[p] += 1;
                        assert_eq!(a.chunk_for_position(p), Some(j));
                    }
                }
                for (p, s) in seen.iter().enumerate() {
                    assert_eq!(*s, usize::from(p >= a.pad), "ns {ns} m {m} p {p}");
                }
                let tiles: Vec<usize> = (0..a.num_chunks).flat_map(|j| a.chunk_tokens(j)).collect();
                assert_eq!(tiles, (0..ns).collect::<Vec<_>>());
            }
        }
    }
}
