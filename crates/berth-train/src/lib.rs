//! Berth's trainer: LoRA fine-tuning of the engine's decoders on a CPU, supervised (SFT) or on
//! preference pairs (DPO, against the frozen starting model).
//!
//! Principal types:
//! - [`Example`] / [`parse_jsonl`]: chat examples read from a JSONL training file, each problem
//!   reported with its line; [`tokenize`] renders them with the model's chat template and marks the
//!   assistant tokens the loss is taken on.
//! - [`LoraModel`]: the decoder in candle's differentiable operations, base weights frozen, LoRA
//!   factors the only variables.
//! - [`train`]: the loop (gradient accumulation, AdamW, per-epoch checkpoints it can resume from),
//!   reporting to an [`Observer`] that may also cancel it. Adapters are written in PEFT's format.
//!
//! Like the engine, the trainer knows nothing of HTTP, SQL or tenants.

mod dataset;
mod error;
mod lora_model;
mod optimizer;
mod peft;
mod trainer;

pub use dataset::{
    parse_jsonl, parse_preference_jsonl, tokenize, Example, FileKind, FileProblems, LineProblem, PreferenceExample,
    TokenizedExample, MAX_EXAMPLE_CHARS,
};
pub use error::{Result, TrainError};
pub use lora_model::{LoraModel, LoraSettings, SequenceLoss, TARGETS};
pub use optimizer::{AdamW, AdamWConfig};
pub use peft::{write_adapter, CONFIG_FILE, WEIGHTS_FILE};
pub use trainer::{
    check_starting_adapter, learning_rate, train, Checkpoint, Hyperparameters, Observer, Preference, StepMetrics,
    TrainEvent, TrainOutcome, TrainSpec,
};
