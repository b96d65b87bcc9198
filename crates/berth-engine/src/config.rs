use serde::Serialize;

/// The decoder architectures Berth runs. Each has its own file under `models/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }
}

/// Shape and hyper-parameters of a decoder, read from GGUF metadata or `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub context_length: usize,
    /// Q, K and V projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Attention looks back at most this many positions (Mistral).
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    pub(crate) fn validate(&self) -> crate::error::Result<()> {
        let bad = |m: String| Err(crate::EngineError::Malformed(m));
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 || self.hidden_size == 0 {
            return bad(format!("degenerate shape {self:?}"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("{} heads are not a multiple of {} KV heads", self.num_heads, self.num_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} is odd", self.head_dim));
        }
        Ok(())
    }
}
