//! Reading tensors from GGUF files and safetensors, under the Hugging Face names the models use.

use crate::error::{io_err, Result};
use crate::quant::{BlockKind, QuantMatrix};
use crate::EngineError;
use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A weight as held in memory: f32, or still in its quantisation blocks (matrices only).
pub(crate) enum Weight {
    Dense(Tensor),
    Quant(QuantMatrix),
}

impl Weight {
    pub(crate) fn dims(&self) -> Vec<usize> {
        match self {
            Weight::Dense(t) => t.dims().to_vec(),
            Weight::Quant(q) => q.dims().to_vec(),
        }
    }

    pub(crate) fn into_dense(self) -> Result<Tensor> {
        match self {
            Weight::Dense(t) => Ok(t),
            Weight::Quant(q) => q.dequantize(),
        }
    }
}

/// Weights by Hugging Face name (`model.layers.0.self_attn.q_proj.weight`), on the CPU.
pub(crate) type TensorMap = HashMap<String, Weight>;

pub(crate) fn read_gguf_content(path: &Path) -> Result<(Content, std::fs::File)> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let content = Content::read(&mut file).map_err(|e| EngineError::Malformed(format!("{}: {e}", path.display())))?;
    Ok((content, file))
}

/// Loads every tensor of a GGUF file under Hugging Face's names. Matrices in a block format our
/// kernels read (Q8_0, Q4_0, Q4_1) stay quantised; everything else is dequantised to f32.
pub(crate) fn load_gguf_tensors(path: &Path, content: &Content, file: &mut std::fs::File) -> Result<TensorMap> {
    let mut map = TensorMap::new();
    for name in content.tensor_infos.keys() {
        let Some(hf) = gguf_to_hf_name(name) else { continue };
        let q = content
            .tensor(file, name, &Device::Cpu)
            .map_err(|e| EngineError::Malformed(format!("{}: tensor {name}: {e}", path.display())))?;
        let dims = q.shape().dims().to_vec();
        if let (Some(kind), [rows, cols]) = (BlockKind::from_ggml(q.dtype()), dims.as_slice()) {
            let data =
                q.data().map_err(|e| EngineError::Malformed(format!("{}: tensor {name}: {e}", path.display())))?;
            map.insert(hf, Weight::Quant(QuantMatrix::new(kind, *rows, *cols, data.into_owned())?));
            continue;
        }
        let t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| EngineError::Malformed(format!("{}: cannot dequantise {name}: {e}", path.display())))?;
        map.insert(hf, Weight::Dense(t.to_dtype(DType::F32)?));
    }
    Ok(map)
}

/// Loads every `*.safetensors` file in a directory, converting to f32.
pub(crate) fn load_safetensors_dir(dir: &Path) -> Result<TensorMap> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EngineError::Malformed(format!("{}: no *.safetensors file", dir.display())));
    }
    let mut map = TensorMap::new();
    for file in files {
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| EngineError::Malformed(format!("{}: {e}", file.display())))?;
        for (name, t) in tensors {
            map.insert(name, Weight::Dense(t.to_dtype(DType::F32)?));
        }
    }
    Ok(map)
}

fn gguf_to_hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_owned());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = tail.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// llama.cpp's converter permutes the rows of Q and K of Llama models so that RoPE rotates adjacent
/// pairs; we rotate halves (as Hugging Face does) so that LoRA deltas, which are in Hugging Face's row
/// order, add up. This undoes the permutation: rows (head, i, pair) -> (head, pair, i).
pub(crate) fn unpermute_weight(w: Weight, n_heads: usize) -> Result<Weight> {
    match w {
        Weight::Dense(t) => Ok(Weight::Dense(unpermute_rope_rows(&t, n_heads)?)),
        Weight::Quant(q) => {
            let rows = q.dims()[0];
            if !rows.is_multiple_of(n_heads * 2) {
                return Err(EngineError::Malformed(format!("{rows} rows cannot be split into {n_heads} RoPE heads")));
            }
            let head_dim = rows / n_heads;
            Ok(Weight::Quant(q.permute_rows(|r| {
                let (head, rem) = (r / head_dim, r % head_dim);
                let (pair, i) = (rem / (head_dim / 2), rem % (head_dim / 2));
                head * head_dim + i * 2 + pair
            })))
        }
    }
}

pub(crate) fn unpermute_rope_rows(t: &Tensor, n_heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    if !rows.is_multiple_of(n_heads * 2) {
        return Err(EngineError::Malformed(format!("{rows} rows cannot be split into {n_heads} RoPE heads")));
    }
    let head_dim = rows / n_heads;
    let rest: usize = dims[1..].iter().product();
    let out = t.reshape((n_heads, head_dim / 2, 2, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)?;
    Ok(out)
}
