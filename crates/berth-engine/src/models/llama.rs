//! Llama (and everything llama.cpp files under `general.architecture = llama`: SmolLM, TinyLlama, most
//! Mistral GGUFs). RMSNorm, grouped-query attention with rotate-half RoPE, SwiGLU, no biases.
//! llama.cpp's converter permutes Q and K rows of this architecture; the loader undoes it.

use super::ArchSpec;
use crate::config::Architecture;

pub(crate) static SPEC: ArchSpec = ArchSpec {
    architecture: Architecture::Llama,
    gguf_permutes_qk: true,
    qkv_bias: false,
    default_rope_theta: 10_000.0,
};
