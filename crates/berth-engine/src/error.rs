/// Errors of the engine: loading weights and adapters, and running them.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("model file is malformed: {0}")]
    Malformed(String),
    #[error("adapter does not fit the base model: {0}")]
    AdapterMismatch(String),
    #[error("tokenizer or chat template: {0}")]
    Text(#[from] berth_text::TextError),
    #[error("tensor operation failed: {0}")]
    Tensor(String),
    #[error("the engine has stopped")]
    Stopped,
    #[error("the engine is busy: {0}")]
    Busy(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Tensor(e.to_string())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Io { path: path.display().to_string(), reason: e.to_string() }
}
