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

    /// 503 `ServiceUnavailable` with `retry-after`: a passing state of the server.
    pub fn unavailable(message: &str) -> Self {
        unavailable(message)
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
            ControlError::Engine(e) => e.into(),
            ControlError::Conflict(message) | ControlError::ConflictCode { message, .. } => {
                Self::plain(StatusCode::CONFLICT, "409", message)
            }
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

impl From<berth_engine::Failure> for OpenAiApiError {
    /// The one mapping of engine failures to the data plane: a client's mistake is a 4xx, a passing
    /// state of the server a 429 or 503 with `retry-after`, and only the engine's own fault a 500.
    fn from(f: berth_engine::Failure) -> Self {
        use berth_engine::Failure;
        match f {
            Failure::QueueFull(why) => {
                Self::overloaded(format!("The deployment is at capacity ({why}). Please retry after 1 second."))
            }
            Failure::PromptExceedsCache { needed_tokens, capacity_tokens } => Self::invalid(
                "messages",
                "context_length_exceeded",
                format!("This deployment can hold at most {capacity_tokens} tokens in its cache. However, your messages resulted in {needed_tokens} tokens. Please reduce the length of the messages."),
            ),
            Failure::OutgrewCache { capacity_tokens } => Self::invalid(
                "max_tokens",
                "context_length_exceeded",
                format!("The prompt and completion together outgrew this deployment's cache of {capacity_tokens} tokens. Please reduce the length of the messages or set a lower max_tokens."),
            ),
            Failure::InvalidRequest(why) => Self::invalid("", "invalid_request", why),
            Failure::AdapterUnavailable { .. } | Failure::ShuttingDown => {
                tracing::warn!(failure = %f, "a request lost its engine or adapter");
                unavailable("The deployment is being updated or removed. Please retry after 1 second.")
            }
            Failure::Unavailable(why) => {
                tracing::warn!(%why, "no engine could take a request");
                unavailable("The deployment's engines are unavailable at the moment. Please retry after 1 second.")
            }
            Failure::Internal(why) => Self::internal(why),
        }
    }
}

impl From<berth_engine::EngineError> for OpenAiApiError {
    fn from(e: berth_engine::EngineError) -> Self {
        match e {
            berth_engine::EngineError::Busy(why) => berth_engine::Failure::QueueFull(why).into(),
            berth_engine::EngineError::Stopped => berth_engine::Failure::ShuttingDown.into(),
            other => Self::internal(other),
        }
    }
}

fn unavailable(message: &str) -> OpenAiApiError {
    let mut e = OpenAiApiError::plain(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
    e.retry_after_ms = Some(1000);
    e
}
