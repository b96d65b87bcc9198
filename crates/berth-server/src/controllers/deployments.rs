//! `.../accounts/{account}/deployments[/{name}]`: create or update, get, list, patch, delete.

use super::{AccountPath, DeploymentPath};
use crate::extract::{arm_api_version, ArmJson, ArmPrincipal};
use crate::{render, AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::arm::{DeploymentPut, List, Sku};
use berth_control::DeploymentPutInput;
use serde::Deserialize;
use std::collections::BTreeMap;

pub async fn create_or_update_deployment(
    State(state): State<AppState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
    ArmJson(body): ArmJson<DeploymentPut>,
) -> Result<Response, ArmApiError> {
    let api_version = arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    refuse_unserved(&body)?;
    let model = body.properties.as_ref().and_then(|p| p.model.clone());
    if let Some(source) = model.as_ref().and_then(|m| m.source.clone().or(m.source_account.clone())) {
        authorize_source(&state, &principal, &headers, &source, &path.scope())?;
    }
    let input = DeploymentPutInput {
        model_format: model.as_ref().and_then(|m| m.format.clone()),
        model_name: model.as_ref().and_then(|m| m.name.clone()),
        model_version: model.as_ref().and_then(|m| m.version.clone()),
        model_source: model.as_ref().and_then(|m| m.source.clone().or(m.source_account.clone())),
        ..base_input(body.sku.as_ref(), body.tags, &api_version, &principal.object_id)
    };
    let outcome = state.0.put_deployment(&path.key(), &path.deployment, input)?;
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut resp = (status, Json(render::deployment(&state, &outcome.row))).into_response();
    if let Some(op) = &outcome.operation {
        let url = render::operation_url(&state, op, &api_version);
        if let Ok(v) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert("azure-asyncoperation", v);
        }
    }
    Ok(resp)
}

/// Read-only fields of a deployment that clients echo back from a GET; ARM ignores them in a PUT.
const READ_ONLY: &[&str] = &[
    "id",
    "name",
    "type",
    "etag",
    "systemData",
    "provisioningState",
    "capabilities",
    "rateLimits",
    "currentCapacity",
    "callRateLimit",
    "scheduledDeletionTime",
    "error",
];

/// The one content-filtering policy and upgrade option Berth applies (and reports); others are refused,
/// never stored and silently answered with these.
pub(crate) const RAI_POLICY: &str = "Microsoft.DefaultV2";
pub(crate) const VERSION_UPGRADE: &str = "NoAutoUpgrade";

/// Refuses, by name, every field of a PUT that Berth would otherwise drop.
fn refuse_unserved(body: &DeploymentPut) -> Result<(), ArmApiError> {
    let refuse = |target: String, message: String| {
        let mut e = ArmApiError::bad_request("InvalidResourceProperties", message);
        e.target = Some(target);
        e
    };
    let properties = body.properties.as_ref();
    let unknown = body
        .unknown
        .keys()
        .cloned()
        .chain(properties.into_iter().flat_map(|p| p.unknown.keys().map(|k| format!("properties.{k}"))));
    for name in unknown {
        if !READ_ONLY.contains(&name.trim_start_matches("properties.")) {
            return Err(refuse(name.clone(), format!("The field '{name}' is not supported on a deployment by Berth.")));
        }
    }
    if let Some(policy) = properties.and_then(|p| p.rai_policy_name.as_deref()) {
        if !policy.eq_ignore_ascii_case(RAI_POLICY) && !policy.is_empty() {
            return Err(refuse(
                "properties.raiPolicyName".into(),
                format!("The content filtering policy '{policy}' does not exist: Berth applies only '{RAI_POLICY}'."),
            ));
        }
    }
    if let Some(option) = properties.and_then(|p| p.version_upgrade_option.as_deref()) {
        if !option.eq_ignore_ascii_case(VERSION_UPGRADE) {
            return Err(refuse(
                "properties.versionUpgradeOption".into(),
                format!("The version upgrade option '{option}' is not supported: the models Berth deploys have one version each, so only '{VERSION_UPGRADE}' applies."),
            ));
        }
    }
    Ok(())
}

/// What PUT and PATCH share: SKU, tags, api-version and caller.
fn base_input(
    sku: Option<&Sku>,
    tags: Option<BTreeMap<String, String>>,
    api_version: &str,
    caller: &str,
) -> DeploymentPutInput {
    DeploymentPutInput {
        sku_name: sku.map(|s| s.name.clone()),
        sku_capacity: sku.and_then(|s| s.capacity),
        tags,
        api_version: api_version.to_owned(),
        caller: caller.to_owned(),
        ..Default::default()
    }
}

pub async fn get_deployment(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    let row = state.deployment(&path.key(), &path.deployment)?;
    Ok(Json(render::deployment(&state, &row)).into_response())
}

/// `GET .../deployments/{name}/lastHour` (Berth's own): the deployment's last hour minute by minute,
/// summed over every replica: calls, tokens, rate-limit refusals, and time to first token (the
/// bucket bounds of the median and 95th percentile call). The portal's charts draw it.
pub async fn deployment_last_hour(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    let points = state.last_hour(&path.key(), &path.deployment)?;
    let value: Vec<serde_json::Value> = points
        .iter()
        .map(|p| {
            serde_json::json!({
                "minute": berth_control::rfc3339_of(p.minute),
                "requests": p.requests,
                "tokens": p.tokens,
                "rateLimited": p.rate_limited,
                "timeToFirstTokenP50Ms": p.ttft_p50_ms,
                "timeToFirstTokenP95Ms": p.ttft_p95_ms,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "value": value })).into_response())
}

pub async fn list_deployments(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    let rows = state.deployments(&path.key())?;
    let value = rows.iter().map(|r| render::deployment(&state, r)).collect();
    Ok(Json(List { value, next_link: None }).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DeploymentPatch {
    #[serde(default)]
    pub sku: Option<Sku>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `PATCH` changes SKU, capacity or tags: a PUT of the same model.
pub async fn update_deployment(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
    ArmJson(body): ArmJson<DeploymentPatch>,
) -> Result<Response, ArmApiError> {
    let api_version = arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    state.deployment(&path.key(), &path.deployment)?;
    let input = DeploymentPutInput {
        patch: true,
        ..base_input(body.sku.as_ref(), body.tags, &api_version, &principal.object_id)
    };
    let outcome = state.0.put_deployment(&path.key(), &path.deployment, input)?;
    Ok(Json(render::deployment(&state, &outcome.row)).into_response())
}

pub async fn delete_deployment(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    let existed = state.delete_deployment(&path.key(), &path.deployment).await?;
    Ok(if existed { StatusCode::OK } else { StatusCode::NO_CONTENT }.into_response())
}

/// Deploying from another account needs read on it: with the caller's own token inside its tenant,
/// or, across tenants, with the source tenant's token in `x-ms-authorization-auxiliary`.
fn authorize_source(
    state: &AppState,
    principal: &berth_control::Principal,
    headers: &axum::http::HeaderMap,
    source: &str,
    target: &str,
) -> Result<(), ArmApiError> {
    let Some(key) = berth_control::parse_account_id(source) else {
        return Err(ArmApiError::bad_request(
            "InvalidResourceProperties",
            format!("'{source}' is not the resource id of an account (/subscriptions/.../accounts/{{name}})."),
        ));
    };
    let source_tenant = state.tenant_of_subscription(&key.subscription_id)?;
    if source_tenant.as_deref() == Some(principal.tenant_id.as_str()) || source_tenant.is_none() {
        return Ok(state.authorize(principal, source, berth_control::Action::Read)?);
    }
    let linked_denied = || {
        ArmApiError::new(
            StatusCode::FORBIDDEN,
            "LinkedAuthorizationFailed",
            format!(
                "The client '{}' has permission to perform action on scope '{target}'; however, it does not have permission to perform action 'Microsoft.CognitiveServices/accounts/read' on the linked scope '{source}'. Send a token of the source tenant in 'x-ms-authorization-auxiliary'.",
                principal.object_id
            ),
        )
    };
    let aux = headers
        .get("x-ms-authorization-auxiliary")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find_map(|t| t.strip_prefix("Bearer ").map(str::to_owned)))
        .ok_or_else(linked_denied)?;
    let linked = state.authenticate_bearer(&aux).map_err(|_| linked_denied())?;
    state.authorize(&linked, source, berth_control::Action::Read).map_err(|_| linked_denied())
}
