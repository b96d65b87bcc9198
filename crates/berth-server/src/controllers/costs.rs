//! The cost report (`/subscriptions/{sub}/providers/Microsoft.CognitiveServices/costs`), the
//! deployments Berth deleted itself (`.../accounts/{a}/deploymentDeletions`), and the test clock
//! (`POST /berth/v1/clock`, only with `berth serve --test-clock`).

use super::AccountPath;
use crate::extract::{arm_api_version, ArmPrincipal};
use crate::{AppState, ArmApiError};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use berth_api::arm::{CostLineOut, CostReportOut, DeploymentDeletion, List};
use berth_control::CostScope;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub struct SubscriptionPath {
    pub subscription: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostQuery {
    from: Option<String>,
    to: Option<String>,
    resource_group: Option<String>,
    account: Option<String>,
    deployment: Option<String>,
}

pub async fn cost_report(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<SubscriptionPath>,
    Query(q): Query<CostQuery>,
) -> Result<Json<CostReportOut>, ArmApiError> {
    arm_api_version(&uri)?;
    let mut scope = format!("/subscriptions/{}", path.subscription);
    if let Some(g) = &q.resource_group {
        scope.push_str(&format!("/resourceGroups/{g}"));
        if let Some(a) = &q.account {
            scope.push_str(&format!("/providers/Microsoft.CognitiveServices/accounts/{a}"));
        }
    }
    state.authorize(&principal, &scope, berth_control::Action::Read)?;
    let now = berth_control::unix_now();
    let to = q.to.clone().unwrap_or_else(berth_control::now_rfc3339);
    let from = q.from.clone().unwrap_or_else(|| {
        chrono::DateTime::from_timestamp(now - 30 * 86_400, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    let scope = CostScope {
        subscription: path.subscription.clone(),
        resource_group: q.resource_group,
        account: q.account,
        deployment: q.deployment,
    };
    let report = state.cost_report(&scope, &from, &to)?;
    let value: Vec<CostLineOut> = report
        .lines
        .iter()
        .map(|l| CostLineOut {
            subscription_id: l.account.subscription_id.clone(),
            resource_group: l.account.resource_group.clone(),
            account: l.account.account.clone(),
            deployment: l.deployment.clone(),
            model: l.model.clone(),
            sku: l.sku.clone(),
            hosting_hours: l.hosting_hours,
            hosting_cost: l.hosting_cost,
            requests: l.requests,
            input_tokens: l.input_tokens,
            cached_input_tokens: l.cached_tokens,
            output_tokens: l.output_tokens,
            token_cost: l.token_cost,
            total_cost: l.total,
        })
        .collect();
    let total_cost = value.iter().map(|l| l.total_cost).sum();
    Ok(Json(CostReportOut { from: report.from, to: report.to, currency: report.currency, value, total_cost }))
}

pub async fn list_deletions(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
) -> Result<Json<List<DeploymentDeletion>>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    let value = state
        .deletions(&path.key())?
        .into_iter()
        .map(|d| DeploymentDeletion { name: d.deployment, model: d.model, reason: d.reason, deleted_at: d.deleted_at })
        .collect();
    Ok(Json(List { value, next_link: None }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockMove {
    advance_seconds: i64,
}

pub async fn move_clock(
    State(state): State<AppState>,
    ArmPrincipal(_principal): ArmPrincipal,
    body: Result<Json<ClockMove>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ArmApiError> {
    if !state.config().test_clock {
        return Err(ArmApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The clock can only be moved on a server started with --test-clock.",
        ));
    }
    let Json(m) = body.map_err(|e| {
        ArmApiError::bad_request("InvalidRequestContent", format!("Send {{\"advanceSeconds\": N}}: {e}"))
    })?;
    if m.advance_seconds < 0 {
        return Err(ArmApiError::bad_request("InvalidRequestContent", "The clock only moves forward."));
    }
    let now = berth_control::advance_clock(m.advance_seconds);
    let deleted = state.sweep_idle().await?;
    Ok(Json(json!({ "now": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "deleted": deleted })))
}
