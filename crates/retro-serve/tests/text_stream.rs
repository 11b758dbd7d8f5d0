//! Streaming decode with the real SmolLM2 tokenizer (../shared/data): pieces never split a UTF-8 character and join to
//! the whole decoded text, including characters spread over several byte-level tokens.

use retro_data::GptTokenizer;
use retro_serve::TextStream;
use std::path::Path;

#[test]
fn pieces_join_to_the_text_and_hold_back_partial_characters() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/models/smollm2-135m-instruct/tokenizer.json");
    assert!(
        path.is_file(),
        "{}: shared model missing (see README)",
        path.display()
    );
    let tokenizer = GptTokenizer::load(&path, None).unwrap();
    let text = "Crème brûlée 🙂🦀 in 東京, <|im_end|> then more.";
    let ids = tokenizer.encode(text).unwrap();
    let whole = tokenizer.decode(&ids).unwrap();
    // The emoji and CJK characters take more than one token each, so some tokens end mid-character.
    assert!(ids.len() > whole.chars().count() / 2);
    let mut stream = TextStream::new();
    let mut pieces = Vec::new();
    for &id in &ids {
        let piece = stream.push(&tokenizer, id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        pieces.push(piece);
    }
    assert!(
        pieces.iter().any(|p| p.is_empty()),
        "some token was held back"
    );
    let rest = stream.rest(&whole).to_string();
    assert_eq!(pieces.concat() + &rest, whole);
    assert!(
        !whole.contains("<|im_end|>"),
        "special tokens decode to nothing"
    );
}
