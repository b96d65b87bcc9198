use crate::constraint::Vocabulary;
use crate::gguf_tokenizer::{meta_string, meta_u32, tokenizer_from_gguf};
use crate::{ChatMessage, ChatTemplate, Constraint, Grammar, IncrementalDecoder, TextError};
use candle_core::quantized::gguf_file::Content;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;
use tokenizers::Tokenizer;

/// Token pieces that end a turn in the chat formats we know, whatever the metadata says
/// (llama.cpp's "end of generation" set does the same).
const END_OF_TURN_PIECES: &[&str] =
    &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "</s>"];

/// A model's tokenizer, special tokens and chat template.
pub struct TextModel {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    bos: Option<(u32, String)>,
    add_bos: bool,
    end_of_generation: Vec<u32>,
    /// The vocabulary as llguidance sees it, built on the first constrained request.
    vocabulary: OnceLock<Result<Vocabulary, String>>,
}

impl std::fmt::Debug for TextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModel")
            .field("template", &self.template)
            .field("bos", &self.bos)
            .field("end_of_generation", &self.end_of_generation)
            .finish_non_exhaustive()
    }
}

impl TextModel {
    /// From the metadata of a GGUF file (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf(ct: &Content) -> Result<Self, TextError> {
        let tokenizer = tokenizer_from_gguf(ct)?;
        let piece = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id).map(|t| (id, t)));
        let bos = piece(meta_u32(ct, "tokenizer.ggml.bos_token_id"));
        let eos = piece(meta_u32(ct, "tokenizer.ggml.eos_token_id"));
        let add_bos = ct.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let mut end_ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
        end_ids.extend(meta_u32(ct, "tokenizer.ggml.eot_token_id"));
        end_ids.extend(meta_u32(ct, "tokenizer.ggml.eom_token_id"));
        let template = meta_string(ct, "tokenizer.chat_template")
            .map(|src| ChatTemplate::new(&src, &piece_text(&bos), &piece_text(&eos)))
            .transpose()?;
        Ok(Self::assemble(tokenizer, template, bos, add_bos, end_ids))
    }

    /// From a Hugging Face model directory: `tokenizer.json`, `tokenizer_config.json` and, when present,
    /// `generation_config.json` / `config.json` for the end-of-sequence ids.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TextError> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| TextError::Io { path: tokenizer_path.display().to_string(), reason: e.to_string() })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let token_of = |key: &str| -> Option<(u32, String)> {
            let text = match config.get(key)? {
                Value::String(s) => s.clone(),
                Value::Object(o) => o.get("content")?.as_str()?.to_owned(),
                _ => return None,
            };
            tokenizer.token_to_id(&text).map(|id| (id, text))
        };
        let bos = token_of("bos_token");
        let eos = token_of("eos_token");
        let add_bos = config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        let mut end_ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
        for file in ["generation_config.json", "config.json"] {
            if let Some(cfg) = read_json(&dir.join(file))? {
                match cfg.get("eos_token_id") {
                    Some(Value::Number(n)) => end_ids.extend(n.as_u64().map(|n| n as u32)),
                    Some(Value::Array(a)) => end_ids.extend(a.iter().filter_map(|v| v.as_u64()).map(|n| n as u32)),
                    _ => {}
                }
            }
        }
        let source = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| named.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        let template = source.map(|src| ChatTemplate::new(&src, &piece_text(&bos), &piece_text(&eos))).transpose()?;
        Ok(Self::assemble(tokenizer, template, bos, add_bos, end_ids))
    }

    fn assemble(
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
        bos: Option<(u32, String)>,
        add_bos: bool,
        mut end_of_generation: Vec<u32>,
    ) -> Self {
        end_of_generation.extend(END_OF_TURN_PIECES.iter().filter_map(|p| tokenizer.token_to_id(p)));
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        TextModel { tokenizer, template, bos, add_bos, end_of_generation, vocabulary: OnceLock::new() }
    }

    /// Compiles a grammar against this model's vocabulary (the vocabulary's token trie is built once,
    /// on the first call). An unsupported or unsatisfiable grammar is a [`TextError::Grammar`] naming
    /// what is wrong.
    pub fn constrain(&self, grammar: &Grammar) -> Result<Constraint, TextError> {
        let vocabulary = self
            .vocabulary
            .get_or_init(|| Vocabulary::new(&self.tokenizer, self.end_token()).map_err(|e| e.to_string()));
        match vocabulary {
            Ok(v) => v.compile(grammar),
            Err(e) => Err(TextError::Grammar(format!("the vocabulary cannot be read for constrained decoding: {e}"))),
        }
    }

    /// The token a constrained answer ends with: the end-of-turn token when the model has one.
    fn end_token(&self) -> Option<u32> {
        ["<|im_end|>", "<|eot_id|>", "<end_of_turn>"]
            .iter()
            .filter_map(|p| self.tokenizer.token_to_id(p))
            .find(|id| self.end_of_generation.contains(id))
            .or_else(|| self.end_of_generation.first().copied())
    }

    /// Tokenises a prompt; special tokens written in the text (`<|im_start|>`) become their ids.
    /// Adds BOS when the model asks for it and the text does not start with it already.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let plain = self.encode_plain(text)?;
        match &self.bos {
            Some((bos_id, _)) if self.add_bos && plain.first() != Some(bos_id) => {
                Ok(std::iter::once(*bos_id).chain(plain).collect())
            }
            _ => Ok(plain),
        }
    }

    /// Tokenises text as it is, without BOS.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TextError> {
        Ok(self.tokenizer.encode_fast(text, false).map_err(TextError::tokenizer)?.get_ids().to_vec())
    }

    /// Decodes ids to text, leaving out special tokens.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders the conversation with the model's chat template, ending with the assistant's turn.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, TextError> {
        self.template.as_ref().ok_or(TextError::NoChatTemplate)?.render(messages, true)
    }

    /// Renders a conversation that may offer `tools` (OpenAI's tool objects) and carry calls and
    /// their results; inference and training both render through here, so they see the same text.
    pub fn render_prompt(
        &self,
        messages: &[ChatMessage],
        tools: &[Value],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        self.template.as_ref().ok_or(TextError::NoChatTemplate)?.render_with_tools(
            messages,
            tools,
            add_generation_prompt,
        )
    }

    /// Renders a conversation as it is, optionally opening the assistant's turn after it: a trainer
    /// renders growing prefixes of one conversation to find where each assistant turn starts and ends.
    pub fn render_conversation(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        self.template.as_ref().ok_or(TextError::NoChatTemplate)?.render(messages, add_generation_prompt)
    }

    /// Ids that end generation (EOS, end of turn).
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn decoder(&self) -> IncrementalDecoder {
        IncrementalDecoder::new()
    }
}

fn piece_text(token: &Option<(u32, String)>) -> String {
    token.as_ref().map(|(_, t)| t.clone()).unwrap_or_default()
}

fn read_json(path: &Path) -> Result<Option<Value>, TextError> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| TextError::Io { path: path.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TextError::Io { path: path.display().to_string(), reason: e.to_string() }),
    }
}
