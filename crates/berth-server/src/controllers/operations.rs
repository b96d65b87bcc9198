//! The `Azure-AsyncOperation` URL of long-running calls.

use crate::extract::{arm_api_version, ArmPrincipal};
use crate::{render, AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use berth_api::arm::OperationStatus;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct OperationPath {
    pub subscription: String,
    pub location: String,
    pub operation: String,
}

pub async fn get_operation_status(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<OperationPath>,
) -> Result<Json<OperationStatus>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize_subscription(&principal, &path.subscription)?;
    let op = state.operation(&path.operation)?;
    if !op.subscription_id.eq_ignore_ascii_case(&path.subscription) || !op.location.eq_ignore_ascii_case(&path.location)
    {
        return Err(berth_control::ControlError::NotFound {
            code: "NotFound",
            message: format!("Operation '{}' cannot be found.", path.operation),
        }
        .into());
    }
    state.authorize(&principal, &op.resource_id, berth_control::Action::Read)?;
    Ok(Json(render::operation(&op)))
}
