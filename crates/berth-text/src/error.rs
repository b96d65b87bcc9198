/// Everything that can go wrong while loading or using a tokenizer or a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer metadata is missing `{key}`")]
    MissingMetadata { key: String },
    #[error("tokenizer metadata `{key}` is malformed: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("unsupported tokenizer model `{model}` (supported: gpt2-style BPE, llama SentencePiece)")]
    UnsupportedTokenizer { model: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("chat template failed: {0}")]
    Template(String),
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// A grammar or JSON Schema that cannot be compiled (unsupported or unsatisfiable), or a token the
    /// grammar does not allow.
    #[error("{0}")]
    Grammar(String),
}

impl TextError {
    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        TextError::Tokenizer(e.to_string())
    }
}
