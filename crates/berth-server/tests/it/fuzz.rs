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
        edge_number(),
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

/// Numbers at the edges of i64, u64 and f64, and numbers spelled as strings (as the Azure CLI sends
/// capacities), in every numeric field.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX]).prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, u64::MAX - 1, 1 << 63]).prop_map(Value::from),
        prop::sample::select(vec![1e308, -1e308, -0.0, 5e-324, 1e19, 9.2e18, 0.5, 1e-7])
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "NaN",
            "-NaN",
            "Infinity",
            "-Infinity",
            "inf",
            "1e308",
            "-0",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "0x10",
            " 5 ",
            "5.0",
            "",
        ])
        .prop_map(Value::from),
    ]
}

/// A valid body whose numeric fields take edge values, and an arbitrary unknown field.
fn edged(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let base: Value = serde_json::from_str(valid).unwrap_or(Value::Null);
    (prop::collection::vec((prop::sample::select(FIELDS), edge_number()), 1..4), "\\PC{1,12}", edge_number()).prop_map(
        move |(edits, unknown, v)| {
            let mut body = base.clone();
            for (field, value) in edits {
                set_everywhere(&mut body, field, &value);
            }
            if let Value::Object(m) = &mut body {
                m.insert(unknown, v);
            }
            body.to_string().into_bytes()
        },
    )
}

/// Sets `field` to `value` wherever the body has it (at any depth), and at the top level.
fn set_everywhere(body: &mut Value, field: &str, value: &Value) {
    match body {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == field {
                    *v = value.clone();
                } else {
                    set_everywhere(v, field, value);
                }
            }
            m.entry(field.to_owned()).or_insert_with(|| value.clone());
        }
        Value::Array(items) => items.iter_mut().for_each(|v| set_everywhere(v, field, value)),
        _ => {}
    }
}

/// Any Unicode, percent-encoded byte by byte (so that the decoded value may be cut anywhere).
fn encoded_unicode() -> impl Strategy<Value = String> {
    "\\PC{0,16}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect())
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
        2 => edged(r#"{"sku":{"name":"Standard","capacity":5},"properties":{"model":{"format":"OpenAI","name":"smollm2","version":"1"}}}"#),
        2 => edged(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"temperature":0,"top_p":1,"n":1,"seed":1,"presence_penalty":0,"frequency_penalty":0,"logit_bias":{"1":1}}"#),
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
        encoded_unicode(),
    ]
}

fn path(account: String) -> impl Strategy<Value = String> {
    let arm = prop::collection::vec(segment(), 0..4)
        .prop_map(move |extra| format!("{account}/deployments/{}", extra.join("/")));
    let data =
        prop::collection::vec(segment(), 0..4).prop_map(|extra| format!("/openai/deployments/{}", extra.join("/")));
    let known = prop::sample::select(vec![
        "/openai/deployments/dd/chat/completions".to_owned(),
        "/openai/deployments/dd/completions".to_owned(),
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
        // Every query parameter Berth reads, with any Unicode or stray bytes as its value.
        (
            prop::sample::select(vec![
                "api-version",
                "limit",
                "after",
                "from",
                "to",
                "resourceGroup",
                "account",
                "deployment",
                "purpose"
            ]),
            encoded_unicode(),
            prop::sample::select(vec!["2024-10-21", "2024-10-01", "", "123456789%C3%A9", "%FF%FE", "2024-02-30"]),
        )
            .prop_map(|(name, value, version)| format!("?api-version={version}&{name}={value}")),
    ]
}

#[test]
fn no_input_reaches_a_panic_or_a_server_error() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let h = rt.block_on(Harness::new().with_model());
    let token = format!("Bearer {}", h.control.credentials().admin_token);
    let c = h.control.credentials();
    let key = berth_control::AccountKey {
        subscription_id: c.subscription_id.clone(),
        resource_group: c.resource_group.clone(),
        account: c.account.clone(),
    };
    let account = h.control.account(&key).unwrap();
    let api_key = h.control.account_keys(&account).unwrap().0;
    // A deployment that really serves, so that data-plane bodies are fuzzed past routing into
    // validation and the engine.
    let put = r#"{"sku":{"name":"Standard","capacity":1000},"properties":{"model":{"format":"OpenAI","name":"smollm2","version":"1"}}}"#;
    let (status, created) = rt.block_on(h.arm("PUT", &format!("{}/deployments/dd", h.account_path()), put));
    assert_eq!(status.as_u16(), 201, "{created}");
    let ready = std::time::Instant::now();
    while h.control.host().route(&berth_control::DeploymentKey::new(&key, "dd")).is_none() {
        assert!(ready.elapsed().as_secs() < 120, "the fuzzer's deployment never became ready");
        rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(50)).await });
    }

    let method = prop::sample::select(vec!["GET", "PUT", "POST", "PATCH", "DELETE"]);
    let auth = prop::sample::select(vec![0u8, 1, 2, 3]);
    let header = (
        prop::sample::select(vec![
            "api-key",
            "authorization",
            "x-ms-authorization-auxiliary",
            "x-identity-header",
            "content-type",
            "x-ms-client-request-id",
        ]),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            "\\PC{0,16}".prop_map(|s| format!("Bearer {s}").into_bytes()),
        ],
    );
    let headers = prop::collection::vec(header, 0..3);
    let input = (method, path(h.account_path()), query(), auth, headers, body());
    // 10,000 inputs a CI run; BERTH_FUZZ_CASES sets more for a long run.
    let cases = std::env::var("BERTH_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let tried = std::cell::Cell::new(0usize);
    let result = runner.run(&input, |(method, path, query, auth, headers, body)| {
        tried.set(tried.get() + 1);
        let mut req = Request::builder().method(method).uri(format!("{path}{query}"));
        req = match auth {
            0 => req.header("authorization", &token),
            1 => req.header("api-key", &api_key),
            2 => req.header("authorization", "Bearer e30.e30.e30"),
            _ => req,
        };
        // Headers clients and attackers send, with any bytes a header may carry (obs-text included).
        for (name, value) in &headers {
            if let Ok(value) = axum::http::HeaderValue::from_bytes(value) {
                req = req.header(*name, value);
            }
        }
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
    assert!(tried >= cases as usize, "{tried} inputs");
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
    let (status, body) = h.arm("POST", &format!("{}/deployments/dd", h.account_path()), "").await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (405, Some("MethodNotAllowed")), "{body}");
}
