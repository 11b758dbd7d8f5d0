//! Instruction-tuning conversations from jsonl / jsonl.gz: one conversation per line, either in the schema of
//! `shared/data/sft` (`{"id"?, "system"?, "messages": [{"role", "content"}], "task"?, "source"?}`) or OpenAI-style
//! (`{"messages": [...]}` with the system prompt as a first `{"role": "system"}` message).

use crate::chat::{Message, Role};
use crate::jsonl::open_text;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The row's `id`, or `FILE:LINE` when it has none.
    pub id: String,
    pub system: Option<String>,
    /// User and assistant turns, in order; the last is the assistant's answer that training learns.
    pub messages: Vec<Message>,
    pub task: Option<String>,
}

#[derive(Deserialize)]
struct Row {
    id: Option<serde_json::Value>,
    system: Option<String>,
    messages: Vec<Message>,
    task: Option<String>,
}

/// Every conversation of `path`, less those whose `task` is excluded ([`is_excluded_task`]). A malformed row is an
/// error naming the file and line.
pub fn read_conversations(path: &Path, exclude_tasks: &[String]) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for (i, line) in open_text(path)?.lines().enumerate() {
        let line_no = i + 1;
        let line = line.with_context(|| format!("{}:{line_no}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let conversation = parse_row(&line, || format!("{}:{line_no}", path.display()))
            .with_context(|| format!("{}:{line_no}", path.display()))?;
        if conversation
            .task
            .as_deref()
            .is_some_and(|t| is_excluded_task(t, exclude_tasks))
        {
            continue;
        }
        out.push(conversation);
    }
    Ok(out)
}

/// Whether `task` is one of `excluded` or a template of one: P3-style task names are the dataset's name followed by
/// `_` and the template's (`amazon_polarity_Is_this_review`), so `amazon_polarity` drops every template of it.
pub fn is_excluded_task(task: &str, excluded: &[String]) -> bool {
    excluded.iter().any(|e| {
        task.strip_prefix(e.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
    })
}

fn parse_row(line: &str, default_id: impl Fn() -> String) -> Result<Conversation> {
    let row: Row = serde_json::from_str(line).map_err(|e| anyhow!("not a conversation: {e}"))?;
    let id = match row.id {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => default_id(),
    };
    let mut system = row.system;
    let mut messages = Vec::with_capacity(row.messages.len());
    for (i, m) in row.messages.into_iter().enumerate() {
        match m.role {
            Role::System if i == 0 && system.is_none() => system = Some(m.content),
            Role::System => bail!("messages[{i}]: a system message is allowed only first"),
            _ => messages.push(m),
        }
    }
    match messages.last() {
        None => bail!("no user or assistant messages"),
        Some(last) if last.role != Role::Assistant => {
            bail!("the last message must be the assistant's answer (it is the one training learns)")
        }
        _ => {}
    }
    for (i, pair) in messages.windows(2).enumerate() {
        if pair[0].role == pair[1].role {
            bail!(
                "messages {i} and {} are both {:?}: roles must alternate",
                i + 1,
                pair[0].role
            );
        }
    }
    if messages[0].role != Role::User {
        bail!("the first turn must be the user's");
    }
    Ok(Conversation {
        id,
        system,
        messages,
        task: row.task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemas_parse_and_bad_rows_name_the_cause() {
        let ours = r#"{"id": "a1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "task": "t"}"#;
        let c = parse_row(ours, || "x".into()).unwrap();
        assert_eq!(
            (c.id.as_str(), c.system, c.task.as_deref()),
            ("a1", None, Some("t"))
        );
        let openai = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#;
        let c = parse_row(openai, || "f:3".into()).unwrap();
        assert_eq!(c.id, "f:3");
        assert_eq!(c.system.as_deref(), Some("Be brief."));
        assert_eq!(c.messages.len(), 2);

        let ends_with_user = r#"{"messages": [{"role": "user", "content": "Hi"}]}"#;
        let err = parse_row(ends_with_user, || "x".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("last message must be the assistant"), "{err}");
        let excluded = ["imdb".to_string()];
        assert!(
            is_excluded_task("imdb", &excluded) && is_excluded_task("imdb_Sentiment", &excluded)
        );
        assert!(!is_excluded_task("imdbx_a", &excluded) && !is_excluded_task("ag_news", &excluded));
        let bad_role = r#"{"messages": [{"role": "robot", "content": "Hi"}]}"#;
        let err = parse_row(bad_role, || "x".into()).unwrap_err().to_string();
        assert!(err.contains("robot"), "{err}");
    }
}
