//! Principals and role assignments.

use crate::error::Result;
use crate::p;
use crate::rows::*;
use crate::sql::SqlRow;
use crate::Store;

impl Store {
    pub fn insert_tenant(&self, t: &TenantRow, sub: &SubscriptionRow) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO tenants (id, display_name, created_at) VALUES (?1, ?2, ?3)",
                p![t.id, t.display_name, t.created_at],
            )?;
            c.execute(
                "INSERT INTO subscriptions (id, tenant_id, display_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                p![sub.id, sub.tenant_id, sub.display_name, sub.created_at],
            )?;
            Ok(())
        })
    }

    pub fn insert_subscription(&self, sub: &SubscriptionRow) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO subscriptions (id, tenant_id, display_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                p![sub.id, sub.tenant_id, sub.display_name, sub.created_at],
            )
        })?;
        Ok(())
    }

    pub fn upsert_principal(&self, p: &PrincipalRow) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO principals (tenant_id, object_id, display_name, kind, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, object_id) DO UPDATE SET display_name = excluded.display_name",
                p![p.tenant_id, p.object_id, p.display_name, p.kind, p.created_at],
            )
        })?;
        Ok(())
    }

    pub fn principal(&self, tenant: &str, object_id: &str) -> Result<Option<PrincipalRow>> {
        self.db(|c| {
            c.query_opt(
                "SELECT tenant_id, object_id, display_name, kind, created_at FROM principals WHERE tenant_id = ?1 AND object_id = ?2",
                p![tenant, object_id],
                |r| {
                    Ok(PrincipalRow {
                        tenant_id: r.get(0)?,
                        object_id: r.get(1)?,
                        display_name: r.get(2)?,
                        kind: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Records the digest of a managed identity's secret.
    pub fn insert_identity_secret(&self, digest: &str, tenant: &str, principal: &str, created_at: &str) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO identity_secrets (digest, tenant_id, principal, created_at) VALUES (?1, ?2, ?3, ?4)",
                p![digest, tenant, principal, created_at],
            )
        })?;
        Ok(())
    }

    /// The managed identity (tenant, object id) whose secret has this digest.
    pub fn identity_secret(&self, digest: &str) -> Result<Option<(String, String)>> {
        self.db(|c| {
            c.query_opt("SELECT tenant_id, principal FROM identity_secrets WHERE digest = ?1", p![digest], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
    }

    /// Adds an assignment; `false` (and nothing written) when its id is taken. Never replaces one.
    pub fn insert_role_assignment(&self, a: &RoleAssignmentRow) -> Result<bool> {
        let n = self.db(|c| {
            c.execute(
                "INSERT INTO role_assignments (id, tenant_id, principal, role, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO NOTHING",
                p![a.id, a.tenant_id, a.principal, a.role, a.scope, a.created_at],
            )
        })?;
        Ok(n == 1)
    }

    pub fn delete_role_assignment(&self, id: &str) -> Result<Option<RoleAssignmentRow>> {
        self.tx(|c| {
            let row = c.query_opt(&format!("{ASSIGNMENT_SELECT} WHERE id = ?1"), p![id], row)?;
            c.execute("DELETE FROM role_assignments WHERE id = ?1", p![id])?;
            Ok(row)
        })
    }

    pub fn role_assignment(&self, id: &str) -> Result<Option<RoleAssignmentRow>> {
        self.db(|c| c.query_opt(&format!("{ASSIGNMENT_SELECT} WHERE id = ?1"), p![id], row))
    }

    /// Assignments of one principal.
    pub fn role_assignments_of(&self, tenant: &str, principal: &str) -> Result<Vec<RoleAssignmentRow>> {
        self.db(|c| {
            c.query(
                &format!("{ASSIGNMENT_SELECT} WHERE tenant_id = ?1 AND principal = ?2 ORDER BY created_at, id"),
                p![tenant, principal],
                row,
            )
        })
    }

    /// Assignments of a tenant (every principal).
    pub fn role_assignments_in(&self, tenant: &str) -> Result<Vec<RoleAssignmentRow>> {
        self.db(|c| {
            c.query(&format!("{ASSIGNMENT_SELECT} WHERE tenant_id = ?1 ORDER BY created_at, id"), p![tenant], row)
        })
    }

    pub fn count_role_assignments(&self) -> Result<i64> {
        self.db(|c| c.query_one("SELECT COUNT(*) FROM role_assignments", p![], |r| r.get(0)))
    }
}

const ASSIGNMENT_SELECT: &str = "SELECT id, tenant_id, principal, role, scope, created_at FROM role_assignments";

fn row(r: &SqlRow) -> Result<RoleAssignmentRow> {
    Ok(RoleAssignmentRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        principal: r.get(2)?,
        role: r.get(3)?,
        scope: r.get(4)?,
        created_at: r.get(5)?,
    })
}
