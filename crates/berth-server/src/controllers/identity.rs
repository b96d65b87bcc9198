//! Tenants and principals (`/berth/v1/tenants`, `/berth/v1/principals`, operator or tenant owners) and
//! role assignments at any ARM scope (`{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`,
//! as `az role assignment` and the management SDKs write them).

use super::managed_identity::IDENTITY_TOKEN_PATH;
use crate::extract::{arm_api_version, ArmJson, ArmPrincipal};
use crate::{AppState, ArmApiError};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::arm::List;
use berth_control::RoleAssignmentRow;
use serde::Deserialize;
use serde_json::{json, Value};

const ASSIGNMENTS: &str = "/providers/Microsoft.Authorization/roleAssignments";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantCreate {
    display_name: String,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    ArmJson(body): ArmJson<TenantCreate>,
) -> Result<(StatusCode, Json<Value>), ArmApiError> {
    let (tenant, sub, admin) = state.create_tenant(&principal, &body.display_name)?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "tenantId": tenant.id, "displayName": tenant.display_name, "subscriptionId": sub.id, "admin": { "objectId": admin.object_id } }),
        ),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionCreate {
    tenant_id: Option<String>,
    display_name: String,
}

pub async fn create_subscription(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    ArmJson(body): ArmJson<SubscriptionCreate>,
) -> Result<(StatusCode, Json<Value>), ArmApiError> {
    let tenant = body.tenant_id.unwrap_or_else(|| principal.tenant_id.clone());
    let sub = state.create_subscription(&principal, &tenant, &body.display_name)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "subscriptionId": sub.id, "tenantId": sub.tenant_id, "displayName": sub.display_name })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalCreate {
    tenant_id: Option<String>,
    display_name: String,
    #[serde(default)]
    kind: Option<String>,
}

pub async fn create_principal(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    ArmJson(body): ArmJson<PrincipalCreate>,
) -> Result<(StatusCode, Json<Value>), ArmApiError> {
    let kind = body.kind.unwrap_or_else(|| "User".into());
    if !["User", "ServicePrincipal", "ManagedIdentity"].contains(&kind.as_str()) {
        return Err(ArmApiError::bad_request(
            "InvalidPrincipalKind",
            format!("'{kind}' is not a principal kind; use User, ServicePrincipal or ManagedIdentity."),
        ));
    }
    let tenant = body.tenant_id.unwrap_or_else(|| principal.tenant_id.clone());
    let (p, secret) = state.add_principal(&principal, &tenant, &body.display_name, &kind)?;
    let mut out =
        json!({ "tenantId": p.tenant_id, "objectId": p.object_id, "displayName": p.display_name, "kind": p.kind });
    if let Some(secret) = secret {
        // What a host injects into a workload as IDENTITY_ENDPOINT and IDENTITY_HEADER.
        out["identityEndpoint"] =
            json!(format!("{}{IDENTITY_TOKEN_PATH}", state.config().public_url.trim_end_matches('/')));
        out["identityHeader"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// The scope and assignment name of a role-assignment path.
fn split(uri: &Uri) -> (String, Option<String>) {
    let path = uri.path();
    let i = path.find(ASSIGNMENTS).unwrap_or(path.len());
    let scope = if i == 0 { "/".to_owned() } else { path[..i].to_owned() };
    let rest = path[i..].trim_start_matches(ASSIGNMENTS).trim_matches('/');
    (scope, (!rest.is_empty()).then(|| rest.to_owned()))
}

fn assignment(a: &RoleAssignmentRow) -> Value {
    let scope = if a.scope.is_empty() { "/".to_owned() } else { a.scope.clone() };
    let prefix = if scope == "/" { String::new() } else { scope.clone() };
    json!({
        "id": format!("{prefix}{ASSIGNMENTS}/{}", a.id),
        "name": a.id,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": format!("{prefix}/providers/Microsoft.Authorization/roleDefinitions/{}", berth_control::role_id(&a.role)),
            "roleDefinitionName": a.role,
            "principalId": a.principal,
            "scope": scope,
            "createdOn": a.created_at,
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentProperties {
    role_definition_id: String,
    principal_id: String,
}

#[derive(Debug, Deserialize)]
pub struct AssignmentPut {
    properties: AssignmentProperties,
}

pub async fn put_assignment(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    ArmJson(body): ArmJson<AssignmentPut>,
) -> Result<Response, ArmApiError> {
    arm_api_version(&uri)?;
    let (scope, name) = split(&uri);
    let name = name.ok_or_else(|| {
        ArmApiError::bad_request("InvalidRoleAssignmentId", "The role assignment needs a name (a GUID).")
    })?;
    let a = state.assign_role(
        &principal,
        &name,
        &scope,
        &body.properties.role_definition_id,
        &body.properties.principal_id,
    )?;
    Ok((StatusCode::CREATED, Json(assignment(&a))).into_response())
}

pub async fn list_assignments(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
) -> Result<Json<List<Value>>, ArmApiError> {
    arm_api_version(&uri)?;
    let (scope, _) = split(&uri);
    let value = state.role_assignments(&principal, &scope)?.iter().map(assignment).collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn delete_assignment(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
) -> Result<StatusCode, ArmApiError> {
    arm_api_version(&uri)?;
    let (scope, name) = split(&uri);
    let removed = state.remove_role_assignment(&principal, &scope, name.as_deref().unwrap_or(""))?;
    Ok(if removed { StatusCode::OK } else { StatusCode::NO_CONTENT })
}
