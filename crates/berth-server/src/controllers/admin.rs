//! Berth's own calls: base models, importing fine-tunes, minting tokens. Bearer-authenticated like ARM.

use super::AccountPath;
use crate::extract::{arm_api_version, ArmJson, ArmPrincipal};
use crate::{AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use berth_api::admin::{AccessToken, BaseModel, BaseModelAdd, ImportedModel, ModelImport};
use berth_api::arm::List;
use berth_control::BaseModelRow;
use berth_control::ModelSource;

fn base_model(b: BaseModelRow) -> BaseModel {
    BaseModel {
        name: b.name,
        path: b.path,
        format: b.format,
        architecture: b.architecture,
        context_length: b.context_length,
        created_at: b.created_at,
    }
}

pub async fn list_base_models(
    State(state): State<AppState>,
    ArmPrincipal(_principal): ArmPrincipal,
) -> Result<Json<List<BaseModel>>, ArmApiError> {
    let value = state.base_models()?.into_iter().map(base_model).collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn add_base_model(
    State(state): State<AppState>,
    ArmPrincipal(_principal): ArmPrincipal,
    ArmJson(body): ArmJson<BaseModelAdd>,
) -> Result<(StatusCode, Json<BaseModel>), ArmApiError> {
    state.operator(&_principal)?;
    let row = state.add_base_model(&body.name, &body.path).await?;
    Ok((StatusCode::CREATED, Json(base_model(row))))
}

pub async fn import_model(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
    ArmJson(body): ArmJson<ModelImport>,
) -> Result<(StatusCode, Json<ImportedModel>), ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    // The body names a directory on the server: only the operator, who owns that filesystem, may
    // have it read (and only the operator sees what reading it says). Tenants' own adapters and
    // weights come by upload, not by server path.
    state.operator(&principal)?;
    let source = match (body.adapter, body.weights) {
        (Some(a), None) => ModelSource::Adapter(a.into()),
        (None, Some(w)) => ModelSource::Weights(w.into()),
        _ => {
            return Err(ArmApiError::bad_request(
                "InvalidRequestContent",
                "Give exactly one of 'adapter' (a PEFT LoRA directory) and 'weights' (a full-weights directory).",
            ))
        }
    };
    let row = state.import_model(&path.key(), &body.base, source).await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportedModel {
            id: row.id,
            base_model: row.base_model,
            kind: row.kind,
            created_at: row.created_at,
            account: row.account.account,
            resource_group: row.account.resource_group,
        }),
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenRequest {
    tenant: Option<String>,
    principal: Option<String>,
}

/// A fresh signed token (`berth token`): the caller's own, or (operator only) another principal's.
pub async fn issue_token(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    body: axum::body::Bytes,
) -> Result<Json<AccessToken>, ArmApiError> {
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ArmApiError::bad_request(
                "InvalidRequestContent",
                format!("Send {{\"tenant\": ..., \"principal\": ...}} or nothing: {e}"),
            )
        })?
    };
    let target = req.principal.map(|object_id| berth_control::Principal {
        tenant_id: req.tenant.clone().unwrap_or_else(|| principal.tenant_id.clone()),
        object_id,
    });
    let row = state.issue_token(&principal, target.as_ref())?;
    let holder = berth_control::Principal { tenant_id: row.tenant_id.clone(), object_id: row.principal.clone() };
    let subscription = state.subscriptions_for(&holder)?.into_iter().next().map(|s| s.id).unwrap_or_default();
    Ok(Json(AccessToken {
        access_token: row.token,
        expires_on: row.expires_at,
        tenant: row.tenant_id,
        subscription,
        token_type: "Bearer".into(),
    }))
}
