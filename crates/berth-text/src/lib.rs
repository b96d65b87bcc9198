//! Text side of a model: turning chat messages into token ids and token ids back into text.
//!
//! Principal types:
//! - [`TextModel`]: a tokenizer, its special tokens and the model's chat template, loaded from GGUF metadata
//!   ([`TextModel::from_gguf`]) or from a Hugging Face directory ([`TextModel::from_hf_dir`]).
//! - [`ChatTemplate`]: the model's Jinja chat template rendered with minijinja.
//! - [`IncrementalDecoder`]: token-by-token detokenisation that never emits a split UTF-8 character.
//! - [`StopMatcher`]: stop sequences over streamed text, holding back what could still become a stop.
//!
//! This crate knows nothing of tensors, HTTP or storage.

mod chat_template;
mod decoder;
mod error;
mod gguf_tokenizer;
mod stop;
mod text_model;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use decoder::IncrementalDecoder;
pub use error::TextError;
pub use stop::{StopMatcher, StopOutcome};
pub use text_model::TextModel;

#[cfg(test)]
mod tests;
