//! True/False answers (BoolQ, MultiRC; shared reference §5 prompts them with "Answer the following question with
//! True or False."): the first word of the answer, case-insensitive and without punctuation, is `true` or `false`;
//! `yes` and `no` count as `true` and `false` too (our extension: the gold labels of BoolQ are yes/no, and small
//! models often answer that way). Scored as accuracy.

/// The truth value an answer starts with; `None` when its first word is none of true / false / yes / no.
pub fn parse_true_false(text: &str) -> Option<bool> {
    let word = text.split_whitespace().next()?;
    let word = word
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    match word.as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

/// The canonical label of a truth value, as gold answers are stored: `True` or `False`.
pub fn true_false_label(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// 1 when `prediction` states the truth value of the first gold answer, else 0 (also when either is neither).
pub fn true_false_score(prediction: &str, golds: &[String]) -> f64 {
    let gold = golds.first().and_then(|g| parse_true_false(g));
    let predicted = parse_true_false(prediction);
    f64::from(u8::from(gold.is_some() && predicted == gold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_decides_case_insensitively() {
        assert_eq!(parse_true_false("True"), Some(true));
        assert_eq!(parse_true_false(" false."), Some(false));
        assert_eq!(
            parse_true_false("TRUE, because the passage says so"),
            Some(true)
        );
        assert_eq!(parse_true_false("Yes, it is."), Some(true));
        assert_eq!(parse_true_false("no"), Some(false));
        assert_eq!(parse_true_false("\"False\"\nTrue"), Some(false));
        // Only the first word counts.
        assert_eq!(parse_true_false("The answer is True"), None);
        assert_eq!(parse_true_false("Truely"), None);
        assert_eq!(parse_true_false("nope"), None);
        assert_eq!(parse_true_false(""), None);
        assert_eq!(parse_true_false("   "), None);
    }

    #[test]
    fn scores_are_accuracy_against_the_first_gold_label() {
        let t = vec!["True".to_string()];
        let f = vec!["False".to_string()];
        assert_eq!(true_false_score("true", &t), 1.0);
        assert_eq!(true_false_score("Yes.", &t), 1.0);
        assert_eq!(true_false_score("False", &t), 0.0);
        assert_eq!(true_false_score("No", &f), 1.0);
        assert_eq!(true_false_score("maybe", &f), 0.0);
        // A gold that is no truth value matches nothing, not even an unparsable prediction.
        assert_eq!(true_false_score("maybe", &["maybe".to_string()]), 0.0);
        assert_eq!(true_false_score("True", &[]), 0.0);
        assert_eq!(true_false_label(true), "True");
        assert_eq!(true_false_label(false), "False");
    }
}
