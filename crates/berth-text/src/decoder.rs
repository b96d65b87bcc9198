//! Incremental detokenisation. Byte-level BPE tokens can end in the middle of a UTF-8 character, so
//! decoding one token at a time is wrong; instead we decode a short window and emit only the part
//! that has become stable (the approach of text-generation-inference).

use crate::TextModel;

/// Feeds on token ids, returns newly completed text.
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token and returns the text it completes (possibly empty while a character is split).
    pub fn push(&mut self, text: &TextModel, token: u32) -> String {
        self.tokens.push(token);
        let prefix = text.decode(&self.tokens[self.prefix_offset..self.read_offset]);
        let full = text.decode(&self.tokens[self.prefix_offset..]);
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.starts_with(&prefix) {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.tokens.len();
            delta
        } else {
            String::new()
        }
    }

    /// Whatever is still held back (an incomplete character at the very end), decoded lossily.
    pub fn flush(&mut self, text: &TextModel) -> String {
        let prefix = text.decode(&self.tokens[self.prefix_offset..self.read_offset]);
        let full = text.decode(&self.tokens[self.prefix_offset..]);
        self.prefix_offset = self.tokens.len();
        self.read_offset = self.tokens.len();
        if full.len() > prefix.len() && full.starts_with(&prefix) {
            full[prefix.len()..].to_string()
        } else {
            String::new()
        }
    }
}
