/// Why a training run stopped without a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The training or validation data cannot be used with this model (too long, no assistant turn).
    #[error("{0}")]
    Data(String),
    /// The hyper-parameters are out of range.
    #[error("{0}")]
    Hyperparameters(String),
    #[error("cannot read the base model: {0}")]
    Model(#[from] berth_engine::EngineError),
    #[error("tokenizer or chat template: {0}")]
    Text(#[from] berth_text::TextError),
    #[error("tensor operation failed: {0}")]
    Tensor(String),
    #[error("cannot write {path}: {reason}")]
    Io { path: String, reason: String },
    /// The run diverged (a loss that is not a finite number).
    #[error("training diverged at step {step}: the loss is {loss}; lower the learning rate multiplier")]
    Diverged { step: usize, loss: f32 },
    #[error("cancelled")]
    Cancelled,
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Tensor(e.to_string())
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io { path: path.display().to_string(), reason: e.to_string() }
}
