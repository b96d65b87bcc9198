//! The decoder written once more in candle's differentiable tensor operations, with the base weights
//! frozen and LoRA factors as the only variables. It computes what `berth-engine`'s forward pass
//! computes (Hugging Face's row order, rotate-half RoPE, grouped-query attention), so that an adapter
//! trained here behaves the same when the engine serves it; a test holds the two to the same logits.

use crate::error::Result;
use crate::TrainError;
use berth_engine::{DenseWeights, ModelConfig};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// The linear modules LoRA adapts, in PEFT's names.
pub const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

fn parent(module: &str) -> &'static str {
    if ["q_proj", "k_proj", "v_proj", "o_proj"].contains(&module) {
        "self_attn"
    } else {
        "mlp"
    }
}

/// `x W^T` for a frozen `W`. Its backward pass gives only the gradient of `x`: candle's matmul would
/// also compute (and add up) the gradient of every base weight, which training LoRA never needs and
/// which costs as much as the product itself.
struct FrozenMatmul {
    /// `[out, in]`.
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("frozen-matmul: f32 input expected") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul: contiguous input expected")
        };
        let x = Tensor::from_slice(&data[start..end], layout.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?))
    }
}

/// One LoRA pair: `A` `[rank, in]`, `B` `[out, rank]`.
pub struct LoraVars {
    pub a: Var,
    pub b: Var,
}

struct Linear {
    w: Tensor,
    bias: Option<Tensor>,
    lora: Option<LoraVars>,
}

impl Linear {
    fn forward(&self, x: &Tensor, scale: f64) -> Result<Tensor> {
        let mut y = frozen_matmul(x, &self.w)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let delta = x.matmul(&l.a.as_tensor().t()?)?.matmul(&l.b.as_tensor().t()?)?;
            y = (y + (delta * scale)?)?;
        }
        Ok(y)
    }
}

fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?)
}

struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    /// q, k, v, o, gate, up, down, in [`TARGETS`] order.
    linears: Vec<Linear>,
}

/// LoRA settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        LoraSettings { rank: 8, alpha: 16.0, targets: TARGETS.iter().map(|s| s.to_string()).collect() }
    }
}

/// A frozen decoder with trainable LoRA factors.
pub struct LoraModel {
    config: ModelConfig,
    embed: Tensor,
    head: Tensor,
    norm: Tensor,
    layers: Vec<Layer>,
    scale: f64,
    settings: LoraSettings,
}

/// Loss of one sequence and how it was made up.
pub struct SequenceLoss {
    /// Sum of the cross-entropy over the targeted tokens (a scalar tensor, differentiable).
    pub loss_sum: Tensor,
    pub targets: usize,
    /// Targeted tokens the model already ranks first.
    pub correct: usize,
}

impl LoraModel {
    /// Builds the model from the base's weights; `A` is drawn as PEFT draws it (Kaiming-uniform, bound
    /// `1/sqrt(in)`) from `seed`, and `B` starts at zero, so the untrained adapter changes nothing.
    pub fn new(weights: &DenseWeights, settings: LoraSettings, seed: u64) -> Result<Self> {
        let cfg = weights.config.clone();
        for t in &settings.targets {
            if !TARGETS.contains(&t.as_str()) {
                return Err(TrainError::Hyperparameters(format!(
                    "'{t}' is not a module LoRA can target; use {}",
                    TARGETS.join(", ")
                )));
            }
        }
        if settings.rank == 0 || settings.rank > 256 {
            return Err(TrainError::Hyperparameters(format!(
                "the LoRA rank {} is out of range 1..=256",
                settings.rank
            )));
        }
        let get = |name: &str| -> Result<Tensor> {
            weights.tensors.get(name).cloned().ok_or_else(|| {
                TrainError::Model(berth_engine::EngineError::Malformed(format!("missing tensor {name}")))
            })
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let embed = get("model.embed_tokens.weight")?;
        let head = weights.tensors.get("lm_head.weight").cloned().unwrap_or_else(|| embed.clone());
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let mut linears = Vec::with_capacity(TARGETS.len());
            for module in TARGETS {
                let stem = format!("{p}.{}.{module}", parent(module));
                let w = get(&format!("{stem}.weight"))?;
                let bias = weights.tensors.get(&format!("{stem}.bias")).cloned();
                let lora = if settings.targets.iter().any(|t| t == module) {
                    let (out, inp) = w.dims2()?;
                    let bound = 1.0 / (inp as f64).sqrt();
                    let a: Vec<f32> =
                        (0..settings.rank * inp).map(|_| rng.random_range(-bound..bound) as f32).collect();
                    Some(LoraVars {
                        a: Var::from_tensor(&Tensor::from_vec(a, (settings.rank, inp), &Device::Cpu)?)?,
                        b: Var::zeros((out, settings.rank), DType::F32, &Device::Cpu)?,
                    })
                } else {
                    None
                };
                linears.push(Linear { w, bias, lora });
            }
            layers.push(Layer {
                input_norm: get(&format!("{p}.input_layernorm.weight"))?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                linears,
            });
        }
        Ok(LoraModel {
            norm: get("model.norm.weight")?,
            config: cfg,
            embed,
            head,
            layers,
            scale: settings.alpha / settings.rank as f64,
            settings,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn settings(&self) -> &LoraSettings {
        &self.settings
    }

    /// Every trainable factor with its PEFT name (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`),
    /// in a fixed order.
    pub fn named_vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (module, lin) in TARGETS.iter().zip(&layer.linears) {
                if let Some(l) = &lin.lora {
                    let stem = format!("base_model.model.model.layers.{i}.{}.{module}", parent(module));
                    out.push((format!("{stem}.lora_A.weight"), &l.a));
                    out.push((format!("{stem}.lora_B.weight"), &l.b));
                }
            }
        }
        out
    }

    /// Sets the factors from tensors by PEFT name (resuming a run).
    pub fn load_vars(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.named_vars() {
            let t = tensors.get(&name).ok_or_else(|| TrainError::Data(format!("checkpoint lacks {name}")))?;
            var.set(t)?;
        }
        Ok(())
    }

    /// Final hidden states `[tokens, hidden]` of sequences packed one after another: each sequence has
    /// its own positions and sees only itself (a block-diagonal causal mask), so packing changes nothing
    /// but the size of the products.
    fn hidden(&self, seqs: &[&[u32]]) -> Result<Tensor> {
        let cfg = &self.config;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let n = tokens.len();
        let ids = Tensor::from_slice(&tokens, n, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let positions: Vec<usize> = lens.iter().flat_map(|&l| 0..l).collect();
        let (cos, sin) = rope_tables(cfg, &positions)?;
        let mask = packed_causal_mask(&lens, cfg.sliding_window)?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        for layer in &self.layers {
            let l = &layer.linears;
            let h = rms_norm(&x, &layer.input_norm, cfg.rms_norm_eps)?;
            let heads = |t: Tensor, count: usize| -> Result<Tensor> {
                Ok(t.reshape((n, count, hd))?.transpose(0, 1)?.contiguous()?)
            };
            let q = rope(&heads(l[0].forward(&h, self.scale)?, nh)?, &cos, &sin)?;
            let k = rope(&heads(l[1].forward(&h, self.scale)?, nkv)?, &cos, &sin)?;
            let v = heads(l[2].forward(&h, self.scale)?, nkv)?;
            let (k, v) = (repeat_kv(k, nh / nkv)?, repeat_kv(v, nh / nkv)?);
            let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(&mask)?;
            let attn = softmax_last(&scores)?.matmul(&v)?;
            let attn = attn.transpose(0, 1)?.contiguous()?.reshape((n, nh * hd))?;
            x = (x + l[3].forward(&attn, self.scale)?)?;
            let h = rms_norm(&x, &layer.post_norm, cfg.rms_norm_eps)?;
            let gate = l[4].forward(&h, self.scale)?.silu()?;
            let up = l[5].forward(&h, self.scale)?;
            x = (x + l[6].forward(&(gate * up)?, self.scale)?)?;
        }
        rms_norm(&x, &self.norm, cfg.rms_norm_eps)
    }

    /// Cross-entropy of predicting each targeted token from the position before it.
    pub fn sequence_loss(&self, tokens: &[u32], targets: &[bool]) -> Result<SequenceLoss> {
        self.packed_loss(&[(tokens, targets)])
    }

    /// The summed loss of several sequences computed in one packed pass.
    pub fn packed_loss(&self, seqs: &[(&[u32], &[bool])]) -> Result<SequenceLoss> {
        let (mut positions, mut labels) = (Vec::new(), Vec::new());
        let mut offset = 0;
        for (tokens, targets) in seqs {
            for i in 1..tokens.len() {
                if targets[i] {
                    positions.push((offset + i - 1) as u32);
                    labels.push(tokens[i]);
                }
            }
            offset += tokens.len();
        }
        if positions.is_empty() {
            return Ok(SequenceLoss { loss_sum: Tensor::zeros((), DType::F32, &Device::Cpu)?, targets: 0, correct: 0 });
        }
        let tokens: Vec<&[u32]> = seqs.iter().map(|(t, _)| *t).collect();
        let hidden = self.hidden(&tokens)?;
        let picked = hidden.index_select(&Tensor::from_slice(&positions, positions.len(), &Device::Cpu)?, 0)?;
        let logits = frozen_matmul(&picked, &self.head)?;
        let labels_t = Tensor::from_slice(&labels, (labels.len(), 1), &Device::Cpu)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &max)?;
        let picked_logit = logits.gather(&labels_t, D::Minus1)?;
        let loss_sum = (lse - picked_logit)?.sum_all()?;
        let argmax: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        let correct = argmax.iter().zip(&labels).filter(|(a, b)| a == b).count();
        Ok(SequenceLoss { loss_sum, targets: labels.len(), correct })
    }

    /// Logits at every position (for checks against the engine).
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let hidden = self.hidden(&[tokens])?;
        Ok(frozen_matmul(&hidden, &self.head)?.to_vec2()?)
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&r)?.broadcast_mul(w)?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// `[kv_heads, n, d]` -> `[kv_heads * rep, n, d]`, each KV head serving `rep` query heads in a row.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (h, n, d) = x.dims3()?;
    Ok(x.unsqueeze(1)?.broadcast_as((h, rep, n, d))?.contiguous()?.reshape((h * rep, n, d))?)
}

/// Rotate-half RoPE on `[heads, n, head_dim]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `cos` and `sin` `[positions, head_dim]`, each frequency written for both halves.
fn rope_tables(cfg: &ModelConfig, positions: &[usize]) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let n = positions.len();
    let mut cos = Vec::with_capacity(n * cfg.head_dim);
    let mut sin = Vec::with_capacity(n * cfg.head_dim);
    for &pos in positions {
        let row: Vec<(f32, f32)> = (0..half)
            .map(|i| {
                let freq = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64);
                let angle = pos as f64 * freq;
                (angle.cos() as f32, angle.sin() as f32)
            })
            .collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|r| r.0));
            sin.extend(row.iter().map(|r| r.1));
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, cfg.head_dim), &Device::Cpu)?,
        Tensor::from_vec(sin, (n, cfg.head_dim), &Device::Cpu)?,
    ))
}

/// `[n, n]` additive mask: position `i` sees `j` when both are in the same sequence and `j <= i`
/// (within the sliding window, if any).
fn packed_causal_mask(lens: &[usize], window: Option<usize>) -> Result<Tensor> {
    let n: usize = lens.iter().sum();
    let mut start = vec![0usize; n];
    let mut offset = 0;
    for &l in lens {
        start[offset..offset + l].fill(offset);
        offset += l;
    }
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            let start = &start;
            (0..n).map(move |j| {
                let visible = j <= i && j >= start[i] && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (n, n), &Device::Cpu)?)
}
