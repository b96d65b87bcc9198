//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`). The delta of each target
//! module is kept as its two low-rank factors and applied inside [`crate::linear::Linear`], so one base
//! model serves many adapters.

use crate::error::{io_err, Result};
use crate::{EngineError, ModelConfig};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Identifies an adapter registered with an engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdapterId(pub String);

/// The linear modules of a decoder layer that LoRA can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub(crate) const ALL: [Target; 7] =
        [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    pub(crate) fn module_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            _ => "mlp",
        }
    }

    /// (out, in) of the module's weight.
    fn shape(self, c: &ModelConfig) -> (usize, usize) {
        let q = c.num_heads * c.head_dim;
        let kv = c.num_kv_heads * c.head_dim;
        match self {
            Target::Q => (q, c.hidden_size),
            Target::K | Target::V => (kv, c.hidden_size),
            Target::O => (c.hidden_size, q),
            Target::Gate | Target::Up => (c.intermediate_size, c.hidden_size),
            Target::Down => (c.hidden_size, c.intermediate_size),
        }
    }
}

/// `x -> scale * (x A^T) B^T` for one module, the factors kept as plain f32 rows (the only copy).
#[derive(Debug)]
pub(crate) struct LoraPair {
    /// `[rank, in]`.
    pub a: Vec<f32>,
    /// `B` transposed, `[rank, out]`: the update of a row is a sum of `rank` scaled rows of it.
    pub b_t: Vec<f32>,
    pub scale: f32,
    pub rank: usize,
}

impl LoraPair {
    fn new(a: Tensor, b: Tensor, scale: f64) -> crate::error::Result<Self> {
        let rank = a.dim(0)?;
        Ok(LoraPair {
            a: a.flatten_all()?.to_vec1()?,
            b_t: b.t()?.flatten_all()?.to_vec1()?,
            scale: scale as f32,
            rank,
        })
    }

    pub(crate) fn bytes(&self) -> usize {
        (self.a.len() + self.b_t.len()) * std::mem::size_of::<f32>()
    }

    /// Adds `scale * (x A^T) B^T` to `y` for `rows` rows (`x`: `[rows, in]`, `y`: `[rows, out]`). Each
    /// factor row is read once for all rows: the rows of one adapter are computed as a group.
    pub(crate) fn add_delta(&self, x: &[f32], y: &mut [f32], rows: usize) {
        self.add_delta_on(crate::isa::isa(), x, y, rows)
    }

    /// [`Self::add_delta`] with the kernels of `isa` (which the CPU must have).
    pub(crate) fn add_delta_on(&self, isa: crate::isa::Isa, x: &[f32], y: &mut [f32], rows: usize) {
        #[cfg(target_arch = "x86_64")]
        if isa == crate::isa::Isa::Avx512 {
            // SAFETY: `isa` comes from `Isa::available()`, which checked that the CPU has AVX-512F and FMA.
            #[allow(unsafe_code)]
            return unsafe { self.add_delta_avx512(x, y, rows) };
        }
        self.add_delta_plain(x, y, rows)
    }

    /// The same loops compiled for AVX-512, where the dot products vectorise to full width.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn add_delta_avx512(&self, x: &[f32], y: &mut [f32], rows: usize) {
        self.add_delta_plain(x, y, rows)
    }

    #[inline(always)]
    fn add_delta_plain(&self, x: &[f32], y: &mut [f32], rows: usize) {
        let inp = x.len() / rows;
        let out = y.len() / rows;
        let r = self.rank;
        let mut t = vec![0f32; rows * r];
        for (k, ak) in self.a.chunks_exact(inp).enumerate() {
            for (i, xr) in x.chunks_exact(inp).enumerate() {
                t[i * r + k] = dot(xr, ak) * self.scale;
            }
        }
        for (yr, ti) in y.chunks_exact_mut(out).zip(t.chunks_exact(r)) {
            for (&tk, bk) in ti.iter().zip(self.b_t.chunks_exact(out)) {
                for (yo, b) in yr.iter_mut().zip(bk) {
                    *yo += tk * b;
                }
            }
        }
    }
}

/// A dot product with independent lanes, so that it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..16 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[derive(Debug, Deserialize)]
struct AdapterConfig {
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    rank_pattern: HashMap<String, usize>,
    #[serde(default)]
    alpha_pattern: HashMap<String, f64>,
    #[serde(default)]
    fan_in_fan_out: bool,
}

/// A LoRA adapter, checked against the shapes of the base model it will run on.
#[derive(Debug)]
pub struct LoraAdapter {
    pairs: HashMap<(usize, Target), LoraPair>,
    rank: usize,
}

impl LoraAdapter {
    /// Loads a PEFT adapter directory and checks every tensor against `config`.
    pub fn load(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
        let cfg: AdapterConfig =
            serde_json::from_str(&text).map_err(|e| EngineError::Malformed(format!("{}: {e}", cfg_path.display())))?;
        if cfg.use_dora {
            return Err(EngineError::Unsupported("DoRA adapters (use_dora = true)".into()));
        }
        if cfg.fan_in_fan_out {
            return Err(EngineError::Unsupported("adapters with fan_in_fan_out = true".into()));
        }
        let weights_path = dir.join("adapter_model.safetensors");
        if !weights_path.exists() {
            return Err(io_err(&weights_path, "not found (only safetensors adapters are supported)"));
        }
        let malformed = |e: candle_core::Error| EngineError::Malformed(format!("{}: {e}", weights_path.display()));
        // Mapped, and read one tensor at a time straight into the adapter's own rows: loading costs no
        // more resident memory than the factors themselves.
        // SAFETY: the file is only read; an adapter file changed while loading gives wrong weights
        // (caught by the shape checks at worst), not memory unsafety in practice.
        #[allow(unsafe_code)]
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights_path) }.map_err(malformed)?;
        let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
        Self::from_tensors(&cfg, &names, |name| st.load(name, &Device::Cpu).map_err(malformed), config)
    }

    fn from_tensors(
        cfg: &AdapterConfig,
        names: &[String],
        load: impl Fn(&str) -> Result<Tensor>,
        config: &ModelConfig,
    ) -> Result<Self> {
        let mut pairs = HashMap::new();
        let mut used = 0;
        for layer in 0..config.num_layers {
            for target in Target::ALL {
                let stem = format!("model.layers.{layer}.{}.{}", target.parent(), target.module_name());
                let find = |kind: &str| names.iter().find(|name| name.ends_with(&format!("{stem}.{kind}.weight")));
                let (Some(a), Some(b)) = (find("lora_A"), find("lora_B")) else { continue };
                let (a, b) = (load(a)?, load(b)?);
                used += 2;
                let (out_dim, in_dim) = target.shape(config);
                let r = a.dim(0)?;
                if a.dims() != [r, in_dim] || b.dims() != [out_dim, r] {
                    return Err(EngineError::AdapterMismatch(format!(
                        "{stem}: lora_A {:?} and lora_B {:?} do not fit a [{out_dim}, {in_dim}] weight",
                        a.dims(),
                        b.dims()
                    )));
                }
                let rank = pattern_value(&cfg.rank_pattern, &stem).unwrap_or(cfg.r);
                let alpha = pattern_value(&cfg.alpha_pattern, &stem).unwrap_or(cfg.lora_alpha);
                let scale = if cfg.use_rslora { alpha / (rank as f64).sqrt() } else { alpha / rank as f64 };
                pairs.insert((layer, target), LoraPair::new(a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?, scale)?);
            }
        }
        let lora_tensors = names.iter().filter(|k| k.contains("lora_")).count();
        if lora_tensors > used {
            let stray: Vec<_> = names
                .iter()
                .filter(|k| k.contains("lora_") && !Target::ALL.iter().any(|t| k.contains(t.module_name())))
                .take(3)
                .cloned()
                .collect();
            return Err(EngineError::AdapterMismatch(format!(
                "{} LoRA tensors target modules or layers the base model does not have (e.g. {stray:?}); \
                 supported targets: q/k/v/o/gate/up/down_proj",
                lora_tensors - used
            )));
        }
        if pairs.is_empty() {
            return Err(EngineError::AdapterMismatch("the adapter has no LoRA weights for this model".into()));
        }
        Ok(LoraAdapter { pairs, rank: cfg.r })
    }

    pub(crate) fn pair(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of adapted modules.
    pub fn num_modules(&self) -> usize {
        self.pairs.len()
    }

    /// Bytes the adapter's factors take in memory (f32).
    pub fn bytes(&self) -> usize {
        self.pairs.values().map(LoraPair::bytes).sum()
    }
}

/// PEFT's rank/alpha patterns are keyed by a suffix of the module name (`layers.3.self_attn.q_proj`).
fn pattern_value<T: Copy>(patterns: &HashMap<String, T>, stem: &str) -> Option<T> {
    patterns
        .iter()
        .filter(|(key, _)| stem.ends_with(key.as_str()) || stem.contains(&format!(".{key}")))
        .max_by_key(|(key, _)| key.len())
        .map(|(_, v)| *v)
}
