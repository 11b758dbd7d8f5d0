//! Passages for a prompt, the paper's evaluation format (shared reference §5): the top chunks the DB finds for a
//! query, each its chunk and continuation, formatted as the reference's `dataset_conv.py` does
//! (`title: …, source: …`). Used by `retro generate --context-k` and by the QA evaluation.

use anyhow::Result;
use retro_data::chat::format_context;
use retro_db::RetrievalDb;

/// The `k` best passages for `query`, best first.
pub fn prompt_contexts(db: &mut RetrievalDb, query: &str, k: usize) -> Result<Vec<String>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut contexts = Vec::with_capacity(k);
    for hit in db.search(query, k)? {
        let mut tokens = db.chunks.chunk_tokens(hit.chunk);
        if let Some(next) = db.chunks.continuation(hit.chunk) {
            tokens.extend(db.chunks.chunk_tokens(next));
        }
        let text = db.tokenizer.decode(&tokens)?;
        contexts.push(format_context(hit.title.as_deref(), text.trim()));
    }
    Ok(contexts)
}
