//! Builds a Hugging Face `Tokenizer` from the vocabulary a GGUF file carries in its metadata, with the
//! pre-tokenisation llama.cpp uses for each `tokenizer.ggml.pre` value.

use crate::TextError;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::Vocab;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: u32 = 3;
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub(crate) fn meta<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, TextError> {
    ct.metadata.get(key).ok_or_else(|| TextError::MissingMetadata { key: key.to_owned() })
}

pub(crate) fn meta_u32(ct: &Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(value_u32)
}

pub(crate) fn meta_string(ct: &Content, key: &str) -> Option<String> {
    ct.metadata.get(key).and_then(|v| v.to_string().ok().cloned())
}

fn value_u32(v: &Value) -> Option<u32> {
    match v {
        Value::U8(x) => Some(*x as u32),
        Value::I8(x) => u32::try_from(*x).ok(),
        Value::U16(x) => Some(*x as u32),
        Value::I16(x) => u32::try_from(*x).ok(),
        Value::U32(x) => Some(*x),
        Value::I32(x) => u32::try_from(*x).ok(),
        Value::U64(x) => u32::try_from(*x).ok(),
        Value::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

fn bad(key: &str, reason: impl Into<String>) -> TextError {
    TextError::BadMetadata { key: key.to_owned(), reason: reason.into() }
}

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, TextError> {
    let arr = meta(ct, key)?.to_vec().map_err(|e| bad(key, e.to_string()))?;
    arr.iter().map(|v| v.to_string().cloned().map_err(|e| bad(key, e.to_string()))).collect()
}

fn floats(ct: &Content, key: &str) -> Result<Vec<f32>, TextError> {
    let arr = meta(ct, key)?.to_vec().map_err(|e| bad(key, e.to_string()))?;
    arr.iter().map(|v| v.to_f32().map_err(|e| bad(key, e.to_string()))).collect()
}

pub(crate) fn tokenizer_from_gguf(ct: &Content) -> Result<Tokenizer, TextError> {
    let model = meta_string(ct, "tokenizer.ggml.model")
        .ok_or_else(|| TextError::MissingMetadata { key: "tokenizer.ggml.model".into() })?;
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut tokenizer = match model.as_str() {
        "gpt2" => byte_level_bpe(ct, vocab)?,
        "llama" => sentencepiece_bpe(ct, &tokens, vocab)?,
        other => return Err(TextError::UnsupportedTokenizer { model: other.to_owned() }),
    };
    add_special_tokens(ct, &tokens, &mut tokenizer)?;
    Ok(tokenizer)
}

fn byte_level_bpe(ct: &Content, vocab: Vocab) -> Result<Tokenizer, TextError> {
    let merges = strings(ct, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad("tokenizer.ggml.merges", format!("entry `{m}` is not `a b`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = meta_string(ct, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
    // Llama 3's tokenizer takes a whole word from the vocabulary before trying merges (llama.cpp does too).
    let ignore_merges = matches!(pre.as_str(), "llama3" | "llama-bpe" | "smaug-bpe");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(TextError::tokenizer)?;
    let mut tokenizer = Tokenizer::new(bpe);
    // llama.cpp never adds a prefix space for byte-level BPE; neither do we.
    let byte_level_no_regex = ByteLevel::new(false, false, false);
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        "llama3" | "llama-bpe" | "smaug-bpe" | "dbrx" => {
            Sequence::new(vec![isolate(REGEX_LLAMA3)?, byte_level_no_regex.into()]).into()
        }
        "qwen2" | "deepseek-r1-qwen" => Sequence::new(vec![isolate(REGEX_QWEN2)?, byte_level_no_regex.into()]).into(),
        // SmolLM's tokenizer.json: Digits(individual) then GPT-2 byte level.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![isolate(r"\p{N}")?, ByteLevel::new(false, true, true).into()]).into()
        }
        _ => ByteLevel::new(false, true, true).into(),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

fn isolate(regex: &str) -> Result<PreTokenizerWrapper, TextError> {
    Ok(Split::new(SplitPattern::Regex(regex.to_owned()), SplitDelimiterBehavior::Isolated, false)
        .map_err(TextError::tokenizer)?
        .into())
}

/// SentencePiece vocabularies carry scores, not merges. A BPE whose merges are ranked by the score of
/// the merged piece reproduces SentencePiece's BPE segmentation (what HF's converter does).
fn sentencepiece_bpe(ct: &Content, tokens: &[String], vocab: Vocab) -> Result<Tokenizer, TextError> {
    let scores = floats(ct, "tokenizer.ggml.scores")?;
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((score, id as u32, left.to_owned(), right.to_owned()));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = merges.into_iter().map(|(_, _, l, r)| (l, r)).collect();
    let unk = meta_u32(ct, "tokenizer.ggml.unknown_token_id").and_then(|id| tokens.get(id as usize)).cloned();
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let mut tokenizer = Tokenizer::new(builder.build().map_err(TextError::tokenizer)?);
    let add_space_prefix =
        ct.metadata.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new("▁".into()).into());
    }
    normalizers.push(Replace::new(" ", "▁").map_err(TextError::tokenizer)?.into());
    tokenizer
        .with_normalizer(Some(tokenizers::normalizers::Sequence::new(normalizers)))
        .map_err(TextError::tokenizer)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(TextError::tokenizer)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

fn add_special_tokens(ct: &Content, tokens: &[String], tokenizer: &mut Tokenizer) -> Result<(), TextError> {
    let Some(types) = ct.metadata.get("tokenizer.ggml.token_type") else { return Ok(()) };
    let types = types.to_vec().map_err(|e| bad("tokenizer.ggml.token_type", e.to_string()))?;
    let mut special = Vec::new();
    let mut added = Vec::new();
    for (id, ty) in types.iter().enumerate() {
        let Some(token) = tokens.get(id) else { break };
        match value_u32(ty) {
            Some(TOKEN_TYPE_CONTROL) => special.push(AddedToken::from(token.clone(), true)),
            Some(TOKEN_TYPE_USER_DEFINED) => added.push(AddedToken::from(token.clone(), false)),
            _ => {}
        }
    }
    tokenizer.add_special_tokens(special).map_err(TextError::tokenizer)?;
    tokenizer.add_tokens(added).map_err(TextError::tokenizer)?;
    Ok(())
}
