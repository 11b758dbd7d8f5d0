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

/// The instruction of True/False QA prompts (§5: boolq, multirc), followed by the question.
pub const TRUE_FALSE_INSTRUCTION: &str = "Answer the following question with True or False.";

/// The instruction of long-answer QA prompts (§5: every set not named in another list), followed by the question.
pub const LONG_ANSWER_INSTRUCTION: &str =
    "Please give a full and complete answer for the question.";

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

    /// The reference's zero-shot short-span QA prompt (§5; nq, tqa, squad, …): the evaluation system line, the
    /// contexts joined by blank lines, `User: Answer the following question with a short span. {q}`, then
    /// `Assistant: The answer is`. With ChatML the contexts and the instruction make up the user turn.
    pub fn short_span_qa_prompt(&self, contexts: &[String], question: &str) -> String {
        self.single_turn_qa_prompt(
            contexts,
            &format!("{SHORT_SPAN_INSTRUCTION} {question}"),
            Some(SHORT_SPAN_ANSWER_PREFIX),
        )
    }

    /// The reference's True/False QA prompt (§5; boolq, multirc): as the short-span prompt with
    /// `User: Answer the following question with True or False. {q}`, and the assistant's turn left empty
    /// (`Assistant:`).
    pub fn true_false_qa_prompt(&self, contexts: &[String], question: &str) -> String {
        self.single_turn_qa_prompt(
            contexts,
            &format!("{TRUE_FALSE_INSTRUCTION} {question}"),
            None,
        )
    }

    /// The reference's long-answer QA prompt (§5; any set not in another list): as the short-span prompt with
    /// `User: Please give a full and complete answer for the question. {q}`, and the assistant's turn left empty
    /// (`Assistant:`).
    pub fn long_answer_qa_prompt(&self, contexts: &[String], question: &str) -> String {
        self.single_turn_qa_prompt(
            contexts,
            &format!("{LONG_ANSWER_INSTRUCTION} {question}"),
            None,
        )
    }

    /// The reference's multi-turn QA prompt (§5; convqa, quac, doc2dial, …, whose query already holds the
    /// conversation and is used as is): the evaluation system line, the contexts joined by blank lines, the earlier
    /// turns (`User: {q}\n\nAssistant: {a}\n\n` each), then `User: {question}\n\nAssistant:`, with no instruction.
    /// With ChatML every turn is a message and the contexts open the first user turn.
    pub fn dialogue_qa_prompt(
        &self,
        contexts: &[String],
        history: &[Message],
        question: &str,
    ) -> String {
        let context_text: String = contexts.iter().map(|c| format!("{c}\n\n")).collect();
        let mut messages = history.to_vec();
        messages.push(Message::new(Role::User, question));
        let mut text = self.system(MEGATRON_EVAL_SYSTEM);
        match self {
            // The reference puts the contexts between the system line and the dialogue.
            Self::Megatron => text.push_str(&context_text),
            Self::Chatml => {
                if let Some(first) = messages.iter_mut().find(|m| m.role == Role::User) {
                    first.content.insert_str(0, &context_text);
                }
            }
        }
        for m in &messages {
            text.push_str(&self.turn(m));
        }
        text.push_str(self.assistant_header());
        text
    }

    /// A one-question QA prompt (§5, `reformat_prompt`): system line, contexts, the user text, then the assistant
    /// header followed by `answer_prefix` when given.
    fn single_turn_qa_prompt(
        &self,
        contexts: &[String],
        user_text: &str,
        answer_prefix: Option<&str>,
    ) -> String {
        let mut user = String::new();
        for c in contexts {
            user.push_str(c);
            user.push_str("\n\n");
        }
        let mut text = match self {
            // The reference puts the contexts between the system line and the `User:` turn.
            Self::Megatron => format!(
                "{}{user}User: {user_text}\n\n{}",
                self.system(MEGATRON_EVAL_SYSTEM),
                self.assistant_header()
            ),
            Self::Chatml => {
                user.push_str(user_text);
                format!(
                    "{}{}{}",
                    self.system(MEGATRON_EVAL_SYSTEM),
                    self.turn(&Message::new(Role::User, user)),
                    self.assistant_header()
                )
            }
        };
        if let Some(prefix) = answer_prefix {
            // Megatron: `Assistant: The answer is`; ChatML: the prefix opens the assistant's message.
            if *self == Self::Megatron {
                text.push(' ');
            }
            text.push_str(prefix);
        }
        text
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

    const EVAL_SYSTEM: &str = "System: This is a chat between a user and an artificial intelligence assistant. The \
assistant gives helpful, detailed, and polite answers to the user's questions based on the context. The assistant \
should also indicate when the answer cannot be found in the context.\n\n";

    #[test]
    fn true_false_long_and_dialogue_prompts_match_the_reference_strings() {
        // §5 `reformat_prompt`: system + "\n\n".join(contexts) + "\n\n" + dialogue_turn, where dialogue_turn is
        // "User: {instruction} {q}\n\nAssistant:" for boolq and long answers, and the query as is for multi-turn sets.
        let contexts = vec![
            "title: T, source: c1".to_string(),
            "title: , source: c2".to_string(),
        ];
        let m = ChatTemplate::Megatron;
        assert_eq!(
            m.true_false_qa_prompt(&contexts, "is the sky blue?"),
            format!(
                "{EVAL_SYSTEM}title: T, source: c1\n\ntitle: , source: c2\n\nUser: Answer the following question \
with True or False. is the sky blue?\n\nAssistant:"
            )
        );
        assert_eq!(
            m.long_answer_qa_prompt(&[], "why is the sky blue?"),
            format!(
                "{EVAL_SYSTEM}User: Please give a full and complete answer for the question. why is the sky \
blue?\n\nAssistant:"
            )
        );
        let history = [
            Message::new(Role::User, "who is she?"),
            Message::new(Role::Assistant, "A singer."),
        ];
        assert_eq!(
            m.dialogue_qa_prompt(&contexts[..1], &history, "any children?"),
            format!(
                "{EVAL_SYSTEM}title: T, source: c1\n\nUser: who is she?\n\nAssistant: A singer.\n\nUser: any \
children?\n\nAssistant:"
            )
        );
        // ChatML: the contexts open the first user turn, every turn is a message.
        let c = ChatTemplate::Chatml.dialogue_qa_prompt(&contexts[..1], &history, "any children?");
        assert!(c.ends_with(
            "<|im_start|>user\ntitle: T, source: c1\n\nwho is she?<|im_end|>\n<|im_start|>assistant\nA \
singer.<|im_end|>\n<|im_start|>user\nany children?<|im_end|>\n<|im_start|>assistant\n"
        ));
        let t = ChatTemplate::Chatml.true_false_qa_prompt(&[], "q?");
        assert!(t.ends_with(
            "<|im_start|>user\nAnswer the following question with True or False. q?<|im_end|>\n\
<|im_start|>assistant\n"
        ));
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
