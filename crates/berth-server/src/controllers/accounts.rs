//! Subscriptions and accounts: what `berth account show` and `az` read.

use super::AccountPath;
use crate::extract::ArmJson;
use crate::extract::{arm_api_version, ArmPrincipal};
use crate::{render, AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::arm::{
    Account, AccountKeys, AccountPut, List, RegenerateKey, ResourceGroup, ResourceGroupProperties, ResourceGroupPut,
    Subscription,
};
use berth_control::AccountPutInput;
use serde::Deserialize;

pub async fn list_subscriptions(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
) -> Result<Json<List<Subscription>>, ArmApiError> {
    arm_api_version(&uri)?;
    let value = state
        .subscriptions_for(&principal)?
        .into_iter()
        .filter(|s| state.sees_subscription(&principal, s).unwrap_or(false))
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
        .filter(|a| state.authorize(&principal, &render::account_resource_id(a), berth_control::Action::Read).is_ok())
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
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
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
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    let a = state.account(&path.key())?;
    let (key1, key2) = state.account_keys(&a)?;
    Ok(Json(AccountKeys { key1, key2 }))
}

/// `PUT .../accounts/{name}`: 201 created, 200 updated (synchronous: an account needs no provisioning).
pub async fn put_account(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
    ArmJson(body): ArmJson<AccountPut>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    refuse_unserved_account_properties(body.properties.as_ref(), &path.account)?;
    let input = AccountPutInput { location: body.location, kind: body.kind, sku: body.sku.map(|s| s.name) };
    let (row, created) = state.put_account(&path.key(), input)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(render::account(&state, &row, &principal.tenant_id))).into_response())
}

/// An account's properties that Berth serves as Azure does, and those it only reports (read-only,
/// ignored in a PUT as ARM does). Anything else, or a value Berth would not honour, is refused by name.
fn refuse_unserved_account_properties(
    properties: Option<&serde_json::Value>,
    account: &str,
) -> Result<(), ArmApiError> {
    const READ_ONLY: &[&str] =
        &["endpoint", "endpoints", "provisioningState", "internalId", "dateCreated", "capabilities"];
    let refuse = |field: &str, message: String| {
        let mut e = ArmApiError::bad_request("InvalidResourceProperties", message);
        e.target = Some(format!("properties.{field}"));
        e
    };
    let Some(properties) = properties else { return Ok(()) };
    let Some(fields) = properties.as_object() else {
        return Err(ArmApiError::bad_request("InvalidRequestContent", "The account's 'properties' must be an object."));
    };
    for (name, value) in fields {
        match (name.as_str(), value) {
            (_, serde_json::Value::Null) => {}
            ("publicNetworkAccess", v) if v.as_str().is_some_and(|v| v.eq_ignore_ascii_case("Enabled")) => {}
            ("publicNetworkAccess", v) => {
                return Err(refuse(name, format!("publicNetworkAccess {v} is not supported: Berth's network access is set where it listens, so every account is 'Enabled'.")))
            }
            ("disableLocalAuth", serde_json::Value::Bool(false)) => {}
            ("disableLocalAuth", v) => {
                return Err(refuse(name, format!("disableLocalAuth {v} is not supported: every account accepts its API keys.")))
            }
            ("customSubDomainName", v) if v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(account)) => {}
            ("customSubDomainName", v) => {
                return Err(refuse(name, format!("customSubDomainName {v} is not supported: an account's endpoint is named after the account, '{account}'.")))
            }
            (name, _) if READ_ONLY.contains(&name) => {}
            (name, _) => return Err(refuse(name, format!("The account property '{name}' is not supported by Berth."))),
        }
    }
    Ok(())
}

/// `DELETE .../accounts/{name}`: 200, or 204 when there was none.
pub async fn delete_account(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
) -> Result<StatusCode, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    Ok(if state.delete_account(&path.key())? { StatusCode::OK } else { StatusCode::NO_CONTENT })
}

pub async fn regenerate_key(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
    ArmJson(body): ArmJson<RegenerateKey>,
) -> Result<Json<AccountKeys>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    let a = state.regenerate_key(&path.key(), &body.key_name)?;
    let (key1, key2) = state.account_keys(&a)?;
    Ok(Json(AccountKeys { key1, key2 }))
}

#[derive(Debug, Deserialize)]
pub struct GroupPath {
    pub subscription: String,
    pub resource_group: String,
}

impl GroupPath {
    fn scope(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.subscription, self.resource_group)
    }
}

pub async fn list_accounts_in_group(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<GroupPath>,
) -> Result<Json<List<Account>>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize_subscription(&principal, &path.subscription)?;
    let rg = state.resource_group(&path.subscription, &path.resource_group)?;
    let value = state
        .accounts_in_subscription(&path.subscription)?
        .iter()
        .filter(|a| a.key.resource_group.eq_ignore_ascii_case(&rg.name))
        .filter(|a| state.authorize(&principal, &render::account_resource_id(a), berth_control::Action::Read).is_ok())
        .map(|a| render::account(&state, a, &principal.tenant_id))
        .collect();
    Ok(Json(List { value, next_link: None }))
}

fn group(rg: &berth_control::ResourceGroupRow) -> ResourceGroup {
    ResourceGroup {
        id: format!("/subscriptions/{}/resourceGroups/{}", rg.subscription_id, rg.name),
        name: rg.name.clone(),
        kind_type: "Microsoft.Resources/resourceGroups".into(),
        location: rg.location.clone(),
        properties: ResourceGroupProperties { provisioning_state: "Succeeded".into() },
        tags: Default::default(),
    }
}

pub async fn put_resource_group(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<GroupPath>,
    ArmJson(body): ArmJson<ResourceGroupPut>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    let (rg, created) = state.put_resource_group(&path.subscription, &path.resource_group, body.location.as_deref())?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(group(&rg))).into_response())
}

pub async fn get_resource_group(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<GroupPath>,
) -> Result<Json<ResourceGroup>, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Read)?;
    Ok(Json(group(&state.resource_group(&path.subscription, &path.resource_group)?)))
}

pub async fn delete_resource_group(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<GroupPath>,
) -> Result<StatusCode, ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    Ok(if state.delete_resource_group(&path.subscription, &path.resource_group)? {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    })
}
