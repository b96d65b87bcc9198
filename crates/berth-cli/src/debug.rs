//! `berth debug logits` and `berth debug tokenize`: the engine's logits and tokenizer, for reference
//! checks from outside. `BERTH_ISA` picks the kernels (`kernels` in the output says which ran).

use anyhow::{Context, Result};
use berth_engine::load_model;
use std::path::Path;

pub fn logits(model: &Path, adapter: Option<&Path>, tokens: Option<&str>, text: Option<&str>) -> Result<()> {
    let m = load_model(model, None).with_context(|| format!("loading {}", model.display()))?;
    let ids: Vec<u32> = match (tokens, text) {
        (Some(t), _) => t
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .context("--tokens must be comma-separated ids")?,
        (None, Some(text)) => m.text().encode(text)?,
        (None, None) => anyhow::bail!("give --tokens or --text"),
    };
    let adapter = adapter.map(|a| m.load_adapter(a)).transpose().context("loading the adapter")?;
    let logits = m.logits(&ids, adapter.as_ref())?;
    let kernels = berth_engine::cpu().isa.name();
    let out = serde_json::json!({"tokens": ids, "vocab": m.config().vocab_size, "kernels": kernels, "logits": logits});
    println!("{out}");
    Ok(())
}

pub fn tokenize(model: &Path, inp: &Path) -> Result<()> {
    let text = berth_engine::text_model_of_gguf(model).with_context(|| format!("loading {}", model.display()))?;
    let raw = std::fs::read_to_string(inp).with_context(|| format!("reading {}", inp.display()))?;
    let mut out = Vec::new();
    for case in raw.split("\n__ggml_vocab_test__\n") {
        out.push(text.encode_plain(case)?);
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
