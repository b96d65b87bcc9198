//! What an account can deploy: ARM's `.../accounts/{a}/models` and the data plane's `/openai/models`.

use super::generation::{resolve_account, AccountPrefix};
use super::AccountPath;
use crate::extract::{arm_api_version, openai_api_version, ArmPrincipal};
use crate::{render, AppState, ArmApiError, OpenAiApiError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use berth_api::arm::{AccountModel, ArmAccountModel, List};
use berth_api::openai::ModelList;

pub async fn list_account_models(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
) -> Result<Json<List<ArmAccountModel>>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    let key = path.key();
    let mut value = Vec::new();
    for m in state.account_models(&key)? {
        let skus = state.model_skus(&key, &m.id)?;
        value.push(render::arm_account_model(&m, &skus));
    }
    Ok(Json(List { value, next_link: None }))
}

pub async fn list_models(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
) -> Result<Json<ModelList<AccountModel>>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Inference)?;
    let data = state.account_models(&account.key)?.iter().map(render::account_model).collect();
    Ok(Json(ModelList { object: "list".into(), data }))
}

pub async fn get_model(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<std::collections::HashMap<String, String>>,
) -> Result<Json<AccountModel>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Inference)?;
    let id = params.get("model").cloned().unwrap_or_default();
    state.account_models(&account.key)?.iter().find(|m| m.id == id).map(|m| Json(render::account_model(m))).ok_or_else(
        || {
            OpenAiApiError::plain(
                StatusCode::NOT_FOUND,
                "ModelNotFound",
                format!("The model '{id}' does not exist in this account."),
            )
        },
    )
}
