//! Writing an adapter in PEFT's format (`adapter_config.json` and `adapter_model.safetensors`), so that
//! what Berth trains also loads in `peft`, vLLM or llama.cpp's converter.

use crate::error::{io_err, Result};
use crate::lora_model::LoraModel;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Writes the model's current factors into `dir` (which must exist).
pub fn write_adapter(model: &LoraModel, base_name: &str, dir: &Path) -> Result<()> {
    let s = model.settings();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": s.rank,
        "lora_alpha": s.alpha,
        "lora_dropout": 0.0,
        "target_modules": s.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "use_rslora": false,
        "use_dora": false,
    });
    let path = dir.join(CONFIG_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap_or_default()).map_err(|e| io_err(&path, e))?;
    let tensors: HashMap<String, Tensor> =
        model.named_vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    let path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &path).map_err(|e| io_err(&path, e))
}
