//! The managed-identity token endpoint, shaped as Azure App Service serves it to a workload
//! (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`): `GET ?api-version=2019-08-01&resource=...` with the
//! identity's secret in `X-IDENTITY-HEADER` answers a bearer token for that identity. This is what
//! `az login --identity` and `azure-identity`'s `ManagedIdentityCredential` call. Its errors are
//! App Service's: `{"statusCode", "message"}`.

use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_control::ControlError;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

pub const IDENTITY_TOKEN_PATH: &str = "/berth/v1/identity/token";
const API_VERSION: &str = "2019-08-01";

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "statusCode": status.as_u16(), "message": message.into() }))).into_response()
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    resource: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
    principal_id: Option<String>,
    mi_res_id: Option<String>,
}

pub async fn identity_token(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let raw: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let q: TokenQuery = match serde_json::from_value(json!(raw)) {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("The query is not valid: {e}.")),
    };
    if q.api_version.as_deref() != Some(API_VERSION) {
        return refuse(StatusCode::BAD_REQUEST, format!("The api-version must be '{API_VERSION}'."));
    }
    let Some(resource) = q.resource.filter(|r| !r.trim().is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "The resource parameter is required.");
    };
    if q.mi_res_id.is_some() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Berth names managed identities by object id; use client_id or object_id.",
        );
    }
    let Some(secret) = headers.get("x-identity-header").and_then(|v| v.to_str().ok()) else {
        return refuse(StatusCode::UNAUTHORIZED, "The X-IDENTITY-HEADER header is required.");
    };
    let requested = q.client_id.or(q.object_id).or(q.principal_id);
    match state.managed_identity_token(secret, requested.as_deref()) {
        Ok(token) => {
            let expires_on = berth_control::unix_of(&token.expires_at).unwrap_or_default();
            Json(json!({
                "access_token": token.token,
                "expires_on": expires_on.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": token.principal,
            }))
            .into_response()
        }
        Err(ControlError::Unauthenticated { message, .. }) => refuse(StatusCode::UNAUTHORIZED, message),
        Err(ControlError::Invalid { message, .. }) => refuse(StatusCode::BAD_REQUEST, message),
        Err(e) => {
            tracing::error!(error = %e, "identity endpoint failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "The identity endpoint failed; retry.")
        }
    }
}
