//! Loading a model (weights, configuration and text side) from a GGUF file or a Hugging Face directory.

use crate::config::{Architecture, ModelConfig};
use crate::error::{io_err, Result};
use crate::kv_cache::BLOCK_TOKENS;
use crate::models::decoder::Decoder;
use crate::models::{spec_for, ArchSpec};
use crate::weights::{load_gguf_tensors, load_safetensors_dir, read_gguf_content, unpermute_weight, TensorMap};
use crate::{BatchContext, EngineError, KvPool, LoraAdapter, Segment};
use berth_text::TextModel;
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Logits of one forward pass, one row per position asked for.
pub type Logits = Vec<Vec<f32>>;

/// A loaded decoder and its text side. Immutable once loaded; shared by the engine thread.
pub struct Model {
    config: ModelConfig,
    decoder: Decoder,
    text: Arc<TextModel>,
    source: PathBuf,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).field("source", &self.source).finish_non_exhaustive()
    }
}

/// Loads a model from a `.gguf` file or a Hugging Face directory (`config.json`, `*.safetensors`,
/// `tokenizer.json`). `text_fallback` provides the tokenizer when a full-weights directory has none
/// (a fine-tune exported without its tokenizer).
pub fn load_model(path: &Path, text_fallback: Option<Arc<TextModel>>) -> Result<Model> {
    let (config, weights, text) = read_model(path, text_fallback)?;
    finish(config, weights, text, path)
}

/// A model's weights as plain f32 tensors under Hugging Face's names and row order (quantised matrices
/// dequantised, llama.cpp's Q/K permutation undone), with its configuration and text side: what a
/// trainer needs, where the engine keeps quantised blocks instead.
pub struct DenseWeights {
    pub config: ModelConfig,
    pub tensors: std::collections::HashMap<String, candle_core::Tensor>,
    pub text: Arc<TextModel>,
}

/// Reads a model (GGUF file or Hugging Face directory) into [`DenseWeights`].
pub fn load_dense_weights(path: &Path) -> Result<DenseWeights> {
    let (config, weights, text) = read_model(path, None)?;
    config.validate()?;
    let tensors = weights.into_iter().map(|(name, w)| Ok((name, w.into_dense()?))).collect::<Result<_>>()?;
    Ok(DenseWeights { config, tensors, text })
}

fn read_model(path: &Path, text_fallback: Option<Arc<TextModel>>) -> Result<(ModelConfig, TensorMap, Arc<TextModel>)> {
    if path.is_dir() {
        read_hf_dir(path, text_fallback)
    } else if path.is_file() {
        read_gguf(path)
    } else {
        Err(io_err(path, "no such file or directory"))
    }
}

fn read_gguf(path: &Path) -> Result<(ModelConfig, TensorMap, Arc<TextModel>)> {
    let (content, mut file) = read_gguf_content(path)?;
    let arch_name = gguf_str(&content, "general.architecture")?;
    let spec = spec_for(&arch_name).ok_or_else(|| {
        EngineError::Unsupported(format!("architecture `{arch_name}` (supported: llama, mistral, qwen2)"))
    })?;
    let config = gguf_config(&content, &arch_name, spec)?;
    let mut weights = load_gguf_tensors(path, &content, &mut file)?;
    if spec.gguf_permutes_qk {
        for i in 0..config.num_layers {
            for (module, heads) in [("q_proj", config.num_heads), ("k_proj", config.num_kv_heads)] {
                for kind in ["weight", "bias"] {
                    let name = format!("model.layers.{i}.self_attn.{module}.{kind}");
                    if let Some(w) = weights.remove(&name) {
                        weights.insert(name, unpermute_weight(w, heads)?);
                    }
                }
            }
        }
    }
    let text = Arc::new(TextModel::from_gguf(&content)?);
    Ok((config, weights, text))
}

fn read_hf_dir(dir: &Path, text_fallback: Option<Arc<TextModel>>) -> Result<(ModelConfig, TensorMap, Arc<TextModel>)> {
    let cfg_path = dir.join("config.json");
    let raw = std::fs::read_to_string(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
    let json: Json =
        serde_json::from_str(&raw).map_err(|e| EngineError::Malformed(format!("{}: {e}", cfg_path.display())))?;
    let config = hf_config(&json)?;
    let weights = load_safetensors_dir(dir)?;
    let text = if dir.join("tokenizer.json").exists() {
        Arc::new(TextModel::from_hf_dir(dir)?)
    } else {
        text_fallback.ok_or_else(|| io_err(&dir.join("tokenizer.json"), "not found"))?
    };
    Ok((config, weights, text))
}

fn finish(config: ModelConfig, weights: TensorMap, text: Arc<TextModel>, source: &Path) -> Result<Model> {
    config.validate()?;
    let decoder = Decoder::new(config.clone(), weights)?;
    Ok(Model { config, decoder, text, source: source.to_owned() })
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn text(&self) -> &Arc<TextModel> {
        &self.text
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// A paged KV pool of `blocks` blocks of [`BLOCK_TOKENS`] positions for this model's shape.
    pub fn new_kv_pool(&self, blocks: usize) -> KvPool {
        KvPool::new(self.config.num_layers, self.config.num_kv_heads, self.config.head_dim, blocks)
    }

    /// Bytes of KV cache one position takes.
    pub fn kv_bytes_per_token(&self) -> usize {
        KvPool::bytes_per_token(self.config.num_layers, self.config.num_kv_heads, self.config.head_dim)
    }

    /// One forward pass over a batch; see [`BatchContext`].
    pub fn forward(&self, tokens: &[u32], ctx: &mut BatchContext<'_>) -> Result<Logits> {
        // The caller's thread joins the compute pool for the pass instead of sleeping on each of the
        // few hundred parallel loops in it.
        compute_pool().install(|| self.decoder.forward(tokens, ctx))
    }

    /// Loads a PEFT adapter and checks it against this model's shapes.
    pub fn load_adapter(&self, dir: &Path) -> Result<LoraAdapter> {
        LoraAdapter::load(dir, &self.config)
    }

    /// Logits at every position of `tokens`, from an empty cache: for reference checks.
    pub fn logits(&self, tokens: &[u32], adapter: Option<&LoraAdapter>) -> Result<Logits> {
        let blocks = tokens.len().div_ceil(BLOCK_TOKENS).max(1);
        let mut pool = self.new_kv_pool(blocks);
        let table: Vec<u32> = (0..blocks as u32).collect();
        let segment = Segment { len: tokens.len(), past: 0, table: &table, adapter };
        self.forward(tokens, &mut BatchContext { kv: &mut pool, segments: vec![segment], all_logits: true })
    }
}

/// The threads every engine computes on: one per core, shared by all loaded models.
fn compute_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        // The kernel choice and the AMX request come before any compute thread exists.
        crate::isa::cpu();
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("berth-compute-{i}"))
            .build()
            .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .expect("a one-thread pool can always be built")
    })
}

fn gguf_str(ct: &Content, key: &str) -> Result<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok().cloned())
        .ok_or_else(|| EngineError::Malformed(format!("GGUF metadata `{key}` missing")))
}

fn gguf_num(ct: &Content, key: &str) -> Option<f64> {
    match ct.metadata.get(key)? {
        Value::U8(v) => Some(*v as f64),
        Value::I8(v) => Some(*v as f64),
        Value::U16(v) => Some(*v as f64),
        Value::I16(v) => Some(*v as f64),
        Value::U32(v) => Some(*v as f64),
        Value::I32(v) => Some(*v as f64),
        Value::U64(v) => Some(*v as f64),
        Value::I64(v) => Some(*v as f64),
        Value::F32(v) => Some(*v as f64),
        Value::F64(v) => Some(*v),
        _ => None,
    }
}

/// Reads a model's configuration without loading its weights (GGUF header or `config.json`).
pub fn probe_config(path: &Path) -> Result<ModelConfig> {
    let config = if path.is_dir() {
        let cfg_path = path.join("config.json");
        let raw = std::fs::read_to_string(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
        let json: Json =
            serde_json::from_str(&raw).map_err(|e| EngineError::Malformed(format!("{}: {e}", cfg_path.display())))?;
        hf_config(&json)?
    } else {
        let (content, _) = read_gguf_content(path)?;
        let arch_name = gguf_str(&content, "general.architecture")?;
        let spec = spec_for(&arch_name).ok_or_else(|| {
            EngineError::Unsupported(format!("architecture `{arch_name}` (supported: llama, mistral, qwen2)"))
        })?;
        gguf_config(&content, &arch_name, spec)?
    };
    config.validate()?;
    Ok(config)
}

fn gguf_config(ct: &Content, arch: &str, spec: &ArchSpec) -> Result<ModelConfig> {
    let need = |key: &str| -> Result<usize> {
        gguf_num(ct, &format!("{arch}.{key}"))
            .map(|v| v as usize)
            .ok_or_else(|| EngineError::Malformed(format!("GGUF metadata `{arch}.{key}` missing")))
    };
    let hidden_size = need("embedding_length")?;
    let num_heads = need("attention.head_count")?;
    let num_kv_heads =
        gguf_num(ct, &format!("{arch}.attention.head_count_kv")).map(|v| v as usize).unwrap_or(num_heads);
    let head_dim = gguf_num(ct, &format!("{arch}.attention.key_length"))
        .map(|v| v as usize)
        .unwrap_or(hidden_size / num_heads.max(1));
    let vocab_size = ct
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| EngineError::Malformed("token_embd.weight missing".into()))?;
    Ok(ModelConfig {
        architecture: spec.architecture,
        hidden_size,
        intermediate_size: need("feed_forward_length")?,
        num_layers: need("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: gguf_num(ct, &format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        rope_theta: gguf_num(ct, &format!("{arch}.rope.freq_base")).unwrap_or(spec.default_rope_theta),
        context_length: need("context_length")?,
        qkv_bias: ct.tensor_infos.contains_key("blk.0.attn_q.bias"),
        sliding_window: None,
    })
}

fn hf_config(json: &Json) -> Result<ModelConfig> {
    let model_type = json.get("model_type").and_then(Json::as_str).unwrap_or("");
    let spec = spec_for(model_type).ok_or_else(|| {
        EngineError::Unsupported(format!("model_type `{model_type}` (supported: llama, mistral, qwen2)"))
    })?;
    let num = |key: &str| json.get(key).and_then(Json::as_f64);
    let need = |key: &str| -> Result<usize> {
        num(key).map(|v| v as usize).ok_or_else(|| EngineError::Malformed(format!("config.json: `{key}` missing")))
    };
    let hidden_size = need("hidden_size")?;
    let num_heads = need("num_attention_heads")?;
    let sliding_window = match spec.architecture {
        Architecture::Mistral => num("sliding_window").map(|v| v as usize),
        Architecture::Qwen2 if json.get("use_sliding_window").and_then(Json::as_bool) == Some(true) => {
            num("sliding_window").map(|v| v as usize)
        }
        _ => None,
    };
    Ok(ModelConfig {
        architecture: spec.architecture,
        hidden_size,
        intermediate_size: need("intermediate_size")?,
        num_layers: need("num_hidden_layers")?,
        num_heads,
        num_kv_heads: num("num_key_value_heads").map(|v| v as usize).unwrap_or(num_heads),
        head_dim: num("head_dim").map(|v| v as usize).unwrap_or(hidden_size / num_heads.max(1)),
        vocab_size: need("vocab_size")?,
        rms_norm_eps: num("rms_norm_eps").unwrap_or(1e-6),
        rope_theta: num("rope_theta").unwrap_or(spec.default_rope_theta),
        context_length: need("max_position_embeddings")?,
        qkv_bias: spec.qkv_bias || json.get("attention_bias").and_then(Json::as_bool) == Some(true),
        sliding_window,
    })
}

/// The tokenizer and chat template of a GGUF file, without its weights.
pub fn text_model_of_gguf(path: &Path) -> Result<TextModel> {
    let (content, _) = read_gguf_content(path)?;
    Ok(TextModel::from_gguf(&content)?)
}
