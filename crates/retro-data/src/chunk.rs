//! Cutting a document's tokens into Retro chunks.
//!
//! Reference §3.1: per document, consecutive non-overlapping chunks `[s, min(s + m, len))`; chunks never cross
//! documents and the last one may be short (1..=m tokens). We store every chunk padded to `m` with the pad id and keep
//! its real length, so a chunk is one fixed-size row.

use std::ops::Range;

/// Token ranges of the chunks of one document of `n_tokens` tokens, with chunk length `m`.
pub fn chunk_document(n_tokens: usize, m: usize) -> Vec<Range<usize>> {
    assert!(m > 0, "chunk length must be positive");
    (0..n_tokens)
        .step_by(m)
        .map(|start| start..(start + m).min(n_tokens))
        .collect()
}

/// Copies `tokens` into a row of length `m`, right-padded with `pad_id`.
pub fn pad_chunk<T: Copy>(tokens: &[T], m: usize, pad_id: T) -> Vec<T> {
    let mut row = Vec::with_capacity(m);
    row.extend_from_slice(tokens);
    row.resize(m, pad_id);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_document_without_overlap() {
        for n in 0..200 {
            let chunks = chunk_document(n, 64);
            assert_eq!(chunks.len(), n.div_ceil(64));
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.start, next);
                assert!(!c.is_empty() && c.len() <= 64);
                next = c.end;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn pads_short_chunk() {
        assert_eq!(pad_chunk(&[5u16, 6], 4, 0), vec![5, 6, 0, 0]);
    }
}
