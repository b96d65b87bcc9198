//! Requests axum refuses before a handler runs (a path segment that is not UTF-8 once decoded, a
//! query that does not parse, a method a route lacks) get its plain-text answers; this layer gives
//! them the error shape of the plane they were addressed to, so that no client ever sees an answer
//! outside the contract.

use crate::{ArmApiError, OpenAiApiError};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The management plane is everything under `/subscriptions` and Berth's own `/berth/v1`; the rest
/// is the data plane.
fn is_management(path: &str) -> bool {
    path.starts_with("/subscriptions") || path.starts_with("/berth/") || path.starts_with("/providers")
}

pub async fn shape_rejections(req: Request, next: Next) -> Response {
    let management = is_management(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp.headers().get(header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !status.is_client_error() || !plain {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => "The HTTP method is not supported on this resource.".to_owned(),
        (_, true) => status.canonical_reason().unwrap_or("The request is invalid.").to_owned(),
        _ => text,
    };
    let mut shaped = if management {
        let code = if status == StatusCode::METHOD_NOT_ALLOWED { "MethodNotAllowed" } else { "InvalidRequest" };
        ArmApiError::new(status, code, message).into_response()
    } else {
        OpenAiApiError::plain(status, &status.as_u16().to_string(), message).into_response()
    };
    if let Some(allow) = allow {
        shaped.headers_mut().insert(header::ALLOW, allow);
    }
    shaped
}
