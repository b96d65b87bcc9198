//! Berth's inference engine.
//!
//! Principal types:
//! - [`Model`]: a decoder of the Llama family (Llama, Mistral, Qwen2; one file per architecture under
//!   `models/`) loaded from a GGUF file or a Hugging Face directory ([`load_model`]), with its [`TextModel`].
//! - [`LoraAdapter`]: a PEFT LoRA adapter, applied inside the linear layers per row of a batch.
//! - [`BatchContext`] and [`KvPool`]: what `forward` needs besides weights; the paged KV cache lives
//!   outside the model, in fixed-size blocks that sequences name through block tables.
//! - [`Engine`] / [`EngineHandle`]: one named OS thread per loaded model that owns the running sequences,
//!   fed by a bounded channel of [`Command`]s, answering each request with [`GenerateEvent`]s.
//!
//! The engine knows nothing of HTTP, SQL, tenants or auth.

mod attention;
mod batch;
mod block_manager;
mod config;
mod engine;
mod error;
mod isa;
mod kv_cache;
mod linear;
mod lora;
mod model;
mod models;
mod ops;
mod quant;
mod request;
mod sampling;
mod scheduler;
mod weights;

pub use batch::{BatchContext, Segment};
pub use berth_text::{ChatMessage, TextModel};
pub use config::{Architecture, ModelConfig};
pub use engine::{Command, Engine, EngineHandle, EngineOptions, EngineStats};
pub use error::EngineError;
pub use isa::{cpu, AmxState, CpuInfo, Isa};
pub use kv_cache::{KvPool, BLOCK_TOKENS};
pub use lora::{AdapterId, LoraAdapter};
pub use model::{load_dense_weights, load_model, probe_config, text_model_of_gguf, DenseWeights, Logits, Model};
pub use request::{Failure, FinishReason, GenerateEvent, GenerateRequest, Progress, SamplingParams, TokenLogprob};

#[cfg(test)]
mod tests;
