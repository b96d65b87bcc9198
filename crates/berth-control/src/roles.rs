//! Role-based access: built-in roles (Azure's names and ids), role assignments at ARM scopes, and the
//! check every management and data-plane call makes. A principal may act on a scope when it belongs to
//! the tenant of the scope's subscription and holds a role granting the action at that scope or above
//! it (`/` is every subscription of its tenant).

use crate::clock::now_rfc3339;
use crate::error::Result;
use crate::{Control, ControlError, Principal};
use berth_store::{PrincipalRow, RoleAssignmentRow, SubscriptionRow, TenantRow};

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read management resources.
    Read,
    /// Create, change or delete accounts, deployments and resource groups; read keys.
    Write,
    /// Assign roles; register base models and tenants (at `/`).
    ManageAccess,
    /// Call deployments (chat completions, completions, models).
    Inference,
    /// Files and fine-tuning jobs.
    Authoring,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "Microsoft.CognitiveServices/accounts/read",
            Action::Write => "Microsoft.CognitiveServices/accounts/write",
            Action::ManageAccess => "Microsoft.Authorization/roleAssignments/write",
            Action::Inference => "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
            Action::Authoring => "Microsoft.CognitiveServices/accounts/OpenAI/fine-tunes/write",
        }
    }
}

/// Built-in roles: (name, Azure's role definition id, actions).
pub const ROLES: [(&str, &str, &[Action]); 5] = [
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", &[Action::Read, Action::Write, Action::ManageAccess]),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c", &[Action::Read, Action::Write]),
    ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7", &[Action::Read]),
    (
        "Cognitive Services OpenAI Contributor",
        "a001fd3d-188f-4b5d-821b-7da978bf7442",
        &[Action::Read, Action::Inference, Action::Authoring],
    ),
    ("Cognitive Services OpenAI User", "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd", &[Action::Read, Action::Inference]),
];

/// A role by name or by (the last segment of) its role definition id.
pub fn role_named(name_or_id: &str) -> Option<&'static str> {
    let last = name_or_id.rsplit('/').next().unwrap_or(name_or_id);
    ROLES
        .iter()
        .find(|(n, id, _)| n.eq_ignore_ascii_case(name_or_id) || id.eq_ignore_ascii_case(last))
        .map(|(n, _, _)| *n)
}

pub fn role_id(name: &str) -> &'static str {
    ROLES.iter().find(|(n, _, _)| *n == name).map_or("", |(_, id, _)| id)
}

fn grants(role: &str, action: Action) -> bool {
    ROLES.iter().any(|(n, _, actions)| *n == role && actions.contains(&action))
}

/// Whether `scope` is `inner` or one of its ancestors (whole path segments, case-insensitive).
pub fn covers(scope: &str, inner: &str) -> bool {
    let scope = scope.trim_end_matches('/').to_ascii_lowercase();
    let inner = inner.trim_end_matches('/').to_ascii_lowercase();
    scope.is_empty() || inner == scope || inner.starts_with(&format!("{scope}/"))
}

/// The subscription id of an ARM scope.
fn subscription_of(scope: &str) -> Option<&str> {
    let mut parts = scope.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") && !id.is_empty() => Some(id),
        _ => None,
    }
}

impl Control {
    /// Refuses unless `principal` may do `action` at `scope` (an ARM id, or `/`).
    pub fn authorize(&self, principal: &Principal, scope: &str, action: Action) -> Result<()> {
        let denied = || {
            ControlError::Forbidden {
            code: "AuthorizationFailed",
            message: format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                principal.object_id,
                principal.object_id,
                action.name()
            ),
        }
        };
        if let Some(sub) = subscription_of(scope) {
            match self.store.subscriptions()?.into_iter().find(|s| s.id.eq_ignore_ascii_case(sub)) {
                None => {
                    return Err(ControlError::NotFound {
                        code: "SubscriptionNotFound",
                        message: format!("The subscription '{sub}' could not be found."),
                    })
                }
                Some(s) if s.tenant_id != principal.tenant_id => return Err(denied()),
                Some(_) => {}
            }
        }
        let allowed = self
            .store
            .role_assignments_of(&principal.tenant_id, &principal.object_id)?
            .iter()
            .any(|a| grants(&a.role, action) && covers(&a.scope, scope));
        if allowed {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// Whether the principal holds any role at or below a subscription (what `GET /subscriptions` shows).
    pub fn sees_subscription(&self, principal: &Principal, sub: &SubscriptionRow) -> Result<bool> {
        let scope = format!("/subscriptions/{}", sub.id);
        Ok(sub.tenant_id == principal.tenant_id
            && self
                .store
                .role_assignments_of(&principal.tenant_id, &principal.object_id)?
                .iter()
                .any(|a| covers(&a.scope, &scope) || covers(&scope, &a.scope)))
    }

    /// Assigns a role at a scope; the principal must exist in the scope's tenant.
    pub fn assign_role(
        &self,
        caller: &Principal,
        id: &str,
        scope: &str,
        role: &str,
        principal_id: &str,
    ) -> Result<RoleAssignmentRow> {
        self.authorize(caller, scope, Action::ManageAccess)?;
        let role = role_named(role).ok_or_else(|| {
            ControlError::invalid(
                "RoleDefinitionDoesNotExist",
                format!("The role definition '{role}' does not exist; use one of {}.", ROLES.map(|r| r.0).join(", ")),
                "properties.roleDefinitionId",
            )
        })?;
        if self.store.principal(&caller.tenant_id, principal_id)?.is_none() {
            return Err(ControlError::invalid(
                "PrincipalNotFound",
                format!("Principal {principal_id} does not exist in the directory {}.", caller.tenant_id),
                "properties.principalId",
            ));
        }
        let scope = scope.trim_end_matches('/');
        // An id names one assignment for good, as in Azure: reusing it for another scope, principal or
        // role is refused, whoever asks, and an identical PUT is answered with the assignment as it is.
        if let Some(existing) = self.store.role_assignment(id)? {
            let same = existing.tenant_id == caller.tenant_id
                && existing.principal == principal_id
                && existing.role == role
                && existing.scope.trim_end_matches('/').eq_ignore_ascii_case(scope);
            if same {
                self.authorize(caller, &existing.scope, Action::ManageAccess)?;
                return Ok(existing);
            }
            return Err(ControlError::ConflictCode {
                code: "RoleAssignmentUpdateNotPermitted",
                message: format!("The role assignment '{id}' already exists. Tenant ID, principal ID, role definition and scope of a role assignment are not allowed to be updated; delete it, or use a new name."),
            });
        }
        let duplicate = self
            .store
            .role_assignments_of(&caller.tenant_id, principal_id)?
            .into_iter()
            .find(|a| a.role == role && a.scope.trim_end_matches('/').eq_ignore_ascii_case(scope));
        if duplicate.is_some() {
            return Err(ControlError::ConflictCode {
                code: "RoleAssignmentExists",
                message: "The role assignment already exists.".into(),
            });
        }
        let row = RoleAssignmentRow {
            id: id.to_owned(),
            tenant_id: caller.tenant_id.clone(),
            principal: principal_id.to_owned(),
            role: role.to_owned(),
            scope: scope.to_owned(),
            created_at: now_rfc3339(),
        };
        if !self.store.insert_role_assignment(&row)? {
            // Another request took the id between the check and the insert.
            return Err(ControlError::ConflictCode {
                code: "RoleAssignmentUpdateNotPermitted",
                message: format!("The role assignment '{id}' already exists."),
            });
        }
        Ok(row)
    }

    /// Assignments at or below a scope of the caller's tenant.
    pub fn role_assignments(&self, caller: &Principal, scope: &str) -> Result<Vec<RoleAssignmentRow>> {
        self.authorize(caller, scope, Action::Read)?;
        Ok(self
            .store
            .role_assignments_in(&caller.tenant_id)?
            .into_iter()
            .filter(|a| covers(scope, &a.scope) || covers(&a.scope, scope))
            .collect())
    }

    pub fn remove_role_assignment(&self, caller: &Principal, scope: &str, id: &str) -> Result<bool> {
        self.authorize(caller, scope, Action::ManageAccess)?;
        match self.store.role_assignment(id)? {
            Some(a) if a.tenant_id == caller.tenant_id && covers(scope, &a.scope) => {
                Ok(self.store.delete_role_assignment(id)?.is_some())
            }
            _ => Ok(false),
        }
    }

    /// A principal of the caller's tenant (or, for an owner of `/`, of any tenant).
    /// Adds a principal to a tenant. A managed identity also gets the secret its workload presents to
    /// the identity endpoint (`X-IDENTITY-HEADER`), returned here once and stored as a digest.
    pub fn add_principal(
        &self,
        caller: &Principal,
        tenant: &str,
        display_name: &str,
        kind: &str,
    ) -> Result<(PrincipalRow, Option<String>)> {
        if tenant != caller.tenant_id || self.authorize(caller, "/", Action::ManageAccess).is_err() {
            self.operator(caller)?;
        }
        if !self.store.tenants()?.iter().any(|t| t.id == tenant) {
            return Err(ControlError::NotFound {
                code: "TenantNotFound",
                message: format!("The tenant '{tenant}' does not exist."),
            });
        }
        let row = PrincipalRow {
            tenant_id: tenant.to_owned(),
            object_id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.to_owned(),
            kind: kind.to_owned(),
            created_at: now_rfc3339(),
        };
        self.store.upsert_principal(&row)?;
        if kind != "ManagedIdentity" {
            return Ok((row, None));
        }
        let secret = crate::ids::new_secret();
        self.store.insert_identity_secret(
            &crate::secrets::digest(&secret),
            &row.tenant_id,
            &row.object_id,
            &row.created_at,
        )?;
        Ok((row, Some(secret)))
    }

    /// The operator: an owner of `/` in the first tenant (the bootstrap administrator).
    pub fn operator(&self, caller: &Principal) -> Result<()> {
        let first = self.store.tenants()?.into_iter().next().map(|t| t.id).unwrap_or_default();
        if caller.tenant_id == first {
            if let Ok(()) = self.authorize(caller, "/", Action::ManageAccess) {
                return Ok(());
            }
        }
        Err(ControlError::Forbidden {
            code: "AuthorizationFailed",
            message: format!(
                "The client '{}' is not an operator of this Berth (Owner at '/' in its first tenant).",
                caller.object_id
            ),
        })
    }

    /// A new tenant with one subscription and an administrator who owns it (operator only).
    pub fn create_tenant(
        &self,
        caller: &Principal,
        display_name: &str,
    ) -> Result<(TenantRow, SubscriptionRow, PrincipalRow)> {
        self.operator(caller)?;
        let now = now_rfc3339();
        let tenant = TenantRow {
            id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.to_owned(),
            created_at: now.clone(),
        };
        let sub = SubscriptionRow {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant.id.clone(),
            display_name: format!("{display_name} subscription"),
            created_at: now.clone(),
        };
        self.store.insert_tenant(&tenant, &sub)?;
        let admin = PrincipalRow {
            tenant_id: tenant.id.clone(),
            object_id: uuid::Uuid::new_v4().to_string(),
            display_name: "admin".into(),
            kind: "User".into(),
            created_at: now,
        };
        self.store.upsert_principal(&admin)?;
        self.grant_administrator(&tenant.id, &admin.object_id)?;
        Ok((tenant, sub, admin))
    }

    /// Another subscription of a tenant (the operator, or an owner of `/` in that tenant).
    pub fn create_subscription(&self, caller: &Principal, tenant: &str, display_name: &str) -> Result<SubscriptionRow> {
        if !(caller.tenant_id == tenant && self.authorize(caller, "/", Action::ManageAccess).is_ok()) {
            self.operator(caller)?;
        }
        if !self.store.tenants()?.iter().any(|t| t.id == tenant) {
            return Err(ControlError::NotFound {
                code: "TenantNotFound",
                message: format!("The tenant '{tenant}' does not exist."),
            });
        }
        let sub = SubscriptionRow {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant.to_owned(),
            display_name: display_name.to_owned(),
            created_at: now_rfc3339(),
        };
        self.store.insert_subscription(&sub)?;
        Ok(sub)
    }

    /// Owner and OpenAI Contributor at `/` of a tenant.
    pub(crate) fn grant_administrator(&self, tenant: &str, object_id: &str) -> Result<()> {
        for role in ["Owner", "Cognitive Services OpenAI Contributor"] {
            self.store.insert_role_assignment(&RoleAssignmentRow {
                id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant.to_owned(),
                principal: object_id.to_owned(),
                role: role.to_owned(),
                scope: "/".into(),
                created_at: now_rfc3339(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_their_descendants_by_whole_segments() {
        assert!(covers("/", "/subscriptions/a"));
        assert!(covers("/subscriptions/A", "/subscriptions/a/resourceGroups/g"));
        assert!(!covers("/subscriptions/a", "/subscriptions/ab"));
        assert!(!covers("/subscriptions/a/resourceGroups/g", "/subscriptions/a"));
        assert_eq!(role_named("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"), Some("Cognitive Services OpenAI User"));
        assert_eq!(role_named("reader"), Some("Reader"));
        assert!(
            grants("Owner", Action::Write) && !grants("Owner", Action::Inference) && !grants("Reader", Action::Write)
        );
    }
}
