//! `berth-bench`: times Berth's engine on a GGUF model, the way `bench/engine_vs_llamacpp.py` times
//! llama.cpp on the same file. Every figure comes from wall-clock time around whole requests, and decode
//! rates from the difference of two runs that differ only in the number of generated tokens, so prompt
//! processing and start-up cancel out. Prints one JSON object per scenario.

use anyhow::{bail, Context, Result};
use berth_engine::{
    load_model, AdapterId, Engine, EngineHandle, EngineOptions, GenerateEvent, GenerateRequest, Model, SamplingParams,
};
use clap::{Parser, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

mod train;

#[derive(Parser)]
#[command(about = "Benchmarks of Berth's engine (see bench/README.md)")]
struct Args {
    /// The GGUF model.
    #[arg(long)]
    model: PathBuf,
    /// What to measure.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// PEFT adapter directories (parallel streams use them round-robin; adapter-memory loads them).
    #[arg(long = "adapter")]
    adapters: Vec<PathBuf>,
    /// Concurrent streams (parallel).
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Prompt tokens (single: the prefill length; parallel: each stream's prompt).
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens generated per stream in the decode measurements.
    #[arg(long, default_value_t = 128)]
    gen: usize,
    /// Repetitions; the best is reported (this machine is shared).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// train: the JSONL training file.
    #[arg(long)]
    train_file: Option<PathBuf>,
    /// train: a JSONL validation file.
    #[arg(long)]
    validation_file: Option<PathBuf>,
    /// train: held-out prompts, one a line, answered by the base model and by the adapter.
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// train: the text an answer must contain to show the trained behaviour.
    #[arg(long, default_value = "arr")]
    expect: String,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 1.0)]
    lr_multiplier: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    /// Prefill of one prompt, then decode of one stream after it.
    Single,
    /// Aggregate decode rate of `--streams` concurrent streams (over `--adapter`s when given).
    Parallel,
    /// Time to first token of a 1,500-token prompt whose first 1,400 tokens an earlier request had.
    Prefix,
    /// Resident memory added by each adapter.
    AdapterMemory,
    /// LoRA fine-tuning throughput and peak memory, then held-out answers of base and adapter.
    Train,
    /// Aggregate decode rate of `--streams` streams, free and held to a JSON Schema (the cost of
    /// constrained decoding: a token mask per row and step).
    Constrained,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Scenario::Train = args.scenario {
        let train_file = args.train_file.as_deref().context("--train-file is required")?;
        let result = train::run_train(&train::TrainArgs {
            model: &args.model,
            train_file,
            validation_file: args.validation_file.as_deref(),
            heldout: args.heldout.as_deref(),
            expect: &args.expect,
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr_multiplier: args.lr_multiplier,
            work_dir: std::env::temp_dir().join(format!("berth-bench-train-{}", std::process::id())),
        })?;
        let mut out = json!({ "engine": "berth", "model": args.model.file_name().map(|n| n.to_string_lossy().into_owned()), "threads": rayon_threads() });
        out.as_object_mut().expect("object").extend(result.as_object().expect("object").clone());
        println!("{out}");
        return Ok(());
    }
    let t0 = Instant::now();
    let model = Arc::new(load_model(&args.model, None).with_context(|| format!("loading {}", args.model.display()))?);
    let load_s = t0.elapsed().as_secs_f64();
    let name = args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let result = match args.scenario {
        Scenario::Single => single(&model, &args)?,
        Scenario::Parallel => parallel(&model, &args)?,
        Scenario::Prefix => prefix(&model, &args)?,
        Scenario::AdapterMemory => adapter_memory(&model, &args)?,
        Scenario::Constrained => constrained(&model, &args)?,
        Scenario::Train => unreachable!("handled above"),
    };
    let mut out = json!({ "engine": "berth", "model": name, "load_s": load_s, "threads": rayon_threads() });
    out.as_object_mut().expect("object").extend(result.as_object().expect("object").clone());
    println!("{out}");
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn options(model: &Model, max_batch: usize, prefix_cache: bool) -> EngineOptions {
    EngineOptions {
        name: "bench".into(),
        max_batch,
        // One pass for a 512-token prompt, as llama.cpp's n_batch = 512.
        max_batch_tokens: 512.max(max_batch),
        queue_depth: 256,
        kv_cache_bytes: (model.kv_bytes_per_token() * 48 * 1024).max(64 << 20),
        prefix_cache,
        adapter_cache_bytes: 1 << 30,
        reserved_batch: 0,
    }
}

/// Deterministic pseudo-random ordinary tokens (no special ids at either end of the vocabulary).
fn tokens(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (lo, hi) = (vocab.min(1000) as u64 / 2 + 256, (vocab as u64 * 3 / 4).max(600));
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo + s % (hi - lo)) as u32
        })
        .collect()
}

fn request(prompt: Vec<u32>, adapter: Option<AdapterId>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        adapter,
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop: vec![],
        cache_scope: "bench".into(),
        ignore_eos: true,
        reserved: false,
        constraint: None,
    }
}

/// Submits every request at once and waits for all; returns the wall time and the tokens generated.
fn run(engine: &EngineHandle, requests: Vec<GenerateRequest>) -> Result<(f64, usize)> {
    let start = Instant::now();
    let mut receivers = Vec::with_capacity(requests.len());
    for r in requests {
        let (tx, rx) = tokio::sync::mpsc::channel(r.max_tokens + 4);
        engine.submit(r, tx)?;
        receivers.push(rx);
    }
    let mut generated = 0;
    for mut rx in receivers {
        loop {
            match rx.blocking_recv() {
                Some(GenerateEvent::Text(_) | GenerateEvent::Logprob(_)) => {}
                Some(GenerateEvent::Finished { completion_tokens, .. }) => {
                    generated += completion_tokens;
                    break;
                }
                Some(GenerateEvent::Failed(e)) => bail!("generation failed: {e}"),
                None => bail!("the engine dropped a request"),
            }
        }
    }
    Ok((start.elapsed().as_secs_f64(), generated))
}

fn best(repeat: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut b = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        b = b.min(f()?);
    }
    Ok(b)
}

fn single(model: &Arc<Model>, a: &Args) -> Result<serde_json::Value> {
    let engine = Engine::start(model.clone(), options(model, 1, false))?;
    let vocab = model.config().vocab_size;
    let prompt = tokens(vocab, a.prompt_tokens, 1);
    run(&engine, vec![request(tokens(vocab, 16, 9), None, 2)])?; // warm-up
    let prefill_s = best(a.repeat, || Ok(run(&engine, vec![request(prompt.clone(), None, 1)])?.0))?;
    let long_s = best(a.repeat, || Ok(run(&engine, vec![request(prompt.clone(), None, a.gen + 1)])?.0))?;
    Ok(json!({
        "scenario": "single",
        "prompt_tokens": a.prompt_tokens,
        "gen": a.gen,
        "prefill_tok_s": a.prompt_tokens as f64 / prefill_s,
        "decode_tok_s": a.gen as f64 / (long_s - prefill_s),
    }))
}

/// Loads an adapter into the engine as `a{index}`; returns its id and the bytes of its factors.
fn load_adapter(
    model: &Model,
    engine: &EngineHandle,
    dir: &std::path::Path,
    index: usize,
) -> Result<(AdapterId, usize)> {
    let adapter = model.load_adapter(dir).with_context(|| format!("adapter {}", dir.display()))?;
    let bytes = adapter.bytes();
    let id = AdapterId(format!("a{index}"));
    engine.add_adapter(id.clone(), Arc::new(adapter))?;
    Ok((id, bytes))
}

fn parallel(model: &Arc<Model>, a: &Args) -> Result<serde_json::Value> {
    let engine = Engine::start(model.clone(), options(model, a.streams, false))?;
    let ids =
        a.adapters.iter().enumerate().map(|(i, d)| load_adapter(model, &engine, d, i)).collect::<Result<Vec<_>>>()?;
    let vocab = model.config().vocab_size;
    let prompts: Vec<Vec<u32>> = (0..a.streams).map(|i| tokens(vocab, a.prompt_tokens, 100 + i as u64)).collect();
    let batch = |max_tokens: usize| -> Vec<GenerateRequest> {
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| request(p.clone(), (!ids.is_empty()).then(|| ids[i % ids.len()].0.clone()), max_tokens))
            .collect()
    };
    run(&engine, batch(2))?; // warm-up
    let short = best(a.repeat, || Ok(run(&engine, batch(1))?.0))?;
    let long = best(a.repeat, || Ok(run(&engine, batch(a.gen + 1))?.0))?;
    Ok(json!({
        "scenario": "parallel",
        "streams": a.streams,
        "adapters": ids.len(),
        "prompt_tokens": a.prompt_tokens,
        "gen": a.gen,
        "aggregate_decode_tok_s": (a.streams * a.gen) as f64 / (long - short),
    }))
}

fn constrained(model: &Arc<Model>, a: &Args) -> Result<serde_json::Value> {
    // Long enough that no row can finish before `--gen` tokens: at least 200 objects of a short
    // string and an integer (strings, numbers, keys and punctuation all get masked).
    let schema = json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"}},
            "required": ["name", "n"],
            "additionalProperties": false,
        },
        "minItems": 200,
    });
    let grammar = berth_text::Grammar::JsonSchema(schema);
    let engine = Engine::start(model.clone(), options(model, a.streams, false))?;
    let vocab = model.config().vocab_size;
    let prompts: Vec<Vec<u32>> = (0..a.streams).map(|i| tokens(vocab, a.prompt_tokens, 300 + i as u64)).collect();
    let compile_start = Instant::now();
    model.text().constrain(&grammar)?;
    let first_compile_s = compile_start.elapsed().as_secs_f64();
    let compile_start = Instant::now();
    model.text().constrain(&grammar)?;
    let compile_s = compile_start.elapsed().as_secs_f64();
    let batch = |max_tokens: usize, constrained: bool| -> Result<Vec<GenerateRequest>> {
        prompts
            .iter()
            .map(|p| {
                let mut r = request(p.clone(), None, max_tokens);
                if constrained {
                    r.ignore_eos = false;
                    r.constraint = Some(model.text().constrain(&grammar)?);
                }
                Ok(r)
            })
            .collect()
    };
    let rate = |constrained: bool| -> Result<f64> {
        run(&engine, batch(2, constrained)?)?; // warm-up
        let short = best(a.repeat, || Ok(run(&engine, batch(1, constrained)?)?.0))?;
        let long = best(a.repeat, || {
            let (s, generated) = run(&engine, batch(a.gen + 1, constrained)?)?;
            if generated != a.streams * (a.gen + 1) {
                bail!("a row finished early ({generated} tokens)");
            }
            Ok(s)
        })?;
        Ok((a.streams * a.gen) as f64 / (long - short))
    };
    let free = rate(false)?;
    let held = rate(true)?;
    Ok(json!({
        "scenario": "constrained",
        "streams": a.streams,
        "prompt_tokens": a.prompt_tokens,
        "gen": a.gen,
        "free_decode_tok_s": free,
        "json_schema_decode_tok_s": held,
        "slowdown": free / held - 1.0,
        "first_compile_ms": first_compile_s * 1e3,
        "compile_ms": compile_s * 1e3,
    }))
}

fn prefix(model: &Arc<Model>, a: &Args) -> Result<serde_json::Value> {
    let vocab = model.config().vocab_size;
    let shared = tokens(vocab, 1400, 7);
    let with_tail = |seed| [shared.clone(), tokens(vocab, 100, seed)].concat();
    let ttft = |prefix_cache: bool| -> Result<f64> {
        let engine = Engine::start(model.clone(), options(model, 4, prefix_cache))?;
        run(&engine, vec![request(tokens(vocab, 16, 9), None, 2)])?; // warm-up
        let mut seed = 1000;
        best(a.repeat, || {
            seed += 2;
            run(&engine, vec![request(with_tail(seed), None, 1)])?; // the earlier request
            Ok(run(&engine, vec![request(with_tail(seed + 1), None, 1)])?.0)
        })
    };
    let uncached = ttft(false)?;
    let cached = ttft(true)?;
    Ok(json!({
        "scenario": "prefix",
        "prompt_tokens": 1500,
        "shared_tokens": 1400,
        "ttft_uncached_s": uncached,
        "ttft_cached_s": cached,
        "ratio": cached / uncached,
    }))
}

fn rss_bytes() -> Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kib: usize = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kib * 1024)
}

fn adapter_memory(model: &Arc<Model>, a: &Args) -> Result<serde_json::Value> {
    let engine = Engine::start(model.clone(), options(model, 1, false))?;
    let vocab = model.config().vocab_size;
    run(&engine, vec![request(tokens(vocab, 16, 9), None, 2)])?;
    let before = rss_bytes()?;
    let mut rows = Vec::new();
    let mut last = before;
    for (i, dir) in a.adapters.iter().enumerate() {
        let (id, bytes) = load_adapter(model, &engine, dir, i)?;
        let file: u64 = std::fs::metadata(dir.join("adapter_model.safetensors"))?.len();
        // Use it once so that anything loaded lazily is counted.
        run(&engine, vec![request(tokens(vocab, 16, 9), Some(id), 2)])?;
        let now = rss_bytes()?;
        rows.push(json!({ "adapter": dir.display().to_string(), "weights_bytes": bytes, "file_bytes": file, "rss_added_bytes": now as i64 - last as i64 }));
        last = now;
    }
    Ok(json!({ "scenario": "adapter-memory", "rss_before_bytes": before, "adapters": rows }))
}
