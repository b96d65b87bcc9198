//! The router driven in process: wire shapes of errors and resources, snapshot-tested. The control
//! plane is real (a temporary data directory with its SQLite database); no model is loaded here, the
//! model paths are covered by the Python integration tests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_control::{Control, ControlConfig};
use berth_server::{router, AppState};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

mod fuzz;
mod hardening;

struct Harness {
    control: Arc<Control>,
    dir: std::path::PathBuf,
}

impl Harness {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("berth-server-it-{}", berth_control::new_hex_id()));
        let control = Control::open(ControlConfig::new(dir.clone(), "http://berth.test".into())).unwrap();
        Harness { control, dir }
    }

    /// Registers the test model (`BERTH_TEST_GGUF`, set by `scripts/test.sh`) as the base model
    /// `smollm2`, so that deployments of it exist for real.
    async fn with_model(self) -> Self {
        let path = std::env::var("BERTH_TEST_GGUF")
            .expect("BERTH_TEST_GGUF must name the SmolLM2 GGUF (scripts/fetch-model.sh prints it)");
        self.control.add_base_model("smollm2", &path).await.unwrap();
        self
    }

    fn account_path(&self) -> String {
        let c = self.control.credentials();
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
            c.subscription_id, c.resource_group, c.account
        )
    }

    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap();
        let resp = router(AppState(self.control.clone())).oneshot(req).await.unwrap();
        let status = resp.status();
        assert!(resp.headers().contains_key("x-request-id"), "every answer carries a request id");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, json)
    }

    async fn arm(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let auth = format!("Bearer {}", self.control.credentials().admin_token);
        self.call(method, &format!("{path}?api-version=2024-10-01"), &[("authorization", &auth)], body).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn management_plane_errors_have_arm_shape() {
    let h = Harness::new();
    let deployments = format!("{}/deployments", h.account_path());
    let (status, body) = h.call("GET", &deployments, &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    insta::assert_json_snapshot!(body, @r#"
    {
      "error": {
        "code": "AuthenticationFailed",
        "message": "Authentication failed. The 'Authorization' header is missing.",
        "details": [],
        "additionalInfo": []
      }
    }
    "#);
    let auth = format!("Bearer {}", h.control.credentials().admin_token);
    let (status, body) = h.call("GET", &deployments, &[("authorization", &auth)], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!(body, @r#"
    {
      "error": {
        "code": "MissingApiVersionParameter",
        "message": "The api-version query parameter (?api-version=) is required for all requests.",
        "details": [],
        "additionalInfo": []
      }
    }
    "#);
    let (status, body) = h.arm("PUT", &format!("{deployments}/dep"), "{\"sku\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "InvalidRequestContent");
    let (status, body) = h
        .arm("PUT", &format!("{deployments}/dep"), r#"{"sku":{"name":"Standard","capacity":1},"properties":{"model":{"format":"OpenAI","name":"gpt-4o-ft","version":"1"}}}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!(body, @r#"
    {
      "error": {
        "code": "DeploymentModelNotSupported",
        "message": "The model 'gpt-4o-ft' of format 'OpenAI' and version '1' is not supported or does not exist in this account.",
        "target": "properties.model",
        "details": [],
        "additionalInfo": []
      }
    }
    "#);
    let (status, body) = h.arm("GET", &format!("{deployments}/dep"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NotFound");
    let (status, body) = h.arm("GET", "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/a/deployments", "").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("SubscriptionNotFound")));
    let (status, body) = h.arm("DELETE", &format!("{deployments}/dep"), "").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
}

#[tokio::test]
async fn account_and_keys_shapes() {
    let h = Harness::new();
    let (status, mut body) = h.arm("GET", &h.account_path(), "").await;
    assert_eq!(status, StatusCode::OK);
    for volatile in ["id", "subscriptionId", "tenantId"] {
        body[volatile] = Value::String(format!("[{volatile}]"));
    }
    insta::assert_json_snapshot!(body, @r#"
    {
      "id": "[id]",
      "name": "berth",
      "type": "Microsoft.CognitiveServices/accounts",
      "kind": "OpenAI",
      "location": "local",
      "sku": {
        "name": "S0"
      },
      "tags": {},
      "properties": {
        "endpoint": "http://berth.test/accounts/berth/",
        "endpoints": {
          "OpenAI Language Model Instance API": "http://berth.test/accounts/berth/"
        },
        "provisioningState": "Succeeded",
        "customSubDomainName": "berth",
        "publicNetworkAccess": "Enabled"
      },
      "resourceGroup": "berth-rg",
      "subscriptionId": "[subscriptionId]",
      "tenantId": "[tenantId]",
      "endpoint": "http://berth.test/accounts/berth/"
    }
    "#);
    let (status, keys) = h.arm("POST", &format!("{}/listKeys", h.account_path()), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys["key1"].as_str().unwrap().len(), 64);
    let (status, subs) = h.arm("GET", "/subscriptions", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(subs["value"][0]["subscriptionId"], h.control.credentials().subscription_id.as_str());
}

#[tokio::test]
async fn data_plane_errors_have_openai_shape() {
    let h = Harness::new();
    let key = h.control.credentials().clone();
    let (status, keys) = h.arm("POST", &format!("{}/listKeys", h.account_path()), "").await;
    assert_eq!(status, StatusCode::OK);
    let api_key = keys["key1"].as_str().unwrap().to_owned();
    let uri = "/openai/deployments/missing/chat/completions?api-version=2024-10-21";
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, err) = h.call("POST", uri, &[], body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "401");
    let (status, err) = h.call("POST", uri, &[("api-key", "wrong")], body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    insta::assert_json_snapshot!(err, @r#"
    {
      "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."
      }
    }
    "#);
    let (status, err) = h.call("POST", uri, &[("api-key", &api_key)], body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!(err, @r#"
    {
      "error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."
      }
    }
    "#);
    let (status, err) = h.call("POST", uri, &[("api-key", &api_key)], "{\"messages\": [").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (err["error"]["type"].as_str(), err["error"]["code"].as_str()),
        (Some("invalid_request_error"), Some("invalid_json"))
    );
    // Bearer on the account's own endpoint.
    let auth = format!("Bearer {}", key.admin_token);
    let (status, err) = h
        .call(
            "POST",
            "/accounts/berth/openai/deployments/missing/chat/completions?api-version=2024-10-21",
            &[("authorization", &auth)],
            body,
        )
        .await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("DeploymentNotFound")));
    let (status, models) = h.call("GET", "/openai/models?api-version=2024-10-21", &[("api-key", &api_key)], "").await;
    assert_eq!((status, models["object"].as_str()), (StatusCode::OK, Some("list")));
    let (status, err) = h.call("GET", "/nowhere", &[], "").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("404")));
}
