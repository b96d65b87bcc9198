//! The decoder-only transformer shared by the Llama family. Tokens of all sequences of a batch are
//! concatenated (`[tokens, hidden]`): matmuls run once for the whole batch, attention per sequence
//! against that sequence's KV cache.

use crate::batch::SegmentView;
use crate::error::Result;
use crate::linear::{Linear, Matrix};
use crate::lora::Target;
use crate::quant::QuantMatrix;
use crate::weights::{TensorMap, Weight};
use std::sync::Arc;
use crate::{BatchContext, EngineError, ModelConfig};
use candle_core::{DType, Device, Tensor, D};

struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
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
    fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Embedding::Dense(t) => Ok(t.index_select(&Tensor::new(ids, &Device::Cpu)?, 0)?),
            Embedding::Quant(q) => q.gather_rows(ids),
        }
    }
}

pub(crate) struct Decoder {
    cfg: ModelConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Matrix,
    cos: Tensor,
    sin: Tensor,
}

impl Decoder {
    pub(crate) fn new(cfg: ModelConfig, mut w: TensorMap) -> Result<Self> {
        let mut take = |name: &str, shape: &[usize]| -> Result<Weight> {
            let t = w.remove(name).ok_or_else(|| EngineError::Malformed(format!("missing tensor {name}")))?;
            if t.dims() != shape {
                return Err(EngineError::Malformed(format!("tensor {name} has shape {:?}, expected {shape:?}", t.dims())));
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
            let input_norm = take(&format!("{p}.input_layernorm.weight"), &[h])?.into_dense()?;
            let post_norm = take(&format!("{p}.post_attention_layernorm.weight"), &[h])?.into_dense()?;
            layers.push(Layer { input_norm, q, k, v, o, post_norm, gate, up, down });
        }
        let norm = take("model.norm.weight", &[h])?.into_dense()?;
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
        let (cos, sin) = rope_tables(&cfg)?;
        Ok(Decoder { lm_head, cfg, embed, layers, norm, cos, sin })
    }

    /// Runs the batch; returns logits `[segments, vocab]`, or `[tokens, vocab]` with `all_logits`.
    pub(crate) fn forward(&self, tokens: &[u32], ctx: &mut BatchContext<'_>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let total: usize = ctx.segments.iter().map(|s| s.len).sum();
        if total != tokens.len() || total == 0 {
            return Err(EngineError::Tensor(format!("{} tokens for segments of {total}", tokens.len())));
        }
        let mut views = Vec::with_capacity(ctx.segments.len());
        let mut positions = Vec::with_capacity(total);
        let mut start = 0;
        for s in &ctx.segments {
            let past = s.cache.len();
            if past + s.len > cfg.context_length {
                return Err(EngineError::Tensor(format!("{} positions exceed the context length {}", past + s.len, cfg.context_length)));
            }
            positions.extend((past..past + s.len).map(|p| p as u32));
            views.push(SegmentView { start, len: s.len, past, adapter: s.adapter });
            start += s.len;
        }
        let pos = Tensor::new(positions.as_slice(), &Device::Cpu)?;
        let cos = self.cos.index_select(&pos, 0)?.unsqueeze(1)?;
        let sin = self.sin.index_select(&pos, 0)?.unsqueeze(1)?;
        let mut x = self.embed.lookup(tokens)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.input_norm, cfg.rms_norm_eps)?;
            let q = layer.q.forward(&h, &views)?.reshape((total, cfg.num_heads, cfg.head_dim))?;
            let k = layer.k.forward(&h, &views)?.reshape((total, cfg.num_kv_heads, cfg.head_dim))?;
            let v = layer.v.forward(&h, &views)?.reshape((total, cfg.num_kv_heads, cfg.head_dim))?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;
            let mut outs = Vec::with_capacity(views.len());
            for (seg, view) in ctx.segments.iter_mut().zip(&views) {
                let (keys, values) = seg.cache.append(
                    li,
                    &k.narrow(0, view.start, view.len)?,
                    &v.narrow(0, view.start, view.len)?,
                )?;
                outs.push(self.attention(&q.narrow(0, view.start, view.len)?, &keys, &values, view.past)?);
            }
            let attn = if outs.len() == 1 { outs.pop().expect("one segment") } else { Tensor::cat(&outs, 0)? };
            x = (x + layer.o.forward(&attn, &views)?)?;
            let h = rms_norm(&x, &layer.post_norm, cfg.rms_norm_eps)?;
            let act = (layer.gate.forward(&h, &views)?.silu()? * layer.up.forward(&h, &views)?)?;
            x = (x + layer.down.forward(&act, &views)?)?;
        }
        for (seg, view) in ctx.segments.iter_mut().zip(&views) {
            seg.cache.commit(view.len);
        }
        let x = if ctx.all_logits {
            x
        } else {
            let last: Vec<u32> = views.iter().map(|v| (v.start + v.len - 1) as u32).collect();
            x.index_select(&Tensor::new(last.as_slice(), &Device::Cpu)?, 0)?
        };
        let x = rms_norm(&x, &self.norm, cfg.rms_norm_eps)?;
        self.lm_head.forward(&x)
    }

    /// `q`: `[new, heads, head_dim]`; `keys`/`values`: `[kv_heads, past + new, head_dim]`.
    fn attention(&self, q: &Tensor, keys: &Tensor, values: &Tensor, past: usize) -> Result<Tensor> {
        let cfg = &self.cfg;
        let new = q.dim(0)?;
        let total = keys.dim(1)?;
        let group = cfg.num_heads / cfg.num_kv_heads;
        // Heads h = kv * group + g share KV head `kv`: fold the group into the query rows.
        let q = q.transpose(0, 1)?.contiguous()?.reshape((cfg.num_kv_heads, group * new, cfg.head_dim))?;
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        let mut scores = q.matmul(&keys.t()?)?.affine(scale, 0.0)?;
        if new > 1 || cfg.sliding_window.is_some_and(|w| total > w) {
            let mask = causal_mask(group, new, past, total, cfg.sliding_window)?;
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = softmax_last(&scores)?;
        let out = probs.matmul(values)?; // [kv, group * new, head_dim]
        Ok(out
            .reshape((cfg.num_heads, new, cfg.head_dim))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((new, cfg.num_heads * cfg.head_dim))?)
    }
}

fn causal_mask(group: usize, new: usize, past: usize, total: usize, window: Option<usize>) -> Result<Tensor> {
    let mut data = Vec::with_capacity(group * new * total);
    for _ in 0..group {
        for i in 0..new {
            let pos = past + i;
            for j in 0..total {
                let visible = j <= pos && window.is_none_or(|w| pos - j < w);
                data.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Tensor::from_vec(data, (group * new, total), &Device::Cpu)?)
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Rotate-half RoPE on `[tokens, heads, head_dim]` with `cos`/`sin` `[tokens, 1, head_dim / 2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let r1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let r2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
}

fn rope_tables(cfg: &ModelConfig) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32).collect();
    let inv = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
    let t = Tensor::arange(0u32, cfg.context_length as u32, &Device::Cpu)?.to_dtype(DType::F32)?.reshape((cfg.context_length, 1))?;
    let freqs = t.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}
