//! Qwen2 / Qwen2.5: Llama's layers with biases on Q, K and V, RoPE theta 1e6 by default, and GGUF
//! files that keep Hugging Face's Q/K row order (llama.cpp runs it with NeoX-style RoPE).

use super::ArchSpec;
use crate::config::Architecture;

pub(crate) static SPEC: ArchSpec = ArchSpec {
    architecture: Architecture::Qwen2,
    gguf_permutes_qk: false,
    qkv_bias: true,
    default_rope_theta: 1_000_000.0,
};
