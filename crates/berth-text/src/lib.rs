//! Text side of a model: turning chat messages into token ids and token ids back into text.
//!
//! Principal types:
//! - [`TextModel`]: a tokenizer, its special tokens and the model's chat template, loaded from GGUF metadata
//!   ([`TextModel::from_gguf`]) or from a Hugging Face directory ([`TextModel::from_hf_dir`]).
//! - [`ChatTemplate`]: the model's Jinja chat template rendered with minijinja.
//! - [`IncrementalDecoder`]: token-by-token detokenisation that never emits a split UTF-8 character.
//! - [`StopMatcher`]: stop sequences over streamed text, holding back what could still become a stop.
//! - [`Constraint`]: a [`Grammar`] (JSON Schema or Lark) compiled with llguidance against the vocabulary,
//!   masking the logits of each next token ([`TextModel::constrain`]).
//! - Function calling in the Hermes format: tools rendered into the prompt ([`TextModel::render_prompt`]),
//!   `<tool_call>` blocks parsed back ([`parse_tool_calls`]) or enforced ([`tool_call_grammar`]).
//!
//! This crate knows nothing of tensors, HTTP or storage.

mod chat_template;
mod constraint;
mod decoder;
mod error;
mod gguf_tokenizer;
mod stop;
mod text_model;
mod tools;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use constraint::{with_compact_layout, Constraint, Grammar};
pub use decoder::IncrementalDecoder;
pub use error::TextError;
pub use stop::{StopMatcher, StopOutcome};
pub use text_model::TextModel;
pub use tools::{
    parse_tool_calls, tool_call_grammar, tools_preamble, ParsedAnswer, ParsedCall, ToolCall, TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
};

#[cfg(test)]
mod tests;
