//! Extractors that turn malformed input into each surface's own error shape: JSON bodies, the
//! `api-version` query parameter, and the ARM bearer principal.

use crate::{AppState, ArmApiError, OpenAiApiError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use berth_control::Principal;
use serde::de::DeserializeOwned;

/// A JSON body on the management plane.
pub struct ArmJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ArmJson<T> {
    type Rejection = ArmApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ArmApiError::new(e.status(), "InvalidRequestContent", e.body_text()))?;
        let value = serde_json::from_slice(&bytes).map(ArmJson).map_err(|e| {
            ArmApiError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        })?;
        if let Some(path) = nul_in(&bytes) {
            return Err(ArmApiError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid: the value at '{path}' contains a NUL character (\\u0000)."),
            ));
        }
        Ok(value)
    }
}

/// Where a JSON body holds a string (or key) with a NUL character, which no database text column
/// takes: refused up front as the client's mistake, never a 500 from the database.
fn nul_in(bytes: &[u8]) -> Option<String> {
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(path.to_owned()),
            serde_json::Value::Array(items) => {
                items.iter().enumerate().find_map(|(i, item)| walk(item, &format!("{path}[{i}]")))
            }
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if k.contains('\0') {
                    return Some(here.replace('\0', "\\u0000"));
                }
                walk(item, &here)
            }),
            _ => None,
        }
    }
    // Only a body that spells the escape can hold one; most bodies are not walked at all.
    if !bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return None;
    }
    walk(&serde_json::from_slice(bytes).ok()?, "")
}

/// A JSON body on the data plane.
pub struct OpenAiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OpenAiJson<T> {
    type Rejection = OpenAiApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let mut err = OpenAiApiError::invalid("", "invalid_request", e.body_text());
            err.status = e.status();
            err
        })?;
        let value = serde_json::from_slice(&bytes).map(OpenAiJson).map_err(|e| {
            OpenAiApiError::invalid(
                "",
                "invalid_json",
                format!("We could not parse the JSON body of your request ({e}). The request body must be a JSON object with the fields this operation accepts."),
            )
        })?;
        if let Some(path) = nul_in(&bytes) {
            return Err(OpenAiApiError::invalid(
                &path,
                "invalid_value",
                format!("'{path}' contains a NUL character (\\u0000), which is not accepted."),
            ));
        }
        Ok(value)
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `YYYY-MM-DD` or `YYYY-MM-DD-preview` (any suffix made of letters and digits, as Azure's previews
/// are). The value is whatever the client sent, decoded, so it is split with checked slicing only.
pub fn well_formed_api_version(v: &str) -> bool {
    let Some((date, rest)) = v.split_at_checked(10) else { return false };
    let digits_and_dashes =
        date.bytes().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == b'-' } else { c.is_ascii_digit() });
    let date_ok = digits_and_dashes && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
    let suffix_ok = match rest.strip_prefix('-') {
        None => rest.is_empty(),
        Some(tag) => !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric()),
    };
    date_ok && suffix_ok
}

/// The management plane's required `api-version`.
pub fn arm_api_version(uri: &Uri) -> Result<String, ArmApiError> {
    match query_param(uri, "api-version") {
        None => Err(ArmApiError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if !well_formed_api_version(&v) => Err(ArmApiError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are dates of the form 'YYYY-MM-DD' or 'YYYY-MM-DD-preview'."),
        )),
        Some(v) => Ok(v),
    }
}

/// Whether a path is on the v1 surface (`/openai/v1/...`), where `api-version` is optional.
pub fn is_v1(uri: &Uri) -> bool {
    let path = uri.path();
    path.contains("/openai/v1/") || path.ends_with("/openai/v1")
}

/// The data plane's `api-version`: required, as Azure OpenAI requires it, except on the v1 surface,
/// which takes none (or `preview` / `latest`).
pub fn openai_api_version(uri: &Uri) -> Result<String, OpenAiApiError> {
    let given = query_param(uri, "api-version");
    if is_v1(uri) {
        return match given.as_deref() {
            None => Ok("v1".into()),
            Some(v @ ("preview" | "latest" | "v1")) => Ok(v.to_owned()),
            Some(v) if well_formed_api_version(v) => Ok(v.to_owned()),
            Some(v) => Err(OpenAiApiError::plain(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersion",
                format!("The api-version '{v}' is invalid; the v1 API takes none, or 'preview' or 'latest'."),
            )),
        };
    }
    match given {
        None => Err(OpenAiApiError::plain(
            StatusCode::BAD_REQUEST,
            "MissingApiVersion",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if !well_formed_api_version(&v) => Err(OpenAiApiError::plain(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersion",
            format!("The api-version '{v}' is invalid; use a date such as 2024-10-21."),
        )),
        Some(v) => Ok(v),
    }
}

pub fn bearer_token(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    let s = value.to_str().map_err(|_| ()).ok();
    Some(match s.and_then(|s| s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer "))) {
        Some(t) if !t.trim().is_empty() => Ok(t.trim()),
        _ => Err(()),
    })
}

/// The authenticated caller of a management-plane request.
pub struct ArmPrincipal(pub Principal);

impl FromRequestParts<AppState> for ArmPrincipal {
    type Rejection = ArmApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match bearer_token(&parts.headers) {
            None => Err(ArmApiError::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )),
            Some(Err(())) => Err(ArmApiError::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            )),
            Some(Ok(token)) => Ok(ArmPrincipal(state.authenticate_bearer(token)?)),
        }
    }
}
