//! Capacity reads of the management plane: a subscription's quotas in a region
//! (`.../locations/{location}/usages`) and the deployment types a deployment can move to
//! (`.../deployments/{name}/skus`).

use super::DeploymentPath;
use crate::extract::{arm_api_version, ArmPrincipal};
use crate::{AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use berth_api::arm::{CapacityRange, DeploymentSku, List, QuotaUsage, SkuName, UsageName};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct LocationPath {
    pub subscription: String,
    pub location: String,
}

pub async fn list_usages(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<LocationPath>,
) -> Result<Json<List<QuotaUsage>>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &format!("/subscriptions/{}", path.subscription), berth_control::Action::Read)?;
    let value = state
        .usages(&path.subscription, &path.location)?
        .into_iter()
        .map(|u| QuotaUsage {
            unit: "Count".into(),
            name: UsageName { value: u.name, localized_value: u.localized_name },
            quota_period: None,
            limit: u.limit as f64,
            current_value: u.current as f64,
            next_reset_time: None,
            status: "Included".into(),
        })
        .collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn list_deployment_skus(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<DeploymentPath>,
) -> Result<Json<List<DeploymentSku>>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    let value = state
        .deployment_skus(&path.key(), &path.deployment)?
        .into_iter()
        .map(|s| DeploymentSku {
            resource_type: "Microsoft.CognitiveServices/accounts/deployments".into(),
            sku: SkuName { name: s.name.into() },
            capacity: CapacityRange { minimum: s.minimum, maximum: s.maximum, step: s.step, default: s.default },
        })
        .collect();
    Ok(Json(List { value, next_link: None }))
}
