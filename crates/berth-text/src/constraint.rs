//! Constrained decoding: a grammar (a JSON Schema, or a Lark grammar that may embed JSON Schemas)
//! compiled with llguidance against the model's own vocabulary, applied as a mask over the logits of
//! each next token. llguidance needs only the bytes of every token, so it works the same for a GGUF
//! vocabulary and a Hugging Face `tokenizer.json`.

use crate::TextError;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokenizers::{DecoderWrapper, Tokenizer};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// What a constrained answer must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// A JSON Schema: the answer is one JSON value that validates against it. Separators are `", "`
    /// and `": "` with no other whitespace, so that a small model cannot wander off into blank lines.
    JsonSchema(Value),
    /// A Lark grammar in llguidance's dialect; `%json { ... }` embeds a JSON Schema.
    Lark(String),
}

impl Grammar {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(with_compact_layout(schema)),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        }
    }
}

/// Adds llguidance's layout options to a schema (a copy; a schema that sets its own keeps them).
pub fn with_compact_layout(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "coerce_one_of": true,
            })
        });
    }
    schema
}

/// A model's vocabulary as llguidance sees it: built once per model, shared by every request.
pub(crate) struct Vocabulary {
    factory: ParserFactory,
}

impl Vocabulary {
    /// `end` is the token that ends an answer (the end-of-turn token when there is one).
    pub(crate) fn new(tokenizer: &Tokenizer, end: Option<u32>) -> Result<Self, TextError> {
        let words = token_bytes(tokenizer)?;
        let eos = end.unwrap_or(u32::MAX);
        let info = TokRxInfo::new(words.len() as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(TrieEnv { trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| TextError::Grammar(e.to_string()))?;
        factory.quiet();
        Ok(Vocabulary { factory })
    }

    pub(crate) fn compile(&self, grammar: &Grammar) -> Result<Constraint, TextError> {
        let parser = self.factory.create_parser(grammar.top_level()).map_err(|e| TextError::Grammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher_error(&matcher) {
            return Err(TextError::Grammar(e));
        }
        Ok(Constraint {
            matcher: Box::new(matcher),
            vocab: self.factory.tok_env().tok_trie().vocab_size(),
            grammar: Arc::new(grammar.clone()),
        })
    }
}

fn matcher_error(m: &Matcher) -> Option<String> {
    m.get_error()
}

/// One request's position in its grammar. Cloning gives an independent copy at the same position.
#[derive(Clone)]
pub struct Constraint {
    /// Boxed: a matcher is large, and requests carrying one move through channels.
    matcher: Box<Matcher>,
    vocab: usize,
    /// What it was compiled from: an engine elsewhere (a vLLM pool) is sent the grammar itself.
    grammar: Arc<Grammar>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("stopped", &self.matcher.is_stopped()).finish_non_exhaustive()
    }
}

impl Constraint {
    /// Sets the logit of every token the grammar does not allow next to minus infinity (ids beyond
    /// the vocabulary, which some models pad their output layer with, included). Once the grammar is
    /// complete only the end token is allowed.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), TextError> {
        let allowed = self.matcher.compute_mask_or_eos().map_err(|e| TextError::Grammar(e.to_string()))?;
        for (id, l) in logits.iter_mut().enumerate() {
            if id >= self.vocab || !allowed.is_allowed(id as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances the grammar past a sampled token.
    pub fn commit(&mut self, token: u32) -> Result<(), TextError> {
        self.matcher.consume_token(token).map_err(|e| TextError::Grammar(e.to_string()))
    }

    pub fn grammar(&self) -> &Grammar {
        &self.grammar
    }

    /// Whether the grammar is complete here (the end token is allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

/// llguidance's view of the tokenizer: the trie of token bytes. Tokenising text (which llguidance
/// does only for literal strings in a grammar) is greedy over the trie: always a valid encoding.
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// The bytes each token stands for. Byte-level BPE vocabularies spell bytes as printable characters
/// (GPT-2's table); SentencePiece ones write a space as `▁` and raw bytes as `<0xAB>`. Special tokens
/// are marked the way llguidance expects, so that no grammar can produce them from text.
fn token_bytes(tokenizer: &Tokenizer) -> Result<Vec<Vec<u8>>, TextError> {
    let byte_level = match tokenizer.get_decoder() {
        Some(d) => decoder_is_byte_level(d),
        None => false,
    };
    let unmap = byte_level_unmap();
    let added = tokenizer.get_added_tokens_decoder();
    let size = tokenizer.get_vocab_size(true);
    let mut words = Vec::with_capacity(size);
    for id in 0..size as u32 {
        let Some(piece) = tokenizer.id_to_token(id) else {
            words.push(Vec::new());
            continue;
        };
        if let Some(token) = added.get(&id) {
            if token.special {
                let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                bytes.extend_from_slice(piece.as_bytes());
                words.push(bytes);
            } else {
                words.push(piece.into_bytes());
            }
            continue;
        }
        let bytes = if byte_level {
            piece.chars().map(|c| unmap.get(&c).copied()).collect::<Option<Vec<u8>>>().unwrap_or_default()
        } else if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
            u8::from_str_radix(hex, 16).map(|b| vec![b]).unwrap_or_default()
        } else {
            piece.replace('▁', " ").into_bytes()
        };
        words.push(bytes);
    }
    if words.is_empty() {
        return Err(TextError::Grammar("the vocabulary is empty".into()));
    }
    Ok(words)
}

fn decoder_is_byte_level(d: &DecoderWrapper) -> bool {
    match d {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(seq) => seq.get_decoders().iter().any(decoder_is_byte_level),
        _ => false,
    }
}

/// GPT-2's byte-to-character table, inverted: printable bytes stand for themselves, the others are
/// shifted to U+0100 and up in order.
fn byte_level_unmap() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0x100u32;
    let mut map = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        if printable(b) {
            map.insert(b as char, b);
        } else {
            map.insert(char::from_u32(shifted).unwrap_or('\u{FFFD}'), b);
            shifted += 1;
        }
    }
    map
}
