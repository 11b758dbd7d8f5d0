//! # retro-db
//!
//! The retrieval database of Retro (paper §2, reference §3): chunk text → BERT embeddings ([`Embedder`],
//! [`embed_db`]) → a Faiss index sized to the corpus ([`auto_factory`], [`build_index`]) → precomputed neighbours of
//! every chunk ([`query_neighbors`]). Each long stage works in blocks that are saved as they finish, so a killed job
//! resumes where it stopped and `--shard I/N` spreads a stage over machines ([`Shard`]). [`RetrievalDb`] opens a
//! finished DB for free-text search.
//!
//! ```
//! // The index family of the paper, sized to the corpus: exact search below about 10k train chunks.
//! assert_eq!(retro_db::auto_factory(5_000, 384), "Flat");
//! assert!(retro_db::auto_factory(1_000_000, 384).starts_with("OPQ48_384,IVF4000_HNSW32"));
//! ```

pub mod bert;
pub mod blocks;
pub mod embed;
pub mod embedder;
pub mod index;
pub mod native_threads;
pub mod neighbors;
pub mod retrieval_db;
pub mod stats;

pub use blocks::Shard;
pub use embed::{embed_db, EmbedOptions, Embeddings};
pub use embedder::{Embedder, Pooling};
pub use index::{auto_factory, build_index, IndexOptions, RetrievalIndex, SearchParams};
pub use neighbors::{query_neighbors, NeighborOptions, Neighbors};
pub use retrieval_db::{neighbor_hits, Hit, NeighborHit, RetrievalDb};
pub use stats::{db_stats, DbStats};
