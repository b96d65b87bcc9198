use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// 200 once the deployments of the last run are loaded again; 503 before.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ok", "engines": state.host().loaded_engines()})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting"})))
    }
}
