//! Constrained decoding through the engine: every answer follows its grammar, in a batch that mixes
//! constrained and free rows, different schemas, greedy and sampled rows.

use crate::{chat_prompt, model};
use berth_engine::{Engine, EngineOptions, FinishReason, GenerateRequest, SamplingParams};
use berth_text::Grammar;
use serde_json::{json, Value};

fn request(question: &str, grammar: Option<&Grammar>, temperature: f32) -> GenerateRequest {
    let m = model();
    GenerateRequest {
        prompt: chat_prompt(&m, question),
        adapter: None,
        sampling: SamplingParams { temperature, seed: Some(7), ..SamplingParams::default() },
        max_tokens: 120,
        stop: vec![],
        cache_scope: String::new(),
        ignore_eos: false,
        reserved: false,
        constraint: grammar.map(|g| m.text().constrain(g).expect("grammar compiles")),
    }
}

fn run_all(requests: Vec<GenerateRequest>) -> Vec<(String, FinishReason)> {
    let engine = Engine::start(model(), EngineOptions::default()).unwrap();
    crate::scheduling::run_all(&engine, requests).into_iter().map(|a| (a.text, a.reason)).collect()
}

#[test]
fn constrained_rows_follow_their_schemas_in_a_mixed_batch() {
    let person = Grammar::JsonSchema(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "colour": {"enum": ["red", "green", "blue"]},
        },
        "required": ["name", "age", "colour"],
        "additionalProperties": false,
    }));
    let list = Grammar::JsonSchema(json!({
        "type": "object",
        "properties": {"cities": {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": 2, "maxItems": 3}},
        "required": ["cities"],
        "additionalProperties": false,
    }));
    let results = run_all(vec![
        request("Describe a person as JSON.", Some(&person), 0.0),
        request("What is the capital of France?", None, 0.0),
        request("List some cities in Europe.", Some(&list), 0.0),
        request("Invent a character.", Some(&person), 0.9),
    ]);
    for (i, (text, reason)) in results.iter().enumerate() {
        assert_eq!(*reason, FinishReason::Stop, "row {i} ran out of tokens: {text:?}");
        if i == 1 {
            assert!(text.contains("Paris"), "the free row is unchanged by its neighbours: {text:?}");
            continue;
        }
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("row {i} is not JSON ({e}): {text:?}"));
        let obj = v.as_object().expect("an object");
        if i == 2 {
            let cities = obj["cities"].as_array().expect("cities is an array");
            assert!((2..=3).contains(&cities.len()), "{text}");
            assert!(cities.iter().all(|c| c.as_str().is_some_and(|s| s.chars().count() <= 16)), "{text}");
        } else {
            assert_eq!(obj.len(), 3, "{text}");
            assert!(obj["name"].as_str().is_some_and(|s| s.chars().count() <= 20), "{text}");
            assert!(obj["age"].as_i64().is_some_and(|a| (0..=120).contains(&a)), "{text}");
            assert!(["red", "green", "blue"].contains(&obj["colour"].as_str().unwrap_or("")), "{text}");
        }
    }
}

#[test]
fn a_required_tool_call_is_always_well_formed() {
    let m = model();
    let functions = vec![
        (
            "get_weather".to_owned(),
            json!({
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
                "additionalProperties": false,
            }),
        ),
        (
            "convert_units".to_owned(),
            json!({
                "type": "object",
                "properties": {"value": {"type": "number"}, "from": {"enum": ["km", "mi"]}, "to": {"enum": ["km", "mi"]}},
                "required": ["value", "from", "to"],
                "additionalProperties": false,
            }),
        ),
    ];
    let grammar = berth_text::tool_call_grammar(&functions, false);
    let (text, reason) = run_all(vec![request("What is the weather in Paris?", Some(&grammar), 0.0)]).remove(0);
    assert_eq!(reason, FinishReason::Stop, "{text:?}");
    let parsed =
        berth_text::parse_tool_calls(&text, &["get_weather", "convert_units"]).unwrap_or_else(|| panic!("{text:?}"));
    assert_eq!(parsed.calls.len(), 1, "{text:?}");
    let args: Value = serde_json::from_str(&parsed.calls[0].arguments).unwrap();
    match parsed.calls[0].name.as_str() {
        "get_weather" => assert!(args["city"].is_string(), "{text}"),
        _ => assert!(args["value"].is_number() && args["from"].is_string() && args["to"].is_string(), "{text}"),
    }
    let _ = m;
}

#[test]
fn unsupported_schemas_are_refused_by_name() {
    let m = model();
    let err = m
        .text()
        .constrain(&Grammar::JsonSchema(json!({"type": "object", "if": {"type": "object"}, "then": {}})))
        .unwrap_err();
    assert!(err.to_string().contains("if"), "{err}");
}
