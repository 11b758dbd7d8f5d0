//! Streaming decode: after each token, the new part of the decoded text. A byte-level BPE token can end in the middle
//! of a UTF-8 character (the decoder then shows U+FFFD); such text is held back until the character is complete, so
//! the pieces always join to the decoded whole.

use anyhow::Result;
use retro_data::GptTokenizer;

/// The tokens generated so far and how much of their text has been handed out.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    tokens: Vec<u32>,
    emitted: String,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the text that it completes (empty while a character is incomplete, or for a special
    /// token, which decodes to nothing).
    pub fn push(&mut self, tokenizer: &GptTokenizer, token: u32) -> Result<String> {
        self.tokens.push(token);
        let text = tokenizer.decode(&self.tokens)?;
        if !text.ends_with('\u{FFFD}')
            && text.starts_with(&self.emitted)
            && text.len() > self.emitted.len()
        {
            let piece = text[self.emitted.len()..].to_string();
            self.emitted = text;
            return Ok(piece);
        }
        Ok(String::new())
    }

    /// What is left of `full` (the decoded text of all tokens) after the pieces handed out so far.
    pub fn rest<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.emitted.as_str()).unwrap_or("")
    }

    /// The text handed out so far.
    pub fn emitted(&self) -> &str {
        &self.emitted
    }
}
