//! Issue 12's holes, each held shut through the real router: what an attacker or a careless client
//! sends gets an answer in its plane's shape, and nothing it sends reaches arithmetic unbounded.

use crate::Harness;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Item 1: the api-version check sliced the decoded value at byte 10, inside "é": the task panicked
/// before authentication and the client saw a dropped connection.
#[tokio::test]
async fn an_api_version_cut_inside_a_character_is_refused_on_both_planes() {
    let h = Harness::new();
    let auth = format!("Bearer {}", h.control.credentials().admin_token);
    for version in ["123456789%C3%A9", "2024-10-0%C3%A9", "2024-10-21-%C3%A9", "%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80x"]
    {
        let arm = format!("{}/deployments?api-version={version}", h.account_path());
        let (status, body) = h.call("GET", &arm, &[("authorization", &auth)], "").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("InvalidApiVersionParameter"))
        );
        let data = format!("/openai/deployments/d/chat/completions?api-version={version}");
        let (status, body) = h.call("POST", &data, &[], r#"{"messages":[{"role":"user","content":"hi"}]}"#).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidApiVersion")));
    }
    // Well-formed versions still pass.
    for version in ["2024-10-21", "2024-12-01-preview"] {
        let arm = format!("{}/deployments?api-version={version}", h.account_path());
        let (status, body) = h.call("GET", &arm, &[("authorization", &auth)], "").await;
        assert_eq!(status, StatusCode::OK, "{version}: {body}");
    }
}

/// The class: a panic anywhere in a request is answered (500, the plane's shape) and logged; the
/// server goes on serving.
#[tokio::test]
async fn a_panicking_handler_answers_500_in_its_plane_s_shape() {
    let routes = Router::new()
        .route(
            "/openai/deployments/d/chat/completions",
            get(|| async { panic!("boom in a data-plane handler") as &'static str }),
        )
        .route("/subscriptions/s/panic", get(|| async { panic!("boom in a management handler") as &'static str }))
        .route("/openai/fine", get(|| async { "fine" }));
    let app = berth_server::layered(routes, HeaderValue::from_static("local"), HeaderValue::from_static("test"));
    let call = |uri: &'static str| {
        let app = app.clone();
        async move {
            let resp = app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            assert!(resp.headers().contains_key("x-request-id"));
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes)
                    .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
            )
        }
    };
    let (status, body) = call("/openai/deployments/d/chat/completions").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    insta::assert_json_snapshot!(body, @r#"
    {
      "error": {
        "code": "InternalServerError",
        "message": "The server had an error while processing your request. Please retry the request."
      }
    }
    "#);
    let (status, body) = call("/subscriptions/s/panic").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("InternalServerError"))
    );
    assert!(body["error"]["details"].is_array(), "ARM's shape: {body}");
    assert_eq!(call("/openai/fine").await, (StatusCode::OK, Value::String("fine".into())));
}

/// Item 2: `sku.capacity` took any i64 (1e19 saturated to i64::MAX), and `used + capacity` wrapped in
/// release builds, so a huge capacity passed the quota and turned it negative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_capacity_is_refused_before_it_meets_the_quota() {
    let h = Harness::new().with_model().await;
    let deployments = format!("{}/deployments", h.account_path());
    let body = |capacity: &str| {
        format!(
            r#"{{"sku":{{"name":"Standard","capacity":{capacity}}},"properties":{{"model":{{"format":"OpenAI","name":"smollm2","version":"1"}}}}}}"#
        )
    };
    let (status, first) = h.arm("PUT", &format!("{deployments}/first"), &body("10")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    for huge in ["9223372036854775802", "9223372036854775807", "\"9223372036854775807\"", "1000000"] {
        let (status, err) = h.arm("PUT", &format!("{deployments}/second"), &body(huge)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{huge}: {err}");
        assert_eq!(
            (err["error"]["code"].as_str(), err["error"]["target"].as_str()),
            (Some("InvalidResourceProperties"), Some("sku.capacity")),
            "{huge}: {err}"
        );
    }
    for unrepresentable in ["1e19", "-1e300", "1e308"] {
        let (status, err) = h.arm("PUT", &format!("{deployments}/second"), &body(unrepresentable)).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("InvalidRequestContent")),
            "{err}"
        );
    }
    // Nothing was stored, and the quota still counts only the first deployment.
    let (status, _) = h.arm("GET", &format!("{deployments}/second"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let sub = &h.control.credentials().subscription_id;
    let (_, usages) = h
        .arm("GET", &format!("/subscriptions/{sub}/providers/Microsoft.CognitiveServices/locations/local/usages"), "")
        .await;
    let standard = usages["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"]["value"] == "OpenAI.Standard.local")
        .unwrap()
        .clone();
    assert_eq!(standard["currentValue"].as_f64(), Some(10.0), "{standard}");
    // The rate-limit arithmetic saturates rather than wraps for any stored capacity.
    assert_eq!(
        berth_control::Limits::standard(i64::MAX),
        berth_control::Limits::Standard { requests_per_window: i64::MAX as u64, tokens_per_minute: u64::MAX }
    );
}

/// Item 6, management plane: fields Berth does not serve were dropped and answered with constants.
#[tokio::test]
async fn deployment_and_account_fields_berth_does_not_serve_are_refused_by_name() {
    let h = Harness::new();
    let put = |properties: &str| {
        format!(
            r#"{{"sku":{{"name":"Standard","capacity":1}},"properties":{{"model":{{"format":"OpenAI","name":"smollm2","version":"1"}}{properties}}}}}"#
        )
    };
    let dep = format!("{}/deployments/dep", h.account_path());
    for (extra, target) in [
        (r#","raiPolicyName":"Strict""#, "properties.raiPolicyName"),
        (r#","versionUpgradeOption":"OnceNewDefaultVersionAvailable""#, "properties.versionUpgradeOption"),
        (r#","scaleSettings":{"capacity":3}"#, "properties.scaleSettings"),
    ] {
        let (status, err) = h.arm("PUT", &dep, &put(extra)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["target"].as_str(), Some(target), "{err}");
    }
    let (status, err) = h.arm("PUT", &dep, &put("").replacen('{', r#"{"sku_name":"x","#, 1)).await;
    assert_eq!((status, err["error"]["target"].as_str()), (StatusCode::BAD_REQUEST, Some("sku_name")), "{err}");
    let account = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/other",
        h.control.credentials().subscription_id,
        h.control.credentials().resource_group
    );
    for (properties, target) in [
        (r#"{"publicNetworkAccess":"Disabled"}"#, "properties.publicNetworkAccess"),
        (r#"{"disableLocalAuth":true}"#, "properties.disableLocalAuth"),
        (r#"{"networkAcls":{"defaultAction":"Deny"}}"#, "properties.networkAcls"),
    ] {
        let body = format!(r#"{{"location":"local","kind":"OpenAI","sku":{{"name":"S0"}},"properties":{properties}}}"#);
        let (status, err) = h.arm("PUT", &account, &body).await;
        assert_eq!((status, err["error"]["target"].as_str()), (StatusCode::BAD_REQUEST, Some(target)), "{err}");
    }
    let fine = r#"{"location":"local","kind":"OpenAI","sku":{"name":"S0"},"properties":{"publicNetworkAccess":"Enabled","disableLocalAuth":false,"customSubDomainName":"other"}}"#;
    let (status, body) = h.arm("PUT", &account, fine).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Item 4: model import read and copied whatever server directory a Contributor named, and its errors
/// described the server's filesystem.
#[tokio::test]
async fn only_the_operator_may_import_from_a_server_path() {
    let h = Harness::new();
    let c = h.control.credentials().clone();
    let admin = h.control.authenticate_bearer(&c.admin_token).unwrap();
    let (p, _) = h.control.add_principal(&admin, &c.tenant_id, "contributor", "User").unwrap();
    let scope = h.account_path();
    h.control.assign_role(&admin, "33333333-3333-3333-3333-333333333333", &scope, "Contributor", &p.object_id).unwrap();
    let who = berth_control::Principal { tenant_id: p.tenant_id.clone(), object_id: p.object_id.clone() };
    let token = h.control.issue_token(&admin, Some(&who)).unwrap().token;
    let auth = format!("Bearer {token}");
    let uri = format!("{}/models/import?api-version=2024-10-01", h.account_path());
    for dir in ["/etc", "/root/.ssh", "/nonexistent"] {
        let body = format!(r#"{{"base":"smollm2","adapter":"{dir}"}}"#);
        let (status, err) = h.call("POST", &uri, &[("authorization", &auth)], &body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("AuthorizationFailed")),
            "{err}"
        );
        assert!(!err.to_string().contains(dir), "the answer says nothing of the path: {err}");
    }
}
