//! Property-based fuzzing of both planes through the real router and control plane: random JSON
//! bodies (shapes built from the contract's field names, and byte-level mutations of valid bodies),
//! random paths, methods and api-versions. Whatever comes in, the answer is never a 5xx, and an
//! error is JSON in its plane's shape.

use crate::Harness;
use axum::body::Body;
use axum::http::Request;
use berth_server::{router, AppState};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use tower::ServiceExt;

const FIELDS: &[&str] = &[
    "sku",
    "name",
    "capacity",
    "properties",
    "model",
    "format",
    "version",
    "source",
    "sourceAccount",
    "raiPolicyName",
    "versionUpgradeOption",
    "location",
    "kind",
    "tags",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "include_usage",
    "n",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "prompt",
    "echo",
    "suffix",
    "response_format",
    "tools",
    "tool_choice",
    "keyName",
    "roleDefinitionId",
    "principalId",
    "displayName",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(FIELDS).prop_map(str::to_owned), 1 => "\\PC{0,12}"]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0.0), Just(-1.0), Just(2.5), Just(1e308), Just(-1e-308), any::<f64>()]
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![Just("user".to_owned()), Just("Standard".to_owned()), Just("OpenAI".to_owned()), "\\PC{0,24}"]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid body with bytes flipped, dropped or inserted.
fn mutated(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..valid.len(), any::<u8>(), 0..3u8), 1..6).prop_map(move |edits| {
        let mut bytes = valid.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match op {
                0 => bytes[at] = byte,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json().prop_map(|v| v.to_string().into_bytes()),
        2 => mutated(r#"{"sku":{"name":"Standard","capacity":5},"properties":{"model":{"format":"OpenAI","name":"smollm2","version":"1"}}}"#),
        2 => mutated(r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":4,"stream":true}"#),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~-]{0,16}",
        prop::sample::select(
            &[
                "..",
                ".",
                "%00",
                "%FF",
                "%2F",
                "a%20b",
                "%E2%82%AC",
                "deployments",
                "chat",
                "completions",
                "listKeys",
                "models"
            ][..]
        )
        .prop_map(str::to_owned),
        "[\\PC&&[^/?#%]]{1,8}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
    ]
}

fn path(account: String) -> impl Strategy<Value = String> {
    let arm = prop::collection::vec(segment(), 0..4)
        .prop_map(move |extra| format!("{account}/deployments/{}", extra.join("/")));
    let data =
        prop::collection::vec(segment(), 0..4).prop_map(|extra| format!("/openai/deployments/{}", extra.join("/")));
    let known = prop::sample::select(vec![
        "/openai/deployments/d/chat/completions".to_owned(),
        "/openai/deployments/d/completions".to_owned(),
        "/openai/fine_tuning/jobs".to_owned(),
        "/openai/files".to_owned(),
        "/subscriptions".to_owned(),
        "/berth/v1/principals".to_owned(),
        "/berth/v1/identity/token".to_owned(),
    ]);
    let anything = prop::collection::vec(segment(), 1..7).prop_map(|s| format!("/{}", s.join("/")));
    prop_oneof![3 => arm, 3 => data, 2 => known, 2 => anything]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("?api-version=2024-10-01".to_owned()),
        Just("?api-version=2024-10-21".to_owned()),
        Just(String::new()),
        "[a-z0-9=&%.-]{0,24}".prop_map(|q| format!("?{q}")),
    ]
}

#[test]
fn no_input_reaches_a_panic_or_a_server_error() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let h = Harness::new();
    let token = format!("Bearer {}", h.control.credentials().admin_token);
    let c = h.control.credentials();
    let key = berth_control::AccountKey {
        subscription_id: c.subscription_id.clone(),
        resource_group: c.resource_group.clone(),
        account: c.account.clone(),
    };
    let account = h.control.account(&key).unwrap();
    let api_key = h.control.account_keys(&account).unwrap().0;
    // A deployment that exists (its model never loads here), so that data-plane bodies reach parsing.
    let put = r#"{"sku":{"name":"Standard","capacity":5},"properties":{"model":{"format":"OpenAI","name":"none","version":"1"}}}"#;
    let _ = rt.block_on(h.arm("PUT", &format!("{}/deployments/d", h.account_path()), put));

    let method = prop::sample::select(vec!["GET", "PUT", "POST", "PATCH", "DELETE"]);
    let auth = prop::sample::select(vec![0u8, 1, 2, 3]);
    let input = (method, path(h.account_path()), query(), auth, body());
    let mut runner = TestRunner::new(Config { cases: 10000, failure_persistence: None, ..Config::default() });
    let tried = std::cell::Cell::new(0usize);
    let result = runner.run(&input, |(method, path, query, auth, body)| {
        tried.set(tried.get() + 1);
        let mut req = Request::builder().method(method).uri(format!("{path}{query}"));
        req = match auth {
            0 => req.header("authorization", &token),
            1 => req.header("api-key", &api_key),
            2 => req.header("authorization", "Bearer e30.e30.e30"),
            _ => req,
        };
        let req = req
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .map_err(|e| TestCaseError::reject(e.to_string()))?;
        let (status, bytes) = rt.block_on(async {
            let resp = router(AppState(h.control.clone())).oneshot(req).await.unwrap();
            (resp.status(), resp.into_body().collect().await.unwrap().to_bytes())
        });
        prop_assert!(
            !status.is_server_error(),
            "{method} {path}{query} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() && !bytes.is_empty() {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("{method} {path}: {status} body is not JSON ({e})")))?;
            let shaped = v["error"]["message"].is_string() || v["message"].is_string();
            prop_assert!(shaped, "{method} {path}{query} -> {status}: {v}");
        }
        Ok(())
    });
    result.unwrap();
    let tried = tried.get();
    assert!(tried >= 10000, "{tried} inputs");
    println!("fuzzed {tried} inputs over both planes");
}

/// Found by the fuzzer: a path segment that is not UTF-8 once decoded got axum's plain-text 400.
#[tokio::test]
async fn refusals_before_a_handler_keep_the_plane_s_shape() {
    let h = Harness::new();
    let (status, body) = h.arm("GET", &format!("{}/deployments/%FF", h.account_path()), "").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (400, Some("InvalidRequest")), "{body}");
    let (status, body) =
        h.call("GET", "/openai/deployments/%FF/chat/completions?api-version=2024-10-21", &[], "").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (405, Some("405")), "{body}");
    let (status, body) = h.arm("POST", &format!("{}/deployments/d", h.account_path()), "").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (405, Some("MethodNotAllowed")), "{body}");
}
