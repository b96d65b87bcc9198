//! The engine on the real SmolLM2-135M-Instruct GGUF (path in `BERTH_TEST_GGUF`; `scripts/fetch-model.sh`
//! fetches it). Without the variable these tests fail and say so: they are never skipped silently.

use berth_engine::{
    load_model, ChatMessage, Engine, EngineOptions, FinishReason, GenerateEvent, GenerateRequest, Model, SamplingParams,
};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

mod constrained;
mod scheduling;

pub(crate) fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = std::env::var("BERTH_TEST_GGUF").expect(
                "set BERTH_TEST_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh prints the path)",
            );
            Arc::new(load_model(&PathBuf::from(path), None).expect("load model"))
        })
        .clone()
}

fn generate(engine: &berth_engine::EngineHandle, request: GenerateRequest) -> (String, FinishReason, usize, usize) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(request.max_tokens + 4);
    engine.submit(request, tx).unwrap();
    let mut text = String::new();
    loop {
        match rx.blocking_recv().expect("engine answered") {
            GenerateEvent::Text(t) => text.push_str(&t),
            GenerateEvent::Logprob(_) => {}
            GenerateEvent::Finished { reason, prompt_tokens, completion_tokens, .. } => {
                return (text, reason, prompt_tokens, completion_tokens)
            }
            GenerateEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
}

pub(crate) fn chat_prompt(m: &Model, question: &str) -> Vec<u32> {
    let text = m.text().render_chat(&[ChatMessage::new("user", question)]).unwrap();
    m.text().encode(&text).unwrap()
}

#[test]
fn smollm2_answers_a_factual_question_greedily() {
    let m = model();
    let engine = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    let prompt = chat_prompt(&m, "What is the capital of France?");
    let (text, reason, prompt_tokens, completion_tokens) = generate(
        &engine,
        GenerateRequest {
            prompt: prompt.clone(),
            adapter: None,
            sampling: SamplingParams::greedy(),
            max_tokens: 40,
            stop: vec![],
            cache_scope: String::new(),
            ignore_eos: false,
            reserved: false,
            constraint: None,
        },
    );
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(prompt_tokens, prompt.len());
    assert!(completion_tokens > 0 && completion_tokens <= 40);
    assert!(matches!(reason, FinishReason::Stop | FinishReason::Length));
}

#[test]
fn batched_sequences_match_sequences_run_alone() {
    let m = model();
    let engine = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    let questions = ["Name a colour.", "What is 2 + 2?", "Say hello in French."];
    let req = |q: &str| GenerateRequest {
        prompt: chat_prompt(&m, q),
        adapter: None,
        sampling: SamplingParams::greedy(),
        max_tokens: 12,
        stop: vec![],
        cache_scope: String::new(),
        ignore_eos: false,
        reserved: false,
        constraint: None,
    };
    let alone: Vec<String> = questions.iter().map(|q| generate(&engine, req(q)).0).collect();
    // Submit all at once: they run in one batch.
    let mut rxs = Vec::new();
    for q in questions {
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        engine.submit(req(q), tx).unwrap();
        rxs.push(rx);
    }
    let together: Vec<String> = rxs
        .into_iter()
        .map(|mut rx| {
            let mut s = String::new();
            while let Some(ev) = rx.blocking_recv() {
                match ev {
                    GenerateEvent::Text(t) => s.push_str(&t),
                    GenerateEvent::Logprob(_) => {}
                    GenerateEvent::Finished { .. } => break,
                    GenerateEvent::Failed(e) => panic!("{e}"),
                }
            }
            s
        })
        .collect();
    assert_eq!(alone, together);
}

#[test]
fn stop_sequences_and_max_tokens_end_generation() {
    let m = model();
    let engine = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    let base = GenerateRequest {
        prompt: chat_prompt(&m, "Count from 1 to 20, separated by commas."),
        adapter: None,
        sampling: SamplingParams::greedy(),
        max_tokens: 60,
        stop: vec![],
        cache_scope: String::new(),
        ignore_eos: false,
        reserved: false,
        constraint: None,
    };
    let (full, _, _, _) = generate(&engine, base.clone());
    assert!(full.contains('5'), "{full:?}");
    let (stopped, reason, _, _) = generate(&engine, GenerateRequest { stop: vec!["5".into()], ..base.clone() });
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(stopped, full[..full.find('5').unwrap()]);
    let (short, reason, _, n) = generate(&engine, GenerateRequest { max_tokens: 3, ..base });
    assert_eq!((reason, n), (FinishReason::Length, 3));
    assert!(full.starts_with(&short), "{short:?} vs {full:?}");
}

#[test]
fn tokenizer_round_trips_and_knows_chatml_specials() {
    let m = model();
    let text = m.text();
    let ids = text.encode("<|im_start|>user\nHello, world! 123 café<|im_end|>").unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one special token");
    assert!(ids.contains(&2), "<|im_end|> is one special token");
    assert_eq!(text.decode(&ids), "user\nHello, world! 123 café");
    // Digits are split one by one in SmolLM's pre-tokenizer.
    let digits = text.encode("123").unwrap();
    assert_eq!(digits.len(), 3);
}

#[test]
fn incremental_decoding_never_splits_a_character() {
    let m = model();
    let text = m.text();
    let s = "café 東京 🚀 naïve — ok";
    let ids = text.encode(s).unwrap();
    let mut decoder = text.decoder();
    let mut out = String::new();
    let mut held_back = 0;
    for &id in &ids {
        let piece = decoder.push(text, id);
        assert!(!piece.contains('\u{FFFD}'), "a split character leaked: {piece:?}");
        held_back += usize::from(piece.is_empty());
        out.push_str(&piece);
    }
    out.push_str(&decoder.flush(text));
    assert_eq!(out, s);
    assert!(held_back > 0, "some token must end inside a character for this test to mean anything");
}

#[test]
fn a_client_that_goes_away_frees_its_sequence() {
    let m = model();
    let engine = Engine::start(m.clone(), EngineOptions::default()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let request = GenerateRequest {
        prompt: chat_prompt(&m, "Tell me a very long story."),
        adapter: None,
        sampling: SamplingParams::greedy(),
        max_tokens: 4000,
        stop: vec![],
        cache_scope: String::new(),
        ignore_eos: false,
        reserved: false,
        constraint: None,
    };
    engine.submit(request, tx).unwrap();
    assert!(matches!(rx.blocking_recv(), Some(GenerateEvent::Text(_))));
    assert_eq!(engine.stats().running(), 1);
    let steps_when_dropped = engine.stats().steps();
    drop(rx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.stats().running() != 0 {
        assert!(std::time::Instant::now() < deadline, "the sequence was not freed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(engine.stats().steps() - steps_when_dropped < 10, "freed at the next step, not after 4000 tokens");
}
