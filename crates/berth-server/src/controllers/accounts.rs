//! Subscriptions and accounts: what `berth account show` and `az` read.

use super::AccountPath;
use crate::extract::{arm_api_version, ArmPrincipal};
use crate::{render, AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use berth_api::arm::{Account, AccountKeys, List, Subscription};

pub async fn list_subscriptions(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
) -> Result<Json<List<Subscription>>, ArmApiError> {
    arm_api_version(&uri)?;
    let value = state
        .subscriptions_for(&principal)?
        .into_iter()
        .map(|s| Subscription {
            id: format!("/subscriptions/{}", s.id),
            subscription_id: s.id,
            tenant_id: s.tenant_id,
            display_name: s.display_name,
            state: "Enabled".into(),
        })
        .collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn list_accounts(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(subscription): Path<String>,
) -> Result<Json<List<Account>>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize_subscription(&principal, &subscription)?;
    let value = state
        .accounts_in_subscription(&subscription)?
        .iter()
        .map(|a| render::account(&state, a, &principal.tenant_id))
        .collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn get_account(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
) -> Result<Json<Account>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize_subscription(&principal, &path.subscription)?;
    let a = state.account(&path.key())?;
    Ok(Json(render::account(&state, &a, &principal.tenant_id)))
}

pub async fn list_keys(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
) -> Result<Json<AccountKeys>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize_subscription(&principal, &path.subscription)?;
    let a = state.account(&path.key())?;
    Ok(Json(AccountKeys { key1: a.key1, key2: a.key2 }))
}
