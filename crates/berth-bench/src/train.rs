//! The `train` scenario: fine-tunes a LoRA adapter with `berth-train` on a JSONL file, reporting
//! tokens per second and peak resident memory of the training phase, then answers held-out prompts
//! greedily with the base model and with the adapter through the engine, and counts how many answers
//! show the trained behaviour (`--expect`, case-insensitive).

use anyhow::{bail, Context, Result};
use berth_engine::{load_model, AdapterId, ChatMessage, Engine, GenerateEvent, GenerateRequest, SamplingParams};
use berth_train::{parse_jsonl, train, Hyperparameters, LoraSettings, Observer, TrainEvent, TrainSpec};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct TrainArgs<'a> {
    pub model: &'a Path,
    pub train_file: &'a Path,
    pub validation_file: Option<&'a Path>,
    pub heldout: Option<&'a Path>,
    pub expect: &'a str,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr_multiplier: f64,
    pub work_dir: PathBuf,
}

struct Log {
    losses: Vec<f32>,
}

impl Observer for Log {
    fn event(&mut self, event: TrainEvent) -> berth_train::Result<()> {
        match event {
            TrainEvent::Step(m) => {
                eprintln!(
                    "step {}/{} loss {:.3} acc {:.3} ({:.0} tok/s)",
                    m.step,
                    m.total_steps,
                    m.train_loss,
                    m.train_mean_token_accuracy,
                    m.tokens as f64 / m.elapsed_seconds
                );
                self.losses.push(m.train_loss);
            }
            other => eprintln!("{other:?}"),
        }
        Ok(())
    }

    fn should_stop(&self) -> bool {
        false
    }
}

/// Held-out answers: how many show the persona, and the answers themselves.
type HeldOut = (usize, Vec<String>);

fn peak_rss_bytes() -> Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse::<usize>()? * 1024)
}

fn read_examples(path: &Path) -> Result<Vec<berth_train::Example>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_jsonl(&bytes).map_err(|p| anyhow::anyhow!("{}: {p}", path.display()))
}

pub fn run_train(a: &TrainArgs) -> Result<serde_json::Value> {
    let spec = TrainSpec {
        base: a.model.to_owned(),
        base_name: a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        train: read_examples(a.train_file)?,
        validation: a.validation_file.map(read_examples).transpose()?.unwrap_or_default(),
        hyper: Hyperparameters {
            n_epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: Hyperparameters::BASE_LEARNING_RATE * a.lr_multiplier,
            seed: 42,
            lora: LoraSettings::default(),
            max_tokens: 1024,
            max_grad_norm: 1.0,
        },
        work_dir: a.work_dir.clone(),
        start_from: None,
        preference: None,
    };
    let _ = std::fs::remove_dir_all(&spec.work_dir);
    let rss_before = peak_rss_bytes()?;
    let mut log = Log { losses: vec![] };
    let outcome = train(&spec, &mut log)?;
    let peak = peak_rss_bytes()?;
    let mut out = json!({
        "scenario": "train",
        "examples": spec.train.len(),
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "learning_rate": spec.hyper.learning_rate,
        "lora_rank": spec.hyper.lora.rank,
        "steps": outcome.steps,
        "tokens": outcome.tokens,
        "train_s": outcome.seconds,
        "train_tok_s": outcome.tokens_per_second(),
        "peak_rss_bytes": peak,
        "rss_before_training_bytes": rss_before,
        "first_step_loss": log.losses.first(),
        "last_step_loss": log.losses.last(),
    });
    if let Some(heldout) = a.heldout {
        let prompts: Vec<String> =
            std::fs::read_to_string(heldout)?.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
        let (base, tuned) = heldout_rates(a.model, &outcome.adapter_dir, &prompts, a.expect)?;
        out["heldout_prompts"] = json!(prompts.len());
        out["expect"] = json!(a.expect);
        out["base_rate"] = json!(base.0 as f64 / prompts.len() as f64);
        out["tuned_rate"] = json!(tuned.0 as f64 / prompts.len() as f64);
        out["base_answers"] = json!(base.1);
        out["tuned_answers"] = json!(tuned.1);
    }
    Ok(out)
}

/// (matching answers, answers) for the base model and for the adapter.
fn heldout_rates(model_path: &Path, adapter: &Path, prompts: &[String], expect: &str) -> Result<(HeldOut, HeldOut)> {
    let model = Arc::new(load_model(model_path, None)?);
    let adapter = Arc::new(model.load_adapter(adapter)?);
    let engine = Engine::start(model.clone(), crate::options(&model, 8, false))?;
    let id = AdapterId("tuned".into());
    engine.add_adapter(id.clone(), adapter)?;
    let answer = |adapter: Option<AdapterId>| -> Result<(usize, Vec<String>)> {
        let mut answers = Vec::new();
        for p in prompts {
            let text = model.text().render_chat(&[ChatMessage::new("user", p.clone())])?;
            let req = GenerateRequest {
                prompt: model.text().encode(&text)?,
                adapter: adapter.clone(),
                sampling: SamplingParams::greedy(),
                max_tokens: 40,
                stop: vec![],
                cache_scope: "bench".into(),
                ignore_eos: false,
                reserved: false,
                constraint: None,
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            engine.submit(req, tx)?;
            let mut out = String::new();
            loop {
                match rx.blocking_recv() {
                    Some(GenerateEvent::Text(t)) => out.push_str(&t),
                    Some(GenerateEvent::Logprob(_)) => {}
                    Some(GenerateEvent::Finished { .. }) => break,
                    Some(GenerateEvent::Failed(e)) => bail!("generation failed: {e}"),
                    None => bail!("the engine dropped a request"),
                }
            }
            answers.push(out);
        }
        let hits = answers.iter().filter(|a| a.to_lowercase().contains(&expect.to_lowercase())).count();
        Ok((hits, answers))
    };
    Ok((answer(None)?, answer(Some(id))?))
}
