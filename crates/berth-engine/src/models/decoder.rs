//! The decoder-only transformer shared by the Llama family. Tokens of all sequences of a batch are
//! concatenated (`[tokens, hidden]` as plain rows): matmuls run once for the whole batch, attention per
//! sequence against that sequence's blocks of the paged KV pool.

use crate::attention::{paged_attention, AttentionShape};
use crate::batch::SegmentView;
use crate::error::Result;
use crate::kv_cache::BLOCK_TOKENS;
use crate::linear::{Linear, Matrix};
use crate::lora::Target;
use crate::ops;
use crate::quant::QuantMatrix;
use crate::weights::{TensorMap, Weight};
use crate::{BatchContext, EngineError, ModelConfig};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

struct Layer {
    input_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Token embeddings, looked up by row.
enum Embedding {
    Dense(Tensor),
    Quant(Arc<QuantMatrix>),
}

impl Embedding {
    fn lookup(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match self {
            Embedding::Dense(t) => {
                if let Some(bad) = ids.iter().find(|&&i| i as usize >= t.dim(0).unwrap_or(0)) {
                    return Err(EngineError::Tensor(format!("token id {bad} is outside the vocabulary")));
                }
                Ok(t.index_select(&Tensor::new(ids, &Device::Cpu)?, 0)?.flatten_all()?.to_vec1()?)
            }
            Embedding::Quant(q) => q.gather_rows(ids),
        }
    }
}

pub(crate) struct Decoder {
    cfg: ModelConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Matrix,
    /// `[context_length, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Decoder {
    pub(crate) fn new(cfg: ModelConfig, mut w: TensorMap) -> Result<Self> {
        let mut take = |name: &str, shape: &[usize]| -> Result<Weight> {
            let t = w.remove(name).ok_or_else(|| EngineError::Malformed(format!("missing tensor {name}")))?;
            if t.dims() != shape {
                return Err(EngineError::Malformed(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t)
        };
        let (h, q_dim, kv_dim, ffn) =
            (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size);
        let embed = take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |module: &str, target: Target, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let weight = take(&format!("{p}.{module}.weight"), &[out, inp])?;
                let bias = if bias { Some(take(&format!("{p}.{module}.bias"), &[out])?.into_dense()?) } else { None };
                Linear::new(weight, bias, i, target)
            };
            let qb = cfg.qkv_bias;
            let q = lin("self_attn.q_proj", Target::Q, q_dim, h, qb)?;
            let k = lin("self_attn.k_proj", Target::K, kv_dim, h, qb)?;
            let v = lin("self_attn.v_proj", Target::V, kv_dim, h, qb)?;
            let o = lin("self_attn.o_proj", Target::O, h, q_dim, false)?;
            let gate = lin("mlp.gate_proj", Target::Gate, ffn, h, false)?;
            let up = lin("mlp.up_proj", Target::Up, ffn, h, false)?;
            let down = lin("mlp.down_proj", Target::Down, h, ffn, false)?;
            let input_norm = vector(take(&format!("{p}.input_layernorm.weight"), &[h])?)?;
            let post_norm = vector(take(&format!("{p}.post_attention_layernorm.weight"), &[h])?)?;
            layers.push(Layer { input_norm, q, k, v, o, post_norm, gate, up, down });
        }
        let norm = vector(take("model.norm.weight", &[h])?)?;
        let head = w.remove("lm_head.weight");
        if let Some(t) = &head {
            if t.dims() != [cfg.vocab_size, h] {
                return Err(EngineError::Malformed(format!("lm_head.weight has shape {:?}", t.dims())));
            }
        }
        // Tied embeddings share one copy between the lookup and the output projection.
        let (embed, lm_head) = match (embed, head) {
            (Weight::Quant(e), None) => {
                let e = Arc::new(e);
                (Embedding::Quant(e.clone()), Matrix::Quant(e))
            }
            (Weight::Dense(e), None) => (Embedding::Dense(e.clone()), Matrix::new(Weight::Dense(e))?),
            (Weight::Quant(e), Some(head)) => (Embedding::Quant(Arc::new(e)), Matrix::new(head)?),
            (Weight::Dense(e), Some(head)) => (Embedding::Dense(e), Matrix::new(head)?),
        };
        let (cos, sin) = rope_tables(&cfg);
        Ok(Decoder { lm_head, cfg, embed, layers, norm, cos, sin })
    }

    /// Runs the batch; returns logits `[segments, vocab]`, or `[tokens, vocab]` with `all_logits`.
    pub(crate) fn forward(&self, tokens: &[u32], ctx: &mut BatchContext<'_>) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let total: usize = ctx.segments.iter().map(|s| s.len).sum();
        if total != tokens.len() || total == 0 {
            return Err(EngineError::Tensor(format!("{} tokens for segments of {total}", tokens.len())));
        }
        let mut views = Vec::with_capacity(ctx.segments.len());
        let mut positions = Vec::with_capacity(total);
        let mut start = 0;
        for s in &ctx.segments {
            if s.past + s.len > cfg.context_length {
                return Err(EngineError::Tensor(format!(
                    "{} positions exceed the context length {}",
                    s.past + s.len,
                    cfg.context_length
                )));
            }
            if s.table.len() * BLOCK_TOKENS < s.past + s.len || s.table.iter().any(|&b| b as usize >= ctx.kv.blocks()) {
                return Err(EngineError::Tensor(format!(
                    "the block table does not cover {} positions",
                    s.past + s.len
                )));
            }
            positions.extend((s.past..s.past + s.len).map(|p| p as u32));
            views.push(SegmentView { start, len: s.len, past: s.past, table: s.table, adapter: s.adapter });
            start += s.len;
        }
        let shape = AttentionShape {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            window: cfg.sliding_window,
        };
        let (q_dim, kv_dim) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
        let mut x = self.embed.lookup(tokens)?;
        let mut h = Vec::new();
        let mut attn = vec![0f32; total * q_dim];
        for (li, layer) in self.layers.iter().enumerate() {
            ops::rms_norm(&x, &layer.input_norm, cfg.rms_norm_eps, &mut h);
            let [mut q, mut k, v] = Linear::forward_group([&layer.q, &layer.k, &layer.v], &h, total, &views)?;
            ops::rope(&mut q, cfg.num_heads, cfg.head_dim, &positions, &self.cos, &self.sin);
            ops::rope(&mut k, cfg.num_kv_heads, cfg.head_dim, &positions, &self.cos, &self.sin);
            for view in &views {
                let rows = view.start * kv_dim..(view.start + view.len) * kv_dim;
                ctx.kv.write(li, view.table, view.past, &k[rows.clone()], &v[rows]);
            }
            paged_attention(&q, &mut attn, ctx.kv, li, &views, shape);
            ops::add_assign(&mut x, &layer.o.forward(&attn, total, &views)?);
            ops::rms_norm(&x, &layer.post_norm, cfg.rms_norm_eps, &mut h);
            let [mut act, up] = Linear::forward_group([&layer.gate, &layer.up], &h, total, &views)?;
            ops::silu_mul(&mut act, &up);
            ops::add_assign(&mut x, &layer.down.forward(&act, total, &views)?);
        }
        let hs = cfg.hidden_size;
        let x = if ctx.all_logits {
            x
        } else {
            views.iter().flat_map(|v| x[(v.start + v.len - 1) * hs..(v.start + v.len) * hs].iter().copied()).collect()
        };
        let rows = x.len() / hs;
        ops::rms_norm(&x, &self.norm, cfg.rms_norm_eps, &mut h);
        let logits = self.lm_head.forward(&h, rows)?;
        Ok(logits.chunks_exact(cfg.vocab_size).map(<[f32]>::to_vec).collect())
    }
}

/// A norm weight as plain floats.
fn vector(w: Weight) -> Result<Vec<f32>> {
    Ok(w.into_dense()?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

fn rope_tables(cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.head_dim / 2;
    let inv: Vec<f32> =
        (0..half).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32).collect();
    let mut cos = Vec::with_capacity(cfg.context_length * half);
    let mut sin = Vec::with_capacity(cfg.context_length * half);
    for t in 0..cfg.context_length {
        for f in &inv {
            let a = t as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}
