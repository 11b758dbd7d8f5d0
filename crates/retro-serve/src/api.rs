//! The wire format shared by `retro generate --json` and the HTTP API: retrievals as JSON.

use crate::engine::Engine;
use retro_model::Retrieval;
use serde_json::{json, Value};

/// `[{"position", "neighbors": [{"chunk", "doc", "title"?, "text"}]}]`: every retrieval of a generation, the chunk
/// and document ids in the DB, the document's title when the corpus had one, and the retrieved text (chunk and
/// continuation).
pub fn retrievals_json(engine: &Engine, retrievals: &[Retrieval]) -> Value {
    retrievals
        .iter()
        .map(|r| {
            json!({
                "position": r.position,
                "neighbors": r.neighbors.iter().map(|n| {
                    let mut v = json!({"chunk": n.chunk, "doc": n.doc, "text": n.text});
                    if let Some(title) = engine.doc_title(n.doc) {
                        v["title"] = json!(title);
                    }
                    v
                }).collect::<Vec<_>>(),
            })
        })
        .collect()
}
