//! The trainer on SmolLM2 (BERTH_TEST_GGUF): its forward pass against the engine's, its gradients
//! against finite differences, the loss going down, and runs that are reproducible and resumable.

use berth_engine::{load_dense_weights, load_model};
use berth_train::{
    parse_jsonl, tokenize, train, Example, Hyperparameters, LoraModel, LoraSettings, Observer, TrainError, TrainEvent,
    TrainSpec,
};
use candle_core::{Tensor, Var};
use std::path::{Path, PathBuf};

fn gguf() -> PathBuf {
    PathBuf::from(
        std::env::var("BERTH_TEST_GGUF")
            .expect("set BERTH_TEST_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh)"),
    )
}

fn examples(n: usize) -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fine-tuning/pirate-train.jsonl");
    let mut all = parse_jsonl(&std::fs::read(path).unwrap()).unwrap();
    all.truncate(n);
    all
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_trainer_computes_what_the_engine_computes() {
    let weights = load_dense_weights(&gguf()).unwrap();
    let model = LoraModel::new(&weights, LoraSettings::default(), 7).unwrap();
    // B is zero before training, so the adapter changes nothing yet.
    let tokens = tokenize(&examples(1)[0], &weights.text, 512).unwrap().tokens;
    let engine = load_model(&gguf(), None).unwrap();
    let ours = model.logits(&tokens).unwrap();
    let theirs = engine.logits(&tokens, None).unwrap();
    let d = max_diff(&ours, &theirs);
    assert!(d < 2e-3, "trainer and engine logits differ by {d}");
    // With non-zero factors, written as a PEFT adapter and loaded by the engine.
    for (i, (_, var)) in model.named_vars().into_iter().enumerate() {
        let t = var.as_tensor();
        let noise =
            (Tensor::randn(0f32, 0.02, t.shape(), t.device()).unwrap() * if i % 2 == 1 { 1.0 } else { 0.0 }).unwrap();
        var.set(&(t + noise).unwrap()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    berth_train::write_adapter(&model, "smollm2", dir.path()).unwrap();
    let adapter = engine.load_adapter(dir.path()).unwrap();
    let ours = model.logits(&tokens).unwrap();
    let theirs = engine.logits(&tokens, Some(&adapter)).unwrap();
    let base = engine.logits(&tokens, None).unwrap();
    let d = max_diff(&ours, &theirs);
    let effect = max_diff(&ours, &base);
    assert!(d < 2e-3, "with an adapter, trainer and engine logits differ by {d}");
    assert!(effect > 0.1, "the adapter must move the logits for this to mean anything (moved {effect})");
}

#[test]
fn gradients_match_finite_differences() {
    let weights = load_dense_weights(&gguf()).unwrap();
    let model = LoraModel::new(
        &weights,
        LoraSettings { rank: 4, alpha: 8.0, targets: vec!["q_proj".into(), "down_proj".into()] },
        3,
    )
    .unwrap();
    let vars: Vec<(String, Var)> = model.named_vars().into_iter().map(|(n, v)| (n, v.clone())).collect();
    for (name, v) in &vars {
        if name.contains("lora_B") {
            v.set(&Tensor::randn(0f32, 0.05, v.as_tensor().shape(), v.as_tensor().device()).unwrap()).unwrap();
        }
    }
    let ex = tokenize(&examples(2)[1], &weights.text, 512).unwrap();
    let loss =
        |m: &LoraModel| m.sequence_loss(&ex.tokens, &ex.targets).unwrap().loss_sum.to_scalar::<f32>().unwrap() as f64;
    let grads = model.sequence_loss(&ex.tokens, &ex.targets).unwrap().loss_sum.backward().unwrap();
    let mut checked = 0;
    for (name, var) in vars.iter().filter(|(n, _)| n.contains("layers.0.") || n.contains("layers.29.")) {
        // The derivative along the gradient's own direction must equal the gradient's norm: one
        // finite difference over every entry at once, well above f32 noise.
        let g = grads.get(var.as_tensor()).unwrap().clone();
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64;
        let dir = (&g / norm).unwrap();
        let original = var.as_tensor().copy().unwrap();
        let eps = 0.05;
        let at = |delta: f64| {
            var.set(&(&original + (&dir * delta).unwrap()).unwrap()).unwrap();
            loss(&model)
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        at(0.0);
        let rel = (numeric - norm).abs() / norm;
        println!("{name}: |autograd| {norm:.5}, finite difference along it {numeric:.5}");
        assert!(rel < 0.03, "{name}: autograd norm {norm} vs finite difference {numeric}");
        checked += 1;
    }
    assert_eq!(checked, 8);
}

/// Stops the run after the first checkpoint, as a shutdown would.
struct StopAfterFirstEpoch {
    losses: Vec<f32>,
    stop: bool,
}

impl Observer for StopAfterFirstEpoch {
    fn event(&mut self, e: TrainEvent) -> Result<(), TrainError> {
        match e {
            TrainEvent::Step(m) => self.losses.push(m.train_loss),
            TrainEvent::Checkpoint(_) => self.stop = true,
            TrainEvent::Prepared { .. } => {}
        }
        Ok(())
    }
    fn should_stop(&self) -> bool {
        self.stop
    }
}

struct Collect {
    losses: Vec<f32>,
    checkpoints: usize,
    resumed: Option<usize>,
}

impl Observer for Collect {
    fn event(&mut self, e: TrainEvent) -> Result<(), TrainError> {
        match e {
            TrainEvent::Step(m) => self.losses.push(m.train_loss),
            TrainEvent::Checkpoint(c) => {
                assert!(c.dir.join("adapter_model.safetensors").exists());
                self.checkpoints += 1;
            }
            TrainEvent::Prepared { resumed_after_epoch, .. } => self.resumed = resumed_after_epoch,
        }
        Ok(())
    }
    fn should_stop(&self) -> bool {
        false
    }
}

fn spec(work: &Path, seed: u64) -> TrainSpec {
    TrainSpec {
        base: gguf(),
        base_name: "smollm2".into(),
        train: examples(4),
        validation: vec![],
        hyper: Hyperparameters {
            n_epochs: 3,
            batch_size: 2,
            learning_rate: 2e-3,
            seed,
            lora: LoraSettings::default(),
            max_tokens: 512,
            max_grad_norm: 1.0,
        },
        work_dir: work.to_owned(),
        start_from: None,
        preference: None,
    }
}

fn adapter_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("adapter_model.safetensors")).unwrap()
}

#[test]
fn runs_lower_the_loss_are_reproducible_and_resume_where_they_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut full = Collect { losses: vec![], checkpoints: 0, resumed: None };
    let a = train(&spec(&tmp.path().join("a"), 11), &mut full).unwrap();
    assert_eq!((a.steps, full.checkpoints), (6, 3));
    let first_epoch: f32 = full.losses[..2].iter().sum();
    let last_epoch: f32 = full.losses[4..].iter().sum();
    assert!(last_epoch < 0.7 * first_epoch, "the loss did not go down: {:?}", full.losses);

    // The same seed gives the same adapter, bit for bit.
    let b = train(&spec(&tmp.path().join("b"), 11), &mut Collect { losses: vec![], checkpoints: 0, resumed: None })
        .unwrap();
    assert_eq!(adapter_bytes(&a.adapter_dir), adapter_bytes(&b.adapter_dir));
    // Another seed does not.
    let c = train(&spec(&tmp.path().join("c"), 12), &mut Collect { losses: vec![], checkpoints: 0, resumed: None })
        .unwrap();
    assert_ne!(adapter_bytes(&a.adapter_dir), adapter_bytes(&c.adapter_dir));

    // Interrupted after the first epoch, then resumed: the same adapter as the uninterrupted run.
    let work = tmp.path().join("d");
    let mut stopper = StopAfterFirstEpoch { losses: vec![], stop: false };
    assert!(matches!(train(&spec(&work, 11), &mut stopper), Err(TrainError::Cancelled)));
    let mut resumed = Collect { losses: vec![], checkpoints: 0, resumed: None };
    let d = train(&spec(&work, 11), &mut resumed).unwrap();
    assert_eq!(resumed.resumed, Some(1));
    assert_eq!(resumed.checkpoints, 2);
    assert_eq!(resumed.losses, full.losses[2..].to_vec());
    assert_eq!(adapter_bytes(&a.adapter_dir), adapter_bytes(&d.adapter_dir));
}

#[test]
fn packed_sequences_give_the_losses_they_give_alone() {
    let weights = load_dense_weights(&gguf()).unwrap();
    let model = LoraModel::new(&weights, LoraSettings::default(), 5).unwrap();
    let ex: Vec<_> = examples(3).iter().map(|e| tokenize(e, &weights.text, 512).unwrap()).collect();
    let alone: f32 = ex
        .iter()
        .map(|e| model.sequence_loss(&e.tokens, &e.targets).unwrap().loss_sum.to_scalar::<f32>().unwrap())
        .sum();
    let seqs: Vec<(&[u32], &[bool])> = ex.iter().map(|e| (&e.tokens[..], &e.targets[..])).collect();
    let packed = model.packed_loss(&seqs).unwrap();
    let together = packed.loss_sum.to_scalar::<f32>().unwrap();
    assert_eq!(packed.targets, ex.iter().map(|e| e.target_count()).sum::<usize>());
    assert!((alone - together).abs() < 1e-3 * alone, "alone {alone}, packed {together}");
}

/// Preference pairs from the pirate set: the pirate answer preferred over the same answer said plainly.
fn pairs(lines: std::ops::Range<usize>) -> Vec<berth_train::PreferenceExample> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fine-tuning/pirate-train.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let file: String = text.lines().collect::<Vec<_>>()[lines]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let (q, a) = (&v["messages"][0]["content"], v["messages"][1]["content"].as_str().unwrap());
            let plain = a.replace("Arr, matey! ", "").replace(" be ", " is ");
            serde_json::json!({
                "input": {"messages": [{"role": "user", "content": q}]},
                "preferred_output": [{"role": "assistant", "content": a}],
                "non_preferred_output": [{"role": "assistant", "content": plain}],
            })
            .to_string()
                + "\n"
        })
        .collect();
    berth_train::parse_preference_jsonl(file.as_bytes()).unwrap()
}

/// Mean of log p(preferred) - log p(non-preferred) over pairs.
fn mean_margin(model: &LoraModel, text: &berth_engine::TextModel, pairs: &[berth_train::PreferenceExample]) -> f64 {
    let lp = |e: &Example| -> f64 {
        let t = tokenize(e, text, 512).unwrap();
        -(model.sequence_loss(&t.tokens, &t.targets).unwrap().loss_sum.to_scalar::<f32>().unwrap() as f64)
    };
    pairs.iter().map(|p| lp(&p.preferred) - lp(&p.non_preferred)).sum::<f64>() / pairs.len() as f64
}

#[test]
fn dpo_widens_the_preferred_answers_margin_on_held_out_pairs() {
    let (train_pairs, held_out) = (pairs(0..8), pairs(30..36));
    let weights = load_dense_weights(&gguf()).unwrap();
    let model = LoraModel::new(&weights, LoraSettings::default(), 3).unwrap();
    let before = mean_margin(&model, &weights.text, &held_out);
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path(), 5);
    s.train = vec![];
    s.hyper.n_epochs = 2;
    s.preference = Some(berth_train::Preference { beta: 0.1, train: train_pairs, validation: held_out.clone() });
    let mut seen = Collect { losses: vec![], checkpoints: 0, resumed: None };
    let out = train(&s, &mut seen).unwrap();
    assert_eq!((out.steps, seen.checkpoints), (8, 2));
    let path = out.adapter_dir.join(berth_train::WEIGHTS_FILE);
    model.load_vars(&candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap()).unwrap();
    let after = mean_margin(&model, &weights.text, &held_out);
    println!("held-out margin log p(pirate) - log p(plain): {before:.2} -> {after:.2} nats; losses {:?}", seen.losses);
    assert!(after > before + 1.0, "the margin moved from {before:.2} to {after:.2}");
    // The DPO loss starts at ln 2 (policy = reference) and falls.
    assert!((seen.losses[0] - std::f32::consts::LN_2).abs() < 0.05, "{:?}", seen.losses);
    assert!(seen.losses.last().unwrap() < &seen.losses[0], "{:?}", seen.losses);
}
