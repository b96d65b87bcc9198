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
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
    ArmJson(body): ArmJson<DeploymentPut>,
) -> Result<Response, ArmApiError> {
    let api_version = arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    let model = body.properties.as_ref().and_then(|p| p.model.clone());
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

/// What PUT and PATCH share: SKU, tags, api-version and caller.
fn base_input(sku: Option<&Sku>, tags: Option<BTreeMap<String, String>>, api_version: &str, caller: &str) -> DeploymentPutInput {
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
    let input = DeploymentPutInput { patch: true, ..base_input(body.sku.as_ref(), body.tags, &api_version, &principal.object_id) };
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
