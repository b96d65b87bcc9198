//! `GET /metrics`: this replica's Prometheus metrics (OpenMetrics text). Deployment and account names
//! of every tenant are in it, so it answers the operator only: scrape with the operator's bearer token
//! (`berth token --raw`; Prometheus's `authorization: {credentials: ...}`).

use crate::extract::ArmPrincipal;
use crate::{AppState, ArmApiError};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

pub async fn scrape(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
) -> Result<Response, ArmApiError> {
    state.operator(&principal)?;
    let text = state.render_metrics()?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}
