//! Conversations and the prompt templates that turn them into text: the reference's InstructRetro template
//! (shared reference §4 and §5: a `System:` line, then `User: …\n\nAssistant: …` turns) and ChatML (the template of
//! SmolLM2-Instruct and most small chat models). Training (`--mode sft`), QA evaluation, `retro chat` and
//! `retro serve` all format through here, so a model is prompted the way it was tuned.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The reference's SFT system line (`reformat_prompt_retro`, shared reference §4), verbatim.
pub const MEGATRON_SFT_SYSTEM: &str =
    "This is a chat between a user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// The reference's evaluation system line (`reformat_prompt`, template 0, shared reference §5), verbatim: the SFT
/// line plus the "based on the context" clause.
pub const MEGATRON_EVAL_SYSTEM: &str = "This is a chat between a user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions based on the context. \
The assistant should also indicate when the answer cannot be found in the context.";

/// The instruction of short-span QA prompts (§5), followed by the question.
pub const SHORT_SPAN_INSTRUCTION: &str = "Answer the following question with a short span.";

/// What the assistant's turn starts with in a short-span QA prompt (§5): generation continues after it.
pub const SHORT_SPAN_ANSWER_PREFIX: &str = "The answer is";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// How messages become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// The reference's: `System: {system}\n\n`, then `User: {u}\n\n` and `Assistant: {a}\n\n` turns; the answer
    /// follows `Assistant:` after one space (the reference's `format_answer`).
    Megatron,
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message; the answer follows `<|im_start|>assistant\n`.
    Chatml,
}

impl ChatTemplate {
    /// The model's own template when its tokenizer has ChatML's markers, else the reference's.
    pub fn default_for(tokenizer: &tokenizers::Tokenizer) -> Self {
        let has = |t: &str| tokenizer.token_to_id(t).is_some();
        if has("<|im_start|>") && has("<|im_end|>") {
            Self::Chatml
        } else {
            Self::Megatron
        }
    }

    /// An error naming the missing token when the tokenizer cannot express this template.
    pub fn check_tokenizer(&self, tokenizer: &tokenizers::Tokenizer) -> Result<()> {
        if *self == Self::Chatml {
            for marker in ["<|im_start|>", "<|im_end|>"] {
                if tokenizer.token_to_id(marker).is_none() {
                    bail!("template chatml: the model's tokenizer has no {marker} token");
                }
            }
        }
        Ok(())
    }

    /// The system turn (`system` is its text without any `System:` label).
    pub fn system(&self, system: &str) -> String {
        match self {
            Self::Megatron => format!("System: {system}\n\n"),
            Self::Chatml => format!("<|im_start|>system\n{system}<|im_end|>\n"),
        }
    }

    /// One complete user or assistant turn of the history.
    pub fn turn(&self, message: &Message) -> String {
        match (self, message.role) {
            (Self::Megatron, Role::System) => self.system(&message.content),
            (Self::Megatron, Role::User) => format!("User: {}\n\n", message.content),
            (Self::Megatron, Role::Assistant) => format!("Assistant: {}\n\n", message.content),
            (Self::Chatml, role) => {
                let name = match role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                format!("<|im_start|>{name}\n{}<|im_end|>\n", message.content)
            }
        }
    }

    /// What opens the assistant's turn; generation (or the answer) follows it.
    pub fn assistant_header(&self) -> &'static str {
        match self {
            Self::Megatron => "Assistant:",
            Self::Chatml => "<|im_start|>assistant\n",
        }
    }

    /// The text of an answer placed right after [`Self::assistant_header`] (the end-of-turn token is added as a
    /// token, not as text).
    pub fn answer(&self, content: &str) -> String {
        match self {
            Self::Megatron => format!(" {content}"),
            Self::Chatml => content.to_string(),
        }
    }

    /// The prompt that asks for the next assistant turn: the system turn (when given), every message, then the
    /// assistant header. `messages` normally ends with a user turn.
    pub fn generation_prompt(&self, system: Option<&str>, messages: &[Message]) -> String {
        let mut text = system.map(|s| self.system(s)).unwrap_or_default();
        for m in messages {
            text.push_str(&self.turn(m));
        }
        text.push_str(self.assistant_header());
        text
    }

    /// The reference's zero-shot short-span QA prompt (§5): the evaluation system line, the contexts joined by blank
    /// lines, `User: Answer the following question with a short span. {q}`, then `Assistant: The answer is`. With
    /// ChatML the contexts and the instruction make up the user turn.
    pub fn short_span_qa_prompt(&self, contexts: &[String], question: &str) -> String {
        let mut user = String::new();
        for c in contexts {
            user.push_str(c);
            user.push_str("\n\n");
        }
        match self {
            Self::Megatron => {
                // The reference puts the contexts between the system line and the `User:` turn.
                format!(
                    "{}{user}User: {SHORT_SPAN_INSTRUCTION} {question}\n\nAssistant: {SHORT_SPAN_ANSWER_PREFIX}",
                    self.system(MEGATRON_EVAL_SYSTEM)
                )
            }
            Self::Chatml => {
                user.push_str(&format!("{SHORT_SPAN_INSTRUCTION} {question}"));
                format!(
                    "{}{}{}{SHORT_SPAN_ANSWER_PREFIX}",
                    self.system(MEGATRON_EVAL_SYSTEM),
                    self.turn(&Message::new(Role::User, user)),
                    self.assistant_header()
                )
            }
        }
    }
}

/// A context passage as the reference formats it for prompts (`dataset_conv.py`): `title: {t}, source: {text}`.
pub fn format_context(title: Option<&str>, text: &str) -> String {
    format!("title: {}, source: {text}", title.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_prompt_matches_the_reference_strings() {
        let messages = [
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello."),
            Message::new(Role::User, "Name a colour."),
        ];
        let prompt = ChatTemplate::Megatron.generation_prompt(Some(MEGATRON_SFT_SYSTEM), &messages);
        assert_eq!(
            prompt,
            "System: This is a chat between a user and an artificial intelligence assistant. The assistant gives \
helpful, detailed, and polite answers to the user's questions.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Name a \
colour.\n\nAssistant:"
        );
        assert_eq!(ChatTemplate::Megatron.answer("Red."), " Red.");
    }

    #[test]
    fn qa_prompt_has_the_eval_system_line_contexts_and_answer_prefix() {
        let contexts = vec![format_context(
            Some("Paris"),
            "Paris is the capital of France.",
        )];
        let prompt = ChatTemplate::Megatron
            .short_span_qa_prompt(&contexts, "What is the capital of France?");
        assert_eq!(
            prompt,
            "System: This is a chat between a user and an artificial intelligence assistant. The assistant gives \
helpful, detailed, and polite answers to the user's questions based on the context. The assistant should also \
indicate when the answer cannot be found in the context.\n\ntitle: Paris, source: Paris is the capital of France.\
\n\nUser: Answer the following question with a short span. What is the capital of France?\n\nAssistant: The answer is"
        );
    }

    #[test]
    fn chatml_prompt_wraps_every_turn() {
        let prompt =
            ChatTemplate::Chatml.generation_prompt(None, &[Message::new(Role::User, "Hi")]);
        assert_eq!(
            prompt,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let qa = ChatTemplate::Chatml.short_span_qa_prompt(&["c1".into()], "q?");
        assert!(qa.ends_with(
            "<|im_start|>user\nc1\n\nAnswer the following question with a short span. q?<|im_end|>\n\
<|im_start|>assistant\nThe answer is"
        ));
    }
}
