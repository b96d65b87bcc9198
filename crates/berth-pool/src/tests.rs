//! What Berth reads from vLLM, on answers captured from vLLM 0.32's CPU server. Forwarding and
//! placement against real servers are tested in `tests/integration/test_pool.py`.

use crate::endpoint::{parse_metrics, parse_models, Endpoint, Load, Probe};
use crate::forward::{Sse, StreamState};
use crate::pool::choose;
use berth_engine::{FinishReason, GenerateEvent};
use std::sync::Arc;

#[test]
fn metrics_are_summed_over_labels() {
    let text = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
        # TYPE vllm:num_requests_running gauge\n\
        vllm:num_requests_running{engine=\"0\",model_name=\"smollm2\"} 3.0\n\
        vllm:num_requests_waiting{engine=\"0\",model_name=\"smollm2\"} 1.0\n\
        vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"smollm2\"} 0.25\n\
        vllm:prompt_tokens_total{engine=\"0\",model_name=\"smollm2\"} 1234.0\n\
        vllm:num_requests_running{engine=\"1\",model_name=\"smollm2\"} 2.0\n";
    assert_eq!(parse_metrics(text), Load { running: 5.0, waiting: 1.0, kv_usage: 0.25 });
    assert_eq!(parse_metrics("garbage\nvllm:num_requests_running{} NaN\n"), Load::default());
}

#[test]
fn models_split_bases_from_adapters() {
    let body = serde_json::json!({"object": "list", "data": [
        {"id": "smollm2", "object": "model", "root": "/m", "parent": null, "max_model_len": 2048},
        {"id": "smollm2.ft-1", "object": "model", "root": "/store/a", "parent": "smollm2"},
    ]});
    let probe = parse_models(&body).unwrap();
    assert_eq!(probe.bases, vec!["smollm2"]);
    assert_eq!(probe.adapters.into_iter().collect::<Vec<_>>(), vec!["smollm2.ft-1"]);
    assert_eq!(probe.max_model_len, Some(2048));
    assert!(parse_models(&serde_json::json!({"detail": "Not Found"})).is_err());
}

#[test]
fn sse_events_survive_any_split() {
    let stream = b"data: {\"a\":1}\n\ndata: {\"b\":\"x\\ny\"}\n\ndata: [DONE]\n\n";
    for cut in 0..stream.len() {
        let mut sse = Sse::default();
        let mut got = sse.push(&stream[..cut]);
        got.extend(sse.push(&stream[cut..]));
        assert_eq!(got, vec!["{\"a\":1}", "{\"b\":\"x\\ny\"}", "[DONE]"], "cut at {cut}");
    }
}

#[test]
fn chunks_become_engine_events() {
    let mut st = StreamState { prompt: 7, ..StreamState::default() };
    let events = st
        .apply(
            &serde_json::json!({"choices": [{"index": 0, "text": " Paris", "finish_reason": null,
                "logprobs": {"tokens": ["token_id:7042"], "token_logprobs": [-0.5],
                             "top_logprobs": [{"token_id:9": -2.0, "token_id:7042": -0.5}], "text_offset": [0]}}]}),
            true,
        )
        .unwrap();
    assert_eq!(events.len(), 2);
    match &events[0] {
        GenerateEvent::Logprob(lp) => {
            assert_eq!((lp.token, lp.logprob), (7042, -0.5));
            assert_eq!(lp.top, vec![(7042, -0.5), (9, -2.0)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&events[1], GenerateEvent::Text(t) if t == " Paris"));
    st.apply(&serde_json::json!({"choices": [{"index": 0, "text": ".", "finish_reason": "stop"}]}), false).unwrap();
    st.apply(
        &serde_json::json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 4}}}),
        false,
    )
    .unwrap();
    assert_eq!((st.prompt, st.completion, st.cached, st.finish), (9, 2, 4, Some(FinishReason::Stop)));
    let err = st.apply(&serde_json::json!({"error": {"message": "boom"}}), false).unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    let aborted =
        StreamState::default().apply(&serde_json::json!({"choices": [{"text": "", "finish_reason": "abort"}]}), false);
    assert!(aborted.is_err());
}

fn endpoint(url: &str, running: f64) -> Arc<Endpoint> {
    let e = Arc::new(Endpoint::new(url));
    e.record_probe(Ok(Probe { load: Load { running, ..Load::default() }, ..Probe::default() }));
    e
}

#[test]
fn a_prefix_keeps_its_endpoint_until_it_is_clearly_busier() {
    let (a, b) = (endpoint("http://a", 0.0), endpoint("http://b", 0.0));
    let both = [a.clone(), b.clone()];
    // Each key prefers one endpoint, always the same, and the keys spread over both.
    let firsts: Vec<String> = (0..32u64).map(|k| choose(&both, k).url.clone()).collect();
    assert!(firsts.iter().any(|u| u == "http://a") && firsts.iter().any(|u| u == "http://b"));
    assert_eq!(firsts, (0..32u64).map(|k| choose(&both, k).url.clone()).collect::<Vec<_>>());
    let key = (0..32u64).find(|k| choose(&both, *k).url == "http://a").unwrap();
    a.record_probe(Ok(Probe { load: Load { running: 1.0, ..Load::default() }, ..Probe::default() }));
    assert_eq!(choose(&both, key).url, "http://a", "one more call is within the slack");
    a.record_probe(Ok(Probe { load: Load { running: 3.0, waiting: 1.0, ..Load::default() }, ..Probe::default() }));
    assert_eq!(choose(&both, key).url, "http://b", "a busier endpoint gives way");
}
