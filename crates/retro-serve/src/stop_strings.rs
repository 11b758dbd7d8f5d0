//! OpenAI's `stop` field: generation ends as soon as its text contains one of a few strings, and the
//! text handed out ends just before that string. While streaming, text that could be the start of a
//! stop string is held back until the following pieces show whether it is one.

/// OpenAI's limit on stop strings per request.
pub const MAX_STOP_STRINGS: usize = 4;

/// The stop strings of one generation and the text held back so far.
#[derive(Debug, Default, Clone)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    hit: bool,
}

impl StopStrings {
    /// Checks the strings (at most [`MAX_STOP_STRINGS`], none empty); the error names the cause.
    pub fn new(stops: Vec<String>) -> Result<Self, String> {
        if stops.len() > MAX_STOP_STRINGS {
            return Err(format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                stops.len()
            ));
        }
        if stops.iter().any(String::is_empty) {
            return Err("a stop string is empty".to_string());
        }
        Ok(Self {
            stops,
            ..Self::default()
        })
    }

    /// Takes the next piece of generated text and returns what can be handed out now. Once a stop
    /// string is complete, [`StopStrings::hit`] is true, the text before it is returned, and
    /// nothing after.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.hit = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let release = self.held.len() - self.longest_open_suffix();
        self.held.drain(..release).collect()
    }

    /// Whether a stop string was completed.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// The text still held back, at the end of generation (a stop string's start that never
    /// completed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The length of the longest end of the held text that begins some stop string without
    /// completing it: that part must wait for the next piece.
    fn longest_open_suffix(&self) -> usize {
        let held = self.held.as_str();
        let mut longest = 0;
        for stop in &self.stops {
            let most = (stop.len() - 1).min(held.len());
            if let Some(k) = (longest + 1..=most).rev().find(|&k| {
                let start = held.len() - k;
                held.is_char_boundary(start) && stop.starts_with(&held[start..])
            }) {
                longest = k;
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns (the handed-out pieces, hit).
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()).collect()).unwrap();
        let mut out: Vec<String> = pieces.iter().map(|p| s.push(p)).collect();
        out.push(s.finish());
        (out, s.hit())
    }

    #[test]
    fn cuts_before_a_stop_string_split_over_pieces() {
        let (out, hit) = run(
            &["\nUser:"],
            &["The answer", " is 4.\n", "Us", "er: and", " more"],
        );
        assert!(hit);
        assert_eq!(out.concat(), "The answer is 4.");
        // "\n" and "Us" were held back until "er:" completed the stop string.
        assert_eq!(out[1], " is 4.");
        assert_eq!(out[2], "");
        assert_eq!(out[4], "", "nothing after the stop string");
    }

    #[test]
    fn releases_held_text_that_does_not_complete_a_stop() {
        let (out, hit) = run(&["STOP"], &["a ST", "ART b S"]);
        assert!(!hit);
        assert_eq!(out, ["a ", "START b ", "S"]);
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_no_stops_pass_through() {
        let (out, hit) = run(&["bb", "ab"], &["xxabb"]);
        assert!(hit);
        assert_eq!(out.concat(), "xx");
        let (out, hit) = run(&[], &["a", "b"]);
        assert!(!hit);
        assert_eq!(out, ["a", "b", ""]);
    }

    #[test]
    fn multibyte_text_is_never_split() {
        let (out, hit) = run(&["éé!"], &["café", "é", "s"]);
        assert!(!hit);
        assert_eq!(out.concat(), "caféés");
        assert_eq!(out[0], "caf");
    }

    #[test]
    fn rejects_empty_and_too_many() {
        assert!(StopStrings::new(vec![String::new()]).is_err());
        assert!(StopStrings::new(vec!["a".into(); 5]).is_err());
    }
}
