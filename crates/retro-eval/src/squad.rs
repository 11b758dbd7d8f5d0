//! SQuAD answer scoring (the official `evaluate-v1.1.py`, which the reference's `evaluate.py` follows): answers are
//! normalised (lower case, punctuation removed, the articles a / an / the dropped, whitespace squashed); exact match
//! compares the normalised strings, F1 their bags of tokens.

use std::collections::HashMap;

/// Lower case, no ASCII punctuation, no articles, single spaces.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn exact_match(prediction: &str, gold: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(gold)
}

/// Token F1 between the normalised prediction and gold answer; 0 when either is empty and the other not.
pub fn f1(prediction: &str, gold: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(gold);
    let (p, g): (Vec<&str>, Vec<&str>) = (
        p.split_whitespace().collect(),
        g.split_whitespace().collect(),
    );
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p == g));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// (EM, F1) of `prediction`, each the best over the gold answers (SQuAD's `metric_max_over_ground_truths`).
pub fn score(prediction: &str, golds: &[String]) -> (f64, f64) {
    let em = golds.iter().any(|g| exact_match(prediction, g));
    let f1 = golds.iter().map(|g| f1(prediction, g)).fold(0.0, f64::max);
    (f64::from(u8::from(em)), f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_scores_follow_squad() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(normalize_answer("An apple, a day"), "apple day");
        assert!(exact_match("the Beatles.", "Beatles"));
        assert!(!exact_match("Beatles band", "Beatles"));
        // prediction "eiffel tower paris" vs gold "eiffel tower": p = 2/3, r = 1 → F1 = 0.8.
        assert!((f1("Eiffel Tower, Paris", "the Eiffel Tower") - 0.8).abs() < 1e-12);
        assert_eq!(f1("London", "Paris"), 0.0);
        // Repeated tokens count once per occurrence in gold.
        assert!((f1("paris paris", "paris") - 2.0 / 3.0).abs() < 1e-12);
        let golds = vec![
            "December 1972".to_string(),
            "14 December 1972 UTC".to_string(),
        ];
        assert_eq!(score("December 1972", &golds), (1.0, 1.0));
        let (em, f) = score("in December", &golds);
        assert_eq!(em, 0.0);
        assert!((f - 0.5).abs() < 1e-12, "{f}");
    }
}
