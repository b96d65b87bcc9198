//! One file per architecture; they differ in how their configuration is read and in a few switches
//! (biases, sliding window, how GGUF stores Q and K). The transformer itself is `decoder.rs`.

pub(crate) mod decoder;
pub(crate) mod llama;
pub(crate) mod mistral;
pub(crate) mod qwen2;

use crate::config::Architecture;

/// What an architecture file tells the loader.
pub(crate) struct ArchSpec {
    pub architecture: Architecture,
    /// llama.cpp permutes Q/K rows of this architecture for its interleaved RoPE.
    pub gguf_permutes_qk: bool,
    pub qkv_bias: bool,
    pub default_rope_theta: f64,
}

pub(crate) fn spec_for(name: &str) -> Option<&'static ArchSpec> {
    match name {
        "llama" => Some(&llama::SPEC),
        "mistral" => Some(&mistral::SPEC),
        "qwen2" => Some(&qwen2::SPEC),
        _ => None,
    }
}
