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

/// Marks the answer that [`panicked`] gave, for [`shape_rejections`] to shape.
#[derive(Clone, Copy)]
struct Panicked;

/// The catch-panic layer's answer: logged with the panic's message (the request id is on the span),
/// never shown to the client.
pub fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a request handler panicked");
    let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    resp.extensions_mut().insert(Panicked);
    resp
}

pub async fn shape_rejections(req: Request, next: Next) -> Response {
    let management = is_management(req.uri().path());
    // A NUL character in a name or query value (%00) can name nothing Berth stores, and no database
    // text takes it: refused here, in the plane's shape, before any lookup.
    let uri = req.uri().to_string();
    if uri.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%00")) {
        let message = "The request URL contains a NUL character (%00), which no name or parameter may hold.";
        return if management {
            ArmApiError::bad_request("InvalidRequestUri", message).into_response()
        } else {
            OpenAiApiError::invalid("", "invalid_request", message).into_response()
        };
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<Panicked>().is_some() {
        return if management {
            ArmApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The server encountered an internal error. Please retry the request.",
            )
            .into_response()
        } else {
            OpenAiApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The server had an error while processing your request. Please retry the request.",
            )
            .into_response()
        };
    }
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
