//! The training loop: epochs over shuffled examples, gradient accumulation over a batch (one
//! sequence per backward pass), AdamW with warm-up and linear decay, gradient clipping, per-step
//! metrics, and a checkpoint at the end of every epoch from which an interrupted run resumes.
//!
//! Two objectives share it: supervised fine-tuning (cross-entropy on the assistant's tokens) and DPO
//! (Rafailov et al. 2023). For each preference pair DPO minimises `-log sigmoid(beta * margin)`, the
//! margin being how much more the policy prefers the preferred answer than the reference does:
//! `(log p(y_w) - log p_ref(y_w)) - (log p(y_l) - log p_ref(y_l))`. The reference is the frozen
//! starting model (the base model, or the adapter a continued job starts from), scored once before
//! the first step.

use crate::dataset::{tokenize, Example, PreferenceExample, TokenizedExample};
use crate::error::{io_err, Result};
use crate::lora_model::{LoraModel, LoraSettings};
use crate::optimizer::{AdamW, AdamWConfig};
use crate::peft::write_adapter;
use crate::TrainError;
use berth_engine::load_dense_weights;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    pub n_epochs: usize,
    /// Examples per optimiser step; their gradients are accumulated one sequence at a time.
    pub batch_size: usize,
    /// Peak learning rate (after warm-up).
    pub learning_rate: f64,
    pub seed: u64,
    pub lora: LoraSettings,
    /// Longest example, in tokens.
    pub max_tokens: usize,
    /// Clip the global gradient norm to this.
    pub max_grad_norm: f64,
}

impl Hyperparameters {
    /// The learning rate a multiplier of 1 means: LoRA factors move fast at this scale without
    /// diverging on the small models Berth trains on a CPU.
    pub const BASE_LEARNING_RATE: f64 = 1e-3;

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Hyperparameters(m));
        if !(1..=50).contains(&self.n_epochs) {
            return bad(format!("n_epochs must be between 1 and 50, not {}", self.n_epochs));
        }
        if !(1..=256).contains(&self.batch_size) {
            return bad(format!("batch_size must be between 1 and 256, not {}", self.batch_size));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad(format!("the learning rate {} is out of range", self.learning_rate));
        }
        Ok(())
    }
}

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// The base model (GGUF file or Hugging Face directory).
    pub base: PathBuf,
    /// The name written into `adapter_config.json` as `base_model_name_or_path`.
    pub base_name: String,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub hyper: Hyperparameters,
    /// Where checkpoints (`epoch-<n>/`) and the resume state go.
    pub work_dir: PathBuf,
    /// A PEFT adapter to continue from (continuous fine-tuning): its factors replace the fresh ones.
    /// It must have the rank, scale and target modules of `hyper.lora`.
    pub start_from: Option<PathBuf>,
    /// Train on preference pairs (DPO) instead of `train` and `validation`.
    pub preference: Option<Preference>,
}

/// A DPO run's data and strength.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    /// How far the policy may move from the reference: larger keeps it closer.
    pub beta: f64,
    pub train: Vec<PreferenceExample>,
    pub validation: Vec<PreferenceExample>,
}

/// A pair tokenised, with the reference model's log-probabilities of both answers.
struct Pair {
    preferred: TokenizedExample,
    non_preferred: TokenizedExample,
    reference: (f64, f64),
}

/// What a run trains on.
enum Data {
    Supervised { train: Vec<TokenizedExample>, valid: Vec<TokenizedExample> },
    Preference { beta: f64, train: Vec<Pair>, valid: Vec<Pair> },
}

impl Data {
    fn train_len(&self) -> usize {
        match self {
            Data::Supervised { train, .. } => train.len(),
            Data::Preference { train, .. } => train.len(),
        }
    }

    fn valid_len(&self) -> usize {
        match self {
            Data::Supervised { valid, .. } => valid.len(),
            Data::Preference { valid, .. } => valid.len(),
        }
    }

    fn train_tokens(&self) -> usize {
        match self {
            Data::Supervised { train, .. } => train.iter().map(|e| e.tokens.len()).sum(),
            Data::Preference { train, .. } => {
                train.iter().map(|p| p.preferred.tokens.len() + p.non_preferred.tokens.len()).sum()
            }
        }
    }

    /// Loss and accuracy (token accuracy; for DPO, the share of pairs ranked right) over validation
    /// examples `picked`, without gradients.
    fn evaluate(&self, model: &LoraModel, picked: &[usize]) -> Result<(f32, f32)> {
        match self {
            Data::Supervised { valid, .. } => evaluate(model, picked.iter().map(|&i| &valid[i]).collect()),
            Data::Preference { beta, valid, .. } => {
                let (mut loss, mut right) = (0f64, 0usize);
                for &i in picked {
                    let (l, margin) = dpo_loss(model, &valid[i], *beta)?;
                    loss += l.detach().to_scalar::<f32>()? as f64;
                    right += usize::from(margin > 0.0);
                }
                let n = picked.len().max(1);
                Ok(((loss / n as f64) as f32, right as f32 / n as f32))
            }
        }
    }
}

/// A sequence's log-probability of its targeted tokens (minus its summed cross-entropy).
fn log_prob(model: &LoraModel, e: &TokenizedExample) -> Result<Tensor> {
    Ok(model.sequence_loss(&e.tokens, &e.targets)?.loss_sum.neg()?)
}

/// One pair's DPO loss (a scalar tensor that carries gradients) and its margin: how much more the
/// policy prefers the preferred answer than the reference does, in nats.
fn dpo_loss(model: &LoraModel, pair: &Pair, beta: f64) -> Result<(Tensor, f32)> {
    let (ref_w, ref_l) = pair.reference;
    let margin = ((log_prob(model, &pair.preferred)? - log_prob(model, &pair.non_preferred)?)? - (ref_w - ref_l))?;
    let m = margin.to_scalar::<f32>()?;
    // -log sigmoid(beta * margin) = softplus(-beta * margin), written so that it never overflows.
    let z = (margin * -beta)?;
    let loss = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok((loss, m))
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub train_loss: f32,
    pub train_mean_token_accuracy: f32,
    pub valid_loss: Option<f32>,
    pub valid_mean_token_accuracy: Option<f32>,
    pub learning_rate: f64,
    /// Tokens passed forward and backward so far in this process.
    pub tokens: usize,
    pub elapsed_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub epoch: usize,
    pub step: usize,
    /// Holds a PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`).
    pub dir: PathBuf,
    /// Mean training loss over the epoch's targeted tokens.
    pub train_loss: f32,
    pub train_mean_token_accuracy: f32,
    pub full_valid_loss: Option<f32>,
    pub full_valid_mean_token_accuracy: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Data tokenised and model built; `resumed_after_epoch` is set when earlier epochs were restored.
    Prepared {
        examples: usize,
        train_tokens: usize,
        total_steps: usize,
        resumed_after_epoch: Option<usize>,
    },
    Step(StepMetrics),
    Checkpoint(Checkpoint),
}

/// Receives progress, and may stop the run.
pub trait Observer {
    fn event(&mut self, event: TrainEvent) -> Result<()>;
    fn should_stop(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The last epoch's checkpoint.
    pub adapter_dir: PathBuf,
    pub steps: usize,
    pub tokens: usize,
    pub seconds: f64,
}

impl TrainOutcome {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// Most tokens packed into one forward and backward pass (see [`packs`]).
const PACK_TOKENS: usize = 128;
/// Validation examples scored after each step.
const VALID_WINDOW: usize = 2;
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Runs (or resumes) training.
pub fn train(spec: &TrainSpec, observer: &mut dyn Observer) -> Result<TrainOutcome> {
    let h = &spec.hyper;
    h.validate()?;
    let weights = load_dense_weights(&spec.base)?;
    let tokenized = |set: &[Example]| -> Result<Vec<TokenizedExample>> {
        set.iter().map(|e| tokenize(e, &weights.text, h.max_tokens)).collect()
    };
    let pairs = |set: &[PreferenceExample]| -> Result<Vec<(TokenizedExample, TokenizedExample)>> {
        set.iter()
            .map(|p| {
                Ok((
                    tokenize(&p.preferred, &weights.text, h.max_tokens)?,
                    tokenize(&p.non_preferred, &weights.text, h.max_tokens)?,
                ))
            })
            .collect()
    };
    let (sft, dpo) = match &spec.preference {
        None => ((tokenized(&spec.train)?, tokenized(&spec.validation)?), None),
        Some(p) => ((Vec::new(), Vec::new()), Some((p.beta, pairs(&p.train)?, pairs(&p.validation)?))),
    };
    let model = LoraModel::new(&weights, h.lora.clone(), h.seed)?;
    drop(weights.tensors);
    let named = model.named_vars();
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let vars: Vec<_> = named.iter().map(|(_, v)| *v).collect();
    let mut opt = AdamW::new(AdamWConfig::default(), &vars)?;

    std::fs::create_dir_all(&spec.work_dir).map_err(|e| io_err(&spec.work_dir, e))?;
    let resumed = latest_epoch(&spec.work_dir);
    // The starting adapter is loaded even when resuming: DPO's reference is scored on it.
    if let Some(dir) = &spec.start_from {
        check_starting_adapter(dir, &h.lora)?;
        let path = dir.join(crate::peft::WEIGHTS_FILE);
        model.load_vars(&candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| io_err(&path, e))?)?;
    }
    let data = match dpo {
        None => Data::Supervised { train: sft.0, valid: sft.1 },
        Some((beta, train, valid)) => {
            let score = |set: Vec<(TokenizedExample, TokenizedExample)>| -> Result<Vec<Pair>> {
                set.into_iter()
                    .map(|(preferred, non_preferred)| {
                        if observer.should_stop() {
                            return Err(TrainError::Cancelled);
                        }
                        let w = log_prob(&model, &preferred)?.detach().to_scalar::<f32>()? as f64;
                        let l = log_prob(&model, &non_preferred)?.detach().to_scalar::<f32>()? as f64;
                        Ok(Pair { preferred, non_preferred, reference: (w, l) })
                    })
                    .collect()
            };
            Data::Preference { beta, train: score(train)?, valid: score(valid)? }
        }
    };
    if data.train_len() == 0 {
        return Err(TrainError::Data("the training file has no examples".into()));
    }
    let steps_per_epoch = data.train_len().div_ceil(h.batch_size);
    let total_steps = steps_per_epoch * h.n_epochs;
    if let Some(epoch) = resumed {
        let dir = epoch_dir(&spec.work_dir, epoch);
        let load =
            |f: &str| candle_core::safetensors::load(dir.join(f), &Device::Cpu).map_err(|e| io_err(&dir.join(f), e));
        model.load_vars(&load(crate::peft::WEIGHTS_FILE)?)?;
        opt.restore(&names, &load(OPTIMIZER_FILE)?, epoch * steps_per_epoch)?;
    }
    observer.event(TrainEvent::Prepared {
        examples: data.train_len(),
        train_tokens: data.train_tokens(),
        total_steps,
        resumed_after_epoch: resumed,
    })?;

    let started = Instant::now();
    let mut tokens = 0usize;
    let mut valid_cursor = 0usize;
    let eval_every = (total_steps / 20).max(1);
    let first_epoch = resumed.map_or(1, |e| e + 1);
    for epoch in first_epoch..=h.n_epochs {
        let mut order: Vec<usize> = (0..data.train_len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(h.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let (mut epoch_loss, mut epoch_targets, mut epoch_correct) = (0f64, 0usize, 0usize);
        for batch in order.chunks(h.batch_size) {
            let step = opt.steps() + 1;
            let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut accumulate = |loss: Tensor| -> Result<()> {
                let store = loss.backward()?;
                for (slot, var) in grads.iter_mut().zip(&vars) {
                    if let Some(g) = store.get(var.as_tensor()) {
                        *slot = Some(match slot.take() {
                            Some(acc) => (acc + g)?,
                            None => g.clone(),
                        });
                    }
                }
                Ok(())
            };
            // The loss summed over the batch, what it is averaged over (targeted tokens; pairs for
            // DPO), and how many of those were right.
            let (mut loss_sum, mut correct) = (0f64, 0usize);
            let batch_targets = match &data {
                Data::Supervised { train, .. } => {
                    let batch_targets: usize = batch.iter().map(|&i| train[i].target_count()).sum::<usize>().max(1);
                    for pack in packs(batch.iter().map(|&i| &train[i]).collect()) {
                        if observer.should_stop() {
                            return Err(TrainError::Cancelled);
                        }
                        let seqs: Vec<(&[u32], &[bool])> =
                            pack.iter().map(|e| (&e.tokens[..], &e.targets[..])).collect();
                        let out = model.packed_loss(&seqs)?;
                        tokens += seqs.iter().map(|s| s.0.len()).sum::<usize>();
                        if out.targets == 0 {
                            continue;
                        }
                        loss_sum += out.loss_sum.to_scalar::<f32>()? as f64;
                        correct += out.correct;
                        accumulate((out.loss_sum / batch_targets as f64)?)?;
                    }
                    batch_targets
                }
                Data::Preference { beta, train, .. } => {
                    for &i in batch {
                        if observer.should_stop() {
                            return Err(TrainError::Cancelled);
                        }
                        let pair = &train[i];
                        let (loss, margin) = dpo_loss(&model, pair, *beta)?;
                        tokens += pair.preferred.tokens.len() + pair.non_preferred.tokens.len();
                        loss_sum += loss.to_scalar::<f32>()? as f64;
                        correct += usize::from(margin > 0.0);
                        accumulate((loss / batch.len() as f64)?)?;
                    }
                    batch.len()
                }
            };
            let train_loss = (loss_sum / batch_targets as f64) as f32;
            if !train_loss.is_finite() {
                return Err(TrainError::Diverged { step, loss: train_loss });
            }
            let grads: Vec<Tensor> = grads
                .into_iter()
                .zip(&vars)
                .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
                .collect::<candle_core::Result<_>>()?;
            let grads = clip(grads, h.max_grad_norm)?;
            let lr = learning_rate(h.learning_rate, step, total_steps);
            opt.step(&vars, &grads, lr)?;
            epoch_loss += loss_sum;
            epoch_targets += batch_targets;
            epoch_correct += correct;

            let valid_len = data.valid_len();
            let (valid_loss, valid_acc) = if valid_len > 0 && (step % eval_every == 0 || step == total_steps) {
                // A rotating window of a couple of examples keeps the per-step figure cheap; the full
                // set is scored at the end of each epoch.
                let picked: Vec<usize> =
                    (0..VALID_WINDOW.min(valid_len)).map(|k| (valid_cursor + k) % valid_len).collect();
                valid_cursor = (valid_cursor + picked.len()) % valid_len;
                let (l, a) = data.evaluate(&model, &picked)?;
                (Some(l), Some(a))
            } else {
                (None, None)
            };
            observer.event(TrainEvent::Step(StepMetrics {
                step,
                total_steps,
                epoch,
                train_loss,
                train_mean_token_accuracy: correct as f32 / batch_targets as f32,
                valid_loss,
                valid_mean_token_accuracy: valid_acc,
                learning_rate: lr,
                tokens,
                elapsed_seconds: started.elapsed().as_secs_f64(),
            }))?;
        }
        let (full_valid_loss, full_valid_acc) = if data.valid_len() == 0 {
            (None, None)
        } else {
            let all: Vec<usize> = (0..data.valid_len()).collect();
            let (l, a) = data.evaluate(&model, &all)?;
            (Some(l), Some(a))
        };
        let dir = save_epoch(spec, &model, &opt, &names, epoch)?;
        observer.event(TrainEvent::Checkpoint(Checkpoint {
            epoch,
            step: opt.steps(),
            dir,
            train_loss: (epoch_loss / epoch_targets.max(1) as f64) as f32,
            train_mean_token_accuracy: epoch_correct as f32 / epoch_targets.max(1) as f32,
            full_valid_loss,
            full_valid_mean_token_accuracy: full_valid_acc,
        }))?;
    }
    Ok(TrainOutcome {
        adapter_dir: epoch_dir(&spec.work_dir, h.n_epochs),
        steps: opt.steps(),
        tokens,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Sequences of one batch grouped into passes of at most [`PACK_TOKENS`] tokens (a longer sequence
/// goes alone): bigger products for the same arithmetic. The budget is small because the autograd
/// graph keeps every intermediate of a pass: on SmolLM2, packs of 128 tokens train at 70 tokens/s with
/// a 1.5 GiB peak, of 256 at 75 with 2.5 GiB, one sequence a pass at 56 with 1.0 GiB.
fn packs(examples: Vec<&TokenizedExample>) -> Vec<Vec<&TokenizedExample>> {
    let mut out: Vec<Vec<&TokenizedExample>> = Vec::new();
    let mut len = 0;
    for e in examples {
        let l = e.tokens.len();
        match out.last_mut() {
            Some(last) if len + l <= PACK_TOKENS => {
                last.push(e);
                len += l;
            }
            _ => {
                out.push(vec![e]);
                len = l;
            }
        }
    }
    out
}

/// Mean loss and token accuracy over examples, without gradients.
fn evaluate(model: &LoraModel, examples: Vec<&TokenizedExample>) -> Result<(f32, f32)> {
    let (mut loss, mut targets, mut correct) = (0f64, 0usize, 0usize);
    for pack in packs(examples) {
        let seqs: Vec<(&[u32], &[bool])> = pack.iter().map(|e| (&e.tokens[..], &e.targets[..])).collect();
        let out = model.packed_loss(&seqs)?;
        loss += out.loss_sum.detach().to_scalar::<f32>()? as f64;
        targets += out.targets;
        correct += out.correct;
    }
    Ok(((loss / targets.max(1) as f64) as f32, correct as f32 / targets.max(1) as f32))
}

/// Linear warm-up over the first tenth of the run, then linear decay to a tenth of the peak.
pub fn learning_rate(peak: f64, step: usize, total: usize) -> f64 {
    let warmup = (total / 10).max(1);
    if step <= warmup {
        return peak * step as f64 / warmup as f64;
    }
    let rest = (total - warmup).max(1) as f64;
    let done = (step - warmup) as f64 / rest;
    peak * (1.0 - 0.9 * done.min(1.0))
}

fn clip(grads: Vec<Tensor>, max_norm: f64) -> Result<Vec<Tensor>> {
    let mut sq = 0f64;
    for g in &grads {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if !norm.is_finite() || norm <= max_norm {
        return Ok(grads);
    }
    let factor = max_norm / norm;
    Ok(grads.into_iter().map(|g| g * factor).collect::<candle_core::Result<_>>()?)
}

fn epoch_dir(work: &Path, epoch: usize) -> PathBuf {
    work.join(format!("epoch-{epoch}"))
}

/// The last epoch whose checkpoint was written completely.
fn latest_epoch(work: &Path) -> Option<usize> {
    std::fs::read_dir(work)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("epoch-")?.parse::<usize>().ok())
        .filter(|n| epoch_dir(work, *n).join(STATE_FILE).exists())
        .max()
}

/// Checks that an adapter to continue from has the factors this run trains: same rank, scale and
/// target modules (its tensors are then loaded by name and shape).
pub fn check_starting_adapter(dir: &Path, lora: &LoraSettings) -> Result<()> {
    let path = dir.join(crate::peft::CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Data(format!("the starting adapter's configuration: {e}")))?;
    let rank = config["r"].as_u64().unwrap_or(0) as usize;
    let alpha = config["lora_alpha"].as_f64().unwrap_or(0.0);
    let mut targets: Vec<String> = config["target_modules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let mut want = lora.targets.clone();
    targets.sort();
    want.sort();
    if rank != lora.rank || alpha != lora.alpha || targets != want {
        return Err(TrainError::Data(format!(
            "the starting adapter has rank {rank}, alpha {alpha} and targets {targets:?}; continuing needs rank {}, alpha {} and targets {want:?}, as Berth trains",
            lora.rank, lora.alpha
        )));
    }
    Ok(())
}

/// Writes the adapter, the optimiser's moments and the step into `epoch-<n>/`, through a temporary
/// directory renamed at the end, so that a crash never leaves a half-written checkpoint behind.
fn save_epoch(spec: &TrainSpec, model: &LoraModel, opt: &AdamW, names: &[String], epoch: usize) -> Result<PathBuf> {
    let dir = epoch_dir(&spec.work_dir, epoch);
    let tmp = spec.work_dir.join(format!("epoch-{epoch}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    write_adapter(model, &spec.base_name, &tmp)?;
    let state: HashMap<String, Tensor> = opt.state(names);
    candle_core::safetensors::save(&state, tmp.join(OPTIMIZER_FILE))
        .map_err(|e| io_err(&tmp.join(OPTIMIZER_FILE), e))?;
    let info = serde_json::json!({ "epoch": epoch, "step": opt.steps() });
    std::fs::write(tmp.join(STATE_FILE), info.to_string()).map_err(|e| io_err(&tmp.join(STATE_FILE), e))?;
    berth_durable::sync_tree(&tmp).map_err(|e| io_err(&tmp, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    berth_durable::publish(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
    Ok(dir)
}
