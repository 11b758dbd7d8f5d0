//! # retro-data
//!
//! Corpora in, Retro chunks out. A corpus (jsonl / jsonl.gz, plain text, or a Megatron `.bin/.idx` dataset) is read
//! as a stream of [`Document`]s, tokenised with the GPT's tokenizer ([`GptTokenizer`]), cut into chunks of `m` tokens
//! that never cross a document ([`chunk_document`]) and stored as a [`ChunkDb`]: memory-mapped arrays in our own
//! versioned format ([`array_file`]) with a train / validation split decided per document ([`is_valid_document`]).
//!
//! ```
//! use retro_data::chunk_document;
//! // A 150-token document with m = 64 gives chunks of 64, 64 and 22 tokens.
//! let chunks = chunk_document(150, 64);
//! assert_eq!(chunks, vec![0..64, 64..128, 128..150]);
//! ```

pub mod array_file;
pub mod atomic_write;
pub mod chat;
pub mod chunk;
pub mod chunk_db;
pub mod conversations;
pub mod corpus;
pub mod jsonl;
pub mod megatron;
pub mod split;
pub mod text;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message, Role};
pub use chunk::chunk_document;
pub use chunk_db::{build_chunk_db, ChunkDb, ChunkDbManifest, ChunkOptions};
pub use conversations::{read_conversations, Conversation};
pub use corpus::{Content, CorpusFormat, Document, ReadOptions};
pub use split::is_valid_document;
pub use tokenizer::GptTokenizer;
