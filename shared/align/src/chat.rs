//! Conversations and the chat template.
//!
//! The template is DeepSeek's, written with the tokenizer's own special tokens (ds-tokenizer
//! reserves `<｜User｜>`, `<｜Assistant｜>` and `<｜System｜>` after BOS/EOS/PAD):
//!
//! ```text
//! <｜begin▁of▁sentence｜>[<｜System｜>system text]<｜User｜>question<｜Assistant｜>answer<｜end▁of▁sentence｜><｜User｜>...
//! ```
//!
//! Text between the special tokens is encoded as corpus text (a literal "<｜User｜>" typed in a
//! message stays text), and the loss falls on the assistant's answers and their EOS only.

use anyhow::{bail, Context, Result};
use dsllm_model::IGNORE_TARGET;
use dsllm_tokens::DsTokenizer;
use serde::{Deserialize, Serialize};

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
        Self { role, content: content.into() }
    }
}

/// One training conversation: an optional system message, then user and assistant turns
/// alternating, ending with an assistant turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// The record's category (`category`, `type`, `domain` or `task` field) or, without one,
    /// what [`guess_category`] finds: the two-stage SFT leaves "math" and "code" out of stage 2.
    pub category: String,
}

/// "code" for text with code fences or code keywords, "math" for GSM8K-style answers or
/// equations, else "general". Used only when a record names no category.
pub fn guess_category(messages: &[Message]) -> String {
    let text: String = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
    let code_markers = ["```", "def ", "#include", "public static", "function(", "import numpy", "console.log"];
    if code_markers.iter().any(|m| text.contains(m)) {
        return "code".into();
    }
    let equation = text.as_bytes().windows(3).any(|w| w[0].is_ascii_digit() && b"+-*/=".contains(&w[1]) && w[2].is_ascii_digit());
    let spaced_equation = text.split_whitespace().collect::<Vec<_>>().windows(3).any(|w| {
        w[0].chars().all(|c| c.is_ascii_digit()) && ["+", "-", "*", "/", "=", "×", "÷"].contains(&w[1]) && w[2].chars().all(|c| c.is_ascii_digit())
    });
    if text.contains("####") || equation || spaced_equation {
        return "math".into();
    }
    "general".into()
}

/// The special ids the template uses, taken from the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatTokens {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub system: u32,
    pub user: u32,
    pub assistant: u32,
}

impl ChatTokens {
    pub fn from_tokenizer(tokenizer: &DsTokenizer) -> Result<Self> {
        let config = tokenizer.config();
        let role = |name: &str| {
            config
                .special_tokens
                .iter()
                .find(|t| t.role == name)
                .map(|t| t.id)
                .with_context(|| format!("the tokenizer has no special token with role {name:?} (trained by an older ds-tokenizer?)"))
        };
        Ok(Self { bos: config.bos_id, eos: config.eos_id, pad: config.pad_id, system: role("system")?, user: role("user")?, assistant: role("assistant")? })
    }
}

/// A tokenizer with its chat template.
pub struct ChatTemplate<'a> {
    pub tokenizer: &'a DsTokenizer,
    pub tokens: ChatTokens,
}

/// A templated conversation: its tokens and which of them the loss covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub tokens: Vec<u32>,
    /// `trained[i]`: token `i` belongs to an assistant answer (its EOS included).
    pub trained: Vec<bool>,
}

impl Encoded {
    /// Next-token inputs and targets: the target of position `i` is token `i + 1` when that
    /// token is trained, else [`IGNORE_TARGET`].
    pub fn inputs_targets(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.tokens.len().saturating_sub(1);
        let inputs = self.tokens[..n].to_vec();
        let targets = (1..=n).map(|i| if self.trained[i] { self.tokens[i] } else { IGNORE_TARGET }).collect();
        (inputs, targets)
    }

    pub fn trained_count(&self) -> usize {
        self.trained.iter().skip(1).filter(|&&t| t).count()
    }
}

impl<'a> ChatTemplate<'a> {
    pub fn new(tokenizer: &'a DsTokenizer) -> Result<Self> {
        Ok(Self { tokenizer, tokens: ChatTokens::from_tokenizer(tokenizer)? })
    }

    fn text(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode_document(text)?)
    }

    /// The whole conversation; checks the turn order.
    pub fn encode(&self, messages: &[Message]) -> Result<Encoded> {
        let mut out = Encoded { tokens: vec![self.tokens.bos], trained: vec![false] };
        let push = |out: &mut Encoded, ids: &[u32], trained: bool| {
            out.tokens.extend_from_slice(ids);
            out.trained.extend(std::iter::repeat_n(trained, ids.len()));
        };
        let mut expected = Role::User;
        for (i, message) in messages.iter().enumerate() {
            match message.role {
                Role::System if i == 0 => {
                    push(&mut out, &[self.tokens.system], false);
                    push(&mut out, &self.text(&message.content)?, false);
                }
                role if role != expected => bail!("message {i} is from {role:?}, expected {expected:?}"),
                Role::User => {
                    push(&mut out, &[self.tokens.user], false);
                    push(&mut out, &self.text(&message.content)?, false);
                    push(&mut out, &[self.tokens.assistant], false);
                    expected = Role::Assistant;
                }
                Role::Assistant => {
                    push(&mut out, &self.text(&message.content)?, true);
                    push(&mut out, &[self.tokens.eos], true);
                    expected = Role::User;
                }
                Role::System => bail!("message {i}: a system message may only come first"),
            }
        }
        if expected != Role::User || out.trained_count() == 0 {
            bail!("a conversation must end with an assistant answer");
        }
        Ok(out)
    }

    /// The prompt for generating the next answer: the conversation so far (ending with a user
    /// message) and the assistant token.
    pub fn encode_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let Some(last) = messages.last() else { bail!("an empty prompt") };
        if last.role != Role::User {
            bail!("a prompt must end with a user message");
        }
        self.encode_unchecked(messages)
    }

    /// Prompt tokens followed by `response` and EOS, with the response's token range.
    pub fn encode_response(&self, prompt: &[u32], response: &str) -> Result<(Vec<u32>, std::ops::Range<usize>)> {
        let mut tokens = prompt.to_vec();
        tokens.extend(self.text(response)?);
        tokens.push(self.tokens.eos);
        Ok((tokens.clone(), prompt.len()..tokens.len()))
    }

    fn encode_unchecked(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let mut tokens = vec![self.tokens.bos];
        for (i, m) in messages.iter().enumerate() {
            match m.role {
                Role::System if i == 0 => {
                    tokens.push(self.tokens.system);
                    tokens.extend(self.text(&m.content)?);
                }
                Role::System => bail!("message {i}: a system message may only come first"),
                Role::User => {
                    tokens.push(self.tokens.user);
                    tokens.extend(self.text(&m.content)?);
                    tokens.push(self.tokens.assistant);
                }
                Role::Assistant => {
                    tokens.extend(self.text(&m.content)?);
                    tokens.push(self.tokens.eos);
                }
            }
        }
        Ok(tokens)
    }

    /// Text of generated ids, cut at the first EOS.
    pub fn decode_answer(&self, ids: &[u32]) -> Result<String> {
        let end = ids.iter().position(|&t| t == self.tokens.eos).unwrap_or(ids.len());
        Ok(self.tokenizer.decode(&ids[..end])?)
    }
}

#[cfg(test)]
mod tests;
