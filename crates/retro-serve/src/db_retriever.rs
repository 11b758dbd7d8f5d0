//! Neighbours from a retrieval DB (from `retro db build`): a chunk's text is embedded with the DB's BERT and searched;
//! each hit becomes its chunk + continuation (the next chunk of the same document), padded with the DB's pad id to the
//! model's r.

use anyhow::{bail, Result};
use retro_data::GptTokenizer;
use retro_db::RetrievalDb;
use retro_model::{pad_tokens, Neighbor, Retriever, RetroModel};
use std::path::Path;

pub struct DbRetriever {
    db: RetrievalDb,
    /// At most this many neighbours per chunk (besides the model's own k); `None`: the model's k.
    pub max_k: Option<usize>,
}

impl DbRetriever {
    /// Opens the DB in `dir`, checking that it was built with the model's tokenizer and chunk length.
    pub fn open(dir: &Path, model_tokenizer: &GptTokenizer, model: &RetroModel) -> Result<Self> {
        let db = RetrievalDb::open(dir, None, None)?;
        model_tokenizer.check_same_as_db(&db.tokenizer, dir)?;
        let m = model.config().chunk_len;
        if db.chunks.chunk_len() != m {
            bail!(
                "db: {} has chunks of {} tokens, the model's chunk_len is {m}",
                dir.display(),
                db.chunks.chunk_len()
            );
        }
        Ok(Self { db, max_k: None })
    }

    /// The title of a document, when the corpus had one.
    pub fn title(&self, doc: usize) -> Option<String> {
        self.db.chunks.doc_info(doc).title
    }

    /// The DB itself (for searches outside generation, e.g. prompt contexts).
    pub fn db_mut(&mut self) -> &mut RetrievalDb {
        &mut self.db
    }
}

impl Retriever for DbRetriever {
    fn retrieve(&mut self, chunk: &[u32], k: usize, retrieved_len: usize) -> Result<Vec<Neighbor>> {
        let k = self.max_k.map_or(k, |m| m.min(k));
        let text = self.db.tokenizer.decode(chunk)?;
        let hits = self.db.search(&text, k)?;
        let pad = self.db.chunks.manifest.pad_id;
        hits.into_iter()
            .map(|hit| {
                let chunks = &self.db.chunks;
                let mut tokens = chunks.chunk_tokens(hit.chunk);
                if let Some(next) = chunks.continuation(hit.chunk) {
                    tokens.extend(chunks.chunk_tokens(next));
                }
                let text = self.db.tokenizer.decode(&tokens)?;
                Ok(Neighbor {
                    tokens: pad_tokens(tokens, retrieved_len, pad),
                    chunk: hit.chunk,
                    doc: hit.doc,
                    text,
                })
            })
            .collect()
    }
}
