//! Mistral: Llama's layers with sliding-window attention (`sliding_window` in `config.json`).
//! Its GGUF files are written as `llama`, with Llama's Q/K permutation.

use super::ArchSpec;
use crate::config::Architecture;

pub(crate) static SPEC: ArchSpec = ArchSpec {
    architecture: Architecture::Mistral,
    gguf_permutes_qk: true,
    qkv_bias: false,
    default_rope_theta: 10_000.0,
};
