//! Continuous batching on the real model: a request's greedy output is the same alone, in a batch of
//! sixteen over eight adapters, prefilled in chunks, from the prefix cache and after preemption.

use super::{chat_prompt, model};
use berth_engine::{
    AdapterId, BatchContext, Engine, EngineHandle, EngineOptions, GenerateEvent, GenerateRequest, LoraAdapter, Model,
    SamplingParams, Segment, BLOCK_TOKENS,
};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;

/// What a finished request said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) text: String,
    pub(crate) reason: berth_engine::FinishReason,
    completion_tokens: usize,
    cached_tokens: usize,
}

fn request(prompt: Vec<u32>, adapter: Option<&str>, max_tokens: usize, scope: &str) -> GenerateRequest {
    GenerateRequest {
        prompt,
        adapter: adapter.map(|a| AdapterId(a.into())),
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop: vec![],
        cache_scope: scope.into(),
        ignore_eos: false,
        reserved: false,
        constraint: None,
    }
}

/// Submits all requests at once (they share batches) and collects each answer.
pub(crate) fn run_all(engine: &EngineHandle, requests: Vec<GenerateRequest>) -> Vec<Answer> {
    let mut receivers = Vec::new();
    for r in requests {
        let (tx, rx) = tokio::sync::mpsc::channel(r.max_tokens + 4);
        engine.submit(r, tx).unwrap();
        receivers.push(rx);
    }
    receivers
        .into_iter()
        .map(|mut rx| {
            let mut text = String::new();
            loop {
                match rx.blocking_recv().expect("an answer") {
                    GenerateEvent::Text(t) => text.push_str(&t),
                    GenerateEvent::Logprob(_) => {}
                    GenerateEvent::Finished { reason, completion_tokens, cached_tokens, .. } => {
                        return Answer { text, reason, completion_tokens, cached_tokens }
                    }
                    GenerateEvent::Failed(e) => panic!("failed: {e}"),
                }
            }
        })
        .collect()
}

fn one(engine: &EngineHandle, r: GenerateRequest) -> Answer {
    run_all(engine, vec![r]).pop().unwrap()
}

const QUESTIONS: [&str; 8] = [
    "Name a colour.",
    "What is 2 + 2?",
    "Say hello in French.",
    "What is the capital of Italy?",
    "Name a fruit.",
    "How many legs does a cat have?",
    "What is the opposite of hot?",
    "Name a planet.",
];

/// A rank-8 adapter with random factors large enough to change greedy answers.
fn random_adapter(m: &Model, dir: &std::path::Path, seed: u64, targets: &[&str]) -> LoraAdapter {
    let c = m.config();
    let (q, kv, h, ffn) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size, c.intermediate_size);
    let shape = |t: &str| match t {
        "q_proj" => ("self_attn", q, h),
        "k_proj" | "v_proj" => ("self_attn", kv, h),
        "o_proj" => ("self_attn", h, q),
        "gate_proj" | "up_proj" => ("mlp", ffn, h),
        _ => ("mlp", h, ffn),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    let rank = 8;
    for layer in 0..c.num_layers {
        for t in targets {
            let (parent, out, inp) = shape(t);
            let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect() };
            let stem = format!("base_model.model.model.layers.{layer}.{parent}.{t}");
            tensors.insert(
                format!("{stem}.lora_A.weight"),
                Tensor::from_vec(rand(rank * inp), (rank, inp), &Device::Cpu).unwrap(),
            );
            tensors.insert(
                format!("{stem}.lora_B.weight"),
                Tensor::from_vec(rand(out * rank), (out, rank), &Device::Cpu).unwrap(),
            );
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = serde_json::json!({ "r": rank, "lora_alpha": 16, "target_modules": targets, "peft_type": "LORA" });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    m.load_adapter(dir).unwrap()
}

#[test]
fn sixteen_streams_over_eight_adapters_answer_as_each_alone() {
    let m = model();
    let engine = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let target_sets: [&[&str]; 4] =
        [&["q_proj", "v_proj"], &["gate_proj", "down_proj"], &["k_proj", "o_proj", "up_proj"], &["q_proj"]];
    for i in 0..8 {
        let dir = tmp.path().join(format!("a{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let adapter = random_adapter(&m, &dir, i as u64, target_sets[i % 4]);
        engine.add_adapter(AdapterId(format!("a{i}")), Arc::new(adapter)).unwrap();
    }
    let names: Vec<Option<String>> =
        (0..16).map(|i| if i % 9 == 8 { None } else { Some(format!("a{}", i % 8)) }).collect();
    let requests: Vec<GenerateRequest> =
        (0..16).map(|i| request(chat_prompt(&m, QUESTIONS[i % 8]), names[i].as_deref(), 12, "t")).collect();
    let alone: Vec<String> = requests.iter().map(|r| one(&engine, r.clone()).text).collect();
    let together: Vec<String> = run_all(&engine, requests).into_iter().map(|a| a.text).collect();
    assert_eq!(alone, together);
    let distinct: std::collections::HashSet<_> = alone.iter().collect();
    assert!(distinct.len() > 8, "the adapters must change the answers for this test to mean anything: {alone:?}");
}

#[test]
fn a_mixed_batch_gives_each_row_its_own_adapter() {
    // The logits of one forward pass over [base, adapter A, adapter B] rows equal each sequence alone.
    let m = model();
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = random_adapter(&m, &da, 1, &["q_proj", "v_proj", "down_proj"]);
    let b = random_adapter(&m, &db, 2, &["gate_proj", "up_proj", "o_proj", "k_proj"]);
    let prompts = [chat_prompt(&m, QUESTIONS[0]), chat_prompt(&m, QUESTIONS[1]), chat_prompt(&m, QUESTIONS[2])];
    let adapters = [None, Some(&a), Some(&b)];
    let alone: Vec<Vec<f32>> =
        prompts.iter().zip(adapters).map(|(p, ad)| m.logits(p, ad).unwrap().pop().unwrap()).collect();
    let blocks_each = prompts.iter().map(|p| p.len().div_ceil(BLOCK_TOKENS)).max().unwrap();
    let mut pool = m.new_kv_pool(blocks_each * 3);
    let tables: Vec<Vec<u32>> =
        (0..3).map(|i| ((i * blocks_each) as u32..((i + 1) * blocks_each) as u32).collect()).collect();
    let segments = prompts
        .iter()
        .zip(adapters)
        .zip(&tables)
        .map(|((p, ad), t)| Segment { len: p.len(), past: 0, table: t, adapter: ad })
        .collect();
    let tokens: Vec<u32> = prompts.concat();
    let mixed = m.forward(&tokens, &mut BatchContext { kv: &mut pool, segments, all_logits: false }).unwrap();
    let mut worst = 0f32;
    for (x, y) in alone.iter().zip(&mixed) {
        worst = x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    assert!(worst < 1e-3, "mixed batch differs from alone by {worst}");
    let moved = alone[0]
        .iter()
        .zip(&m.logits(&prompts[0], Some(&a)).unwrap().pop().unwrap())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(moved > 0.5, "the adapter must move the logits: {moved}");
}

#[test]
fn a_cached_prefix_skips_prefill_within_its_scope_only() {
    let m = model();
    let engine = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    let system = "You are a helpful assistant for a shipping company. Answer briefly, politely and in plain English. \
                  Never invent facts; say so when you do not know. Keep every answer under twenty words.";
    let prompt = |q: &str| {
        let text = m
            .text()
            .render_chat(&[berth_engine::ChatMessage::new("system", system), berth_engine::ChatMessage::new("user", q)])
            .unwrap();
        m.text().encode(&text).unwrap()
    };
    let first = one(&engine, request(prompt("What is a berth?"), None, 16, "sub-1"));
    assert_eq!(first.cached_tokens, 0);
    let again = one(&engine, request(prompt("What is a berth?"), None, 16, "sub-1"));
    assert_eq!(again.text, first.text, "a cache hit gives the same answer");
    let full_blocks = (prompt("What is a berth?").len() - 1) / BLOCK_TOKENS * BLOCK_TOKENS;
    assert_eq!(again.cached_tokens, full_blocks);
    // Another question after the same system prompt shares the system prompt's blocks.
    let other = one(&engine, request(prompt("What is a port?"), None, 16, "sub-1"));
    assert!(other.cached_tokens >= 48, "{other:?}");
    // Another scope never sees them.
    let stranger = one(&engine, request(prompt("What is a berth?"), None, 16, "sub-2"));
    assert_eq!(stranger.cached_tokens, 0);
    assert_eq!(stranger.text, first.text);
    let (prompt_tokens, cached) = engine.stats().prompt_tokens();
    assert!(cached > 0 && cached < prompt_tokens);
}

#[test]
fn chunked_prefill_and_preemption_keep_greedy_answers() {
    let m = model();
    let requests: Vec<GenerateRequest> =
        (0..4).map(|i| request(chat_prompt(&m, QUESTIONS[i]), None, 40, "t")).collect();
    let reference =
        Engine::start(m.clone(), EngineOptions { prefix_cache: false, ..EngineOptions::default() }).unwrap();
    let alone: Vec<Answer> = requests.iter().map(|r| one(&reference, r.clone())).collect();

    // Prompts prefilled 5 tokens a step, interleaved with the others' decoding.
    let chunked = Engine::start(
        m.clone(),
        EngineOptions { max_batch_tokens: 5, max_batch: 4, prefix_cache: false, ..EngineOptions::default() },
    )
    .unwrap();
    let texts = |v: Vec<Answer>| v.into_iter().map(|a| a.text).collect::<Vec<_>>();
    let want = texts(alone.clone());
    assert_eq!(texts(run_all(&chunked, requests.clone())), want);

    // A KV pool of 8 blocks cannot hold four sequences of ~70 tokens: some are preempted and
    // recomputed, with and without the prefix cache helping.
    for prefix_cache in [false, true] {
        let tight = EngineOptions {
            kv_cache_bytes: m.kv_bytes_per_token() * BLOCK_TOKENS * 8,
            prefix_cache,
            ..EngineOptions::default()
        };
        let engine = Engine::start(m.clone(), tight).unwrap();
        assert_eq!(texts(run_all(&engine, requests.clone())), want);
        assert!(engine.stats().preemptions() > 0, "the pool was meant to run out");
    }
}

#[test]
fn a_prompt_larger_than_the_pool_fails_cleanly() {
    let m = model();
    let engine = Engine::start(
        m.clone(),
        EngineOptions { kv_cache_bytes: m.kv_bytes_per_token() * BLOCK_TOKENS * 2, ..EngineOptions::default() },
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    engine.submit(request(vec![1; 40], None, 4, "t"), tx).unwrap();
    match rx.blocking_recv() {
        Some(GenerateEvent::Failed(e)) => assert_eq!(
            e,
            berth_engine::Failure::PromptExceedsCache { needed_tokens: 40, capacity_tokens: 2 * BLOCK_TOKENS }
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    // The engine still serves what fits.
    assert!(one(&engine, request(chat_prompt(&m, "Hi")[..8].to_vec(), None, 2, "t")).completion_tokens > 0);
}

#[test]
fn a_full_queue_is_refused_at_once() {
    let m = model();
    let engine =
        Engine::start(m.clone(), EngineOptions { queue_depth: 2, max_batch: 1, ..EngineOptions::default() }).unwrap();
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let (tx, rx) = tokio::sync::mpsc::channel(300);
        match engine.submit(request(chat_prompt(&m, "Tell me a long story."), None, 200, "t"), tx) {
            Ok(_) => kept.push(rx),
            Err(berth_engine::EngineError::Busy(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 4, "{refused} refused");
}

#[test]
fn adapters_beyond_the_pool_budget_are_evicted_and_reloaded() {
    let m = model();
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    let mut bytes = 0;
    for i in 0..3 {
        let dir = tmp.path().join(format!("a{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        bytes = random_adapter(&m, &dir, 10 + i, &["q_proj", "v_proj"]).bytes();
        dirs.push(dir);
    }
    // Room for one adapter and a half: every switch of adapter is a load from disk.
    let engine =
        Engine::start(m.clone(), EngineOptions { adapter_cache_bytes: bytes * 3 / 2, ..EngineOptions::default() })
            .unwrap();
    let reference = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    for (i, dir) in dirs.iter().enumerate() {
        engine.register_adapter(AdapterId(format!("a{i}")), dir.clone(), None).unwrap();
        reference.add_adapter(AdapterId(format!("a{i}")), Arc::new(m.load_adapter(dir).unwrap())).unwrap();
    }
    let ask = |i: usize| request(chat_prompt(&m, QUESTIONS[i]), Some(&format!("a{}", i % 3)), 8, "t");
    for round in 0..2 {
        for i in 0..3 {
            assert_eq!(one(&engine, ask(i)).text, one(&reference, ask(i)).text, "round {round}, adapter {i}");
            let (loaded, held, _) = engine.stats().adapters();
            assert!(loaded == 1 && held <= bytes * 3 / 2, "{loaded} adapters, {held} bytes");
        }
    }
    assert_eq!(engine.stats().adapters().2, 6, "each use after an eviction loads again");
    // Requests in one batch over all three still work: running ones keep their adapter.
    let together = run_all(&engine, (0..6).map(ask).collect());
    let alone: Vec<Answer> = (0..6).map(|i| one(&reference, ask(i))).collect();
    assert_eq!(together.iter().map(|a| &a.text).collect::<Vec<_>>(), alone.iter().map(|a| &a.text).collect::<Vec<_>>());
}

#[test]
fn reserved_requests_jump_the_queue_and_keep_their_slots() {
    let m = model();
    // Two slots, one reserved once reserved traffic has been seen; a queue of two ordinary requests.
    let engine = Engine::start(
        m.clone(),
        EngineOptions { max_batch: 2, reserved_batch: 1, queue_depth: 2, ..EngineOptions::default() },
    )
    .unwrap();
    let long = |n| {
        let mut r = request(chat_prompt(&m, "Tell me a very long story."), None, n, "t");
        r.ignore_eos = true;
        r
    };
    let reserved = |n| GenerateRequest { reserved: true, ..request(chat_prompt(&m, "Name a colour."), None, n, "p") };
    // The first reserved request arms the reservation.
    assert!(one(&engine, reserved(2)).completion_tokens > 0);
    let mut ordinary = Vec::new();
    let submit = |ordinary: &mut Vec<_>| {
        let (tx, rx) = tokio::sync::mpsc::channel(400);
        engine.submit(long(300), tx).unwrap_or_else(|e| panic!("{e}"));
        ordinary.push(rx);
    };
    submit(&mut ordinary);
    // Its first text means it has left the queue (the running count could still be the reserved
    // request's, published late).
    let first = ordinary[0].blocking_recv();
    assert!(matches!(first, Some(GenerateEvent::Text(_))), "the first request never started: {first:?}");
    // Two more wait: the only unreserved slot is taken.
    submit(&mut ordinary);
    submit(&mut ordinary);
    // The queue is full for ordinary requests, not for reserved ones.
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    assert!(matches!(engine.submit(long(300), tx), Err(berth_engine::EngineError::Busy(_))));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stats = engine.stats();
    assert_eq!(stats.running(), 1, "ordinary requests take only the unreserved slot");
    let started = std::time::Instant::now();
    let answer = one(&engine, reserved(8));
    assert_eq!(answer.completion_tokens, 8);
    // It finished while every ordinary request was still running or waiting.
    for rx in &mut ordinary {
        let mut finished = false;
        while let Ok(e) = rx.try_recv() {
            finished |= matches!(e, GenerateEvent::Finished { .. });
        }
        assert!(!finished, "an ordinary request finished before the reserved one ({:?})", started.elapsed());
    }
}
