//! The model and the DB must share a tokenizer: a model trained or evaluated on another tokenizer's ids reads
//! nonsense without any error, so training and `eval ppl` refuse the pair up front.

use std::path::Path;

use anyhow::{bail, Result};
use retro_data::{ChunkDb, GptTokenizer};
use retro_model::RetroWeights;

/// Fails when the model's tokenizer is not the one the DB was tokenised with.
pub fn check_tokenizer(dir: Option<&Path>, db: &ChunkDb, weights: &RetroWeights) -> Result<()> {
    let vocab = weights.config.decoder.vocab_size;
    if db.manifest.vocab_size > vocab {
        bail!(
            "the DB {} uses a tokenizer of {} tokens, more than the model's vocabulary of {vocab}",
            db.dir.display(),
            db.manifest.vocab_size
        );
    }
    let Some(dir) = dir else { return Ok(()) };
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "no tokenizer.json next to the model in {}: cannot check that it matches the DB's",
            dir.display()
        );
    }
    let model_tok = load_tokenizer(&path)?;
    model_tok.check_same_as_db(&db.tokenizer()?, &db.dir)?;
    Ok(())
}

/// A model directory's tokenizer.json; where nothing names its pad token, `<|endoftext|>` is taken as pad.
pub(crate) fn load_tokenizer(path: &Path) -> Result<GptTokenizer> {
    GptTokenizer::load(path, None).or_else(|_| GptTokenizer::load(path, Some("<|endoftext|>")))
}
