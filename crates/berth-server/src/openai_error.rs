//! The data plane's one error type: `{"error": {code, message, type, param}}` as Azure OpenAI answers.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::openai::{OpenAiError, OpenAiErrorBody};
use berth_control::ControlError;

#[derive(Debug)]
pub struct OpenAiApiError {
    pub status: StatusCode,
    pub body: OpenAiErrorBody,
    pub retry_after_ms: Option<u64>,
    /// The deployment's remaining limits, for `x-ratelimit-remaining-*`.
    pub remaining: Option<berth_control::Remaining>,
}

impl OpenAiApiError {
    /// 400 `invalid_request_error` naming the offending parameter.
    pub fn invalid(param: &str, code: &str, message: impl Into<String>) -> Self {
        OpenAiApiError {
            status: StatusCode::BAD_REQUEST,
            body: OpenAiErrorBody {
                code: code.into(),
                message: message.into(),
                kind: Some("invalid_request_error".into()),
                param: (!param.is_empty()).then(|| param.to_owned()),
            },
            retry_after_ms: None,
            remaining: None,
        }
    }

    pub fn plain(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        OpenAiApiError {
            status,
            body: OpenAiErrorBody { code: code.into(), message: message.into(), kind: None, param: None },
            retry_after_ms: None,
            remaining: None,
        }
    }

    pub fn deployment_not_found() -> Self {
        Self::plain(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::plain(StatusCode::TOO_MANY_REQUESTS, "429", message);
        e.retry_after_ms = Some(1000);
        e
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error on the data plane");
        Self::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The server had an error while processing your request. Please retry the request.",
        )
    }
}

impl From<ControlError> for OpenAiApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid { code, message, target } => {
                Self::invalid(target.as_deref().unwrap_or(""), code, message)
            }
            ControlError::NotFound { code, message } => Self::plain(StatusCode::NOT_FOUND, code, message),
            ControlError::Unauthenticated { message, .. } => Self::plain(StatusCode::UNAUTHORIZED, "401", message),
            ControlError::Forbidden { message, .. } => Self::plain(StatusCode::FORBIDDEN, "403", message),
            ControlError::Busy(message) => Self::overloaded(message),
            ControlError::Conflict(message) => Self::plain(StatusCode::CONFLICT, "409", message),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for OpenAiApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(OpenAiError { error: self.body })).into_response();
        if let Some(ms) = self.retry_after_ms {
            let h = resp.headers_mut();
            h.insert("retry-after-ms", HeaderValue::from(ms));
            h.insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
        }
        if let Some(r) = self.remaining {
            crate::headers::rate_limit_headers(resp.headers_mut(), &r);
        }
        resp
    }
}
