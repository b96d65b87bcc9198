//! The management plane's one error type: ARM's `{"error": {code, message, target, details, additionalInfo}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::arm::{ArmError, ArmErrorBody};
use berth_control::ControlError;

#[derive(Debug)]
pub struct ArmApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ArmApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ArmApiError { status, code: code.to_owned(), message: message.into(), target: None }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn body(&self) -> ArmErrorBody {
        ArmErrorBody {
            code: self.code.clone(),
            message: self.message.clone(),
            target: self.target.clone(),
            details: vec![],
            additional_info: vec![],
        }
    }
}

impl From<ControlError> for ArmApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid { code, message, target } => {
                ArmApiError { status: StatusCode::BAD_REQUEST, code: code.into(), message, target }
            }
            ControlError::NotFound { code, message } => Self::new(StatusCode::NOT_FOUND, code, message),
            ControlError::Unauthenticated { code, message } => Self::new(StatusCode::UNAUTHORIZED, code, message),
            ControlError::Forbidden { code, message } => Self::new(StatusCode::FORBIDDEN, code, message),
            ControlError::Conflict(message) => Self::new(StatusCode::CONFLICT, "Conflict", message),
            ControlError::ConflictCode { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            ControlError::Busy(message) => Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message),
            other => {
                tracing::error!(error = %other, "internal error on the management plane");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The server encountered an internal error. Please retry the request.",
                )
            }
        }
    }
}

impl IntoResponse for ArmApiError {
    fn into_response(self) -> Response {
        let body = ArmError { error: self.body() };
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert("x-ms-failure-cause", axum::http::HeaderValue::from_static("gateway"));
        resp
    }
}
