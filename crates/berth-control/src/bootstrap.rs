//! First start: one tenant, subscription, resource group and account, two account keys, and an admin
//! credential written to the data directory for the CLI.

use crate::clock::{now_rfc3339, rfc3339_in};
use crate::error::Result;
use crate::ids::new_secret;
use crate::secrets::{digest, Vault};
use crate::{ControlConfig, ControlError};
use berth_store::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `credentials.json` in the data directory: how the CLI finds and authenticates to its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub endpoint: String,
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    #[serde(rename = "subscriptionId")]
    pub subscription_id: String,
    #[serde(rename = "resourceGroup")]
    pub resource_group: String,
    pub account: String,
    /// A long-lived bearer token of the bootstrap administrator.
    #[serde(rename = "adminToken")]
    pub admin_token: String,
}

impl Credentials {
    pub const FILE: &'static str = "credentials.json";

    pub fn read(data_dir: &Path) -> std::io::Result<Self> {
        let raw = std::fs::read_to_string(data_dir.join(Self::FILE))?;
        serde_json::from_str(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

pub(crate) const ADMIN_PRINCIPAL: &str = "berth-admin";
const ADMIN_TOKEN_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// Bootstraps on first start; on later starts re-reads the credentials and refreshes their endpoint.
pub(crate) fn ensure_bootstrapped(store: &Store, config: &ControlConfig, vault: &Vault) -> Result<Credentials> {
    let existing = Credentials::read(&config.data_dir).ok();
    let creds = match (store.tenants()?.first(), existing) {
        (Some(_), Some(mut creds)) => {
            creds.endpoint = config.public_url.clone();
            creds
        }
        (Some(t), None) => {
            // The file was lost: mint a new admin token for the existing first account.
            let sub = store
                .subscriptions()?
                .into_iter()
                .find(|s| s.tenant_id == t.id)
                .ok_or_else(|| ControlError::Internal("the database has a tenant without a subscription".into()))?;
            let account = store
                .accounts_in_subscription(&sub.id)?
                .into_iter()
                .next()
                .ok_or_else(|| ControlError::Internal("the database has no account".into()))?;
            let admin_token = mint_admin_token(store, &t.id)?;
            Credentials {
                endpoint: config.public_url.clone(),
                tenant_id: t.id.clone(),
                subscription_id: sub.id,
                resource_group: account.key.resource_group,
                account: account.key.account,
                admin_token,
            }
        }
        (None, _) => first_start(store, config, vault)?,
    };
    write_credentials(&config.data_dir, &creds)?;
    Ok(creds)
}

fn first_start(store: &Store, config: &ControlConfig, vault: &Vault) -> Result<Credentials> {
    let now = now_rfc3339();
    let tenant =
        TenantRow { id: uuid::Uuid::new_v4().to_string(), display_name: "Berth".into(), created_at: now.clone() };
    let sub = SubscriptionRow {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant.id.clone(),
        display_name: "Berth subscription".into(),
        created_at: now.clone(),
    };
    let rg = ResourceGroupRow {
        subscription_id: sub.id.clone(),
        name: "berth-rg".into(),
        location: config.location.clone(),
        created_at: now.clone(),
    };
    let account = AccountRow {
        key: AccountKey { subscription_id: sub.id.clone(), resource_group: rg.name.clone(), account: "berth".into() },
        location: config.location.clone(),
        kind: "OpenAI".into(),
        sku: "S0".into(),
        key1: vault.store(&new_secret()),
        key2: vault.store(&new_secret()),
        created_at: now,
    };
    store.bootstrap(&tenant, &sub, &rg, &account)?;
    let admin_token = mint_admin_token(store, &tenant.id)?;
    tracing::info!(tenant = %tenant.id, subscription = %sub.id, "first start: bootstrapped tenant, subscription and account");
    Ok(Credentials {
        endpoint: config.public_url.clone(),
        tenant_id: tenant.id,
        subscription_id: sub.id,
        resource_group: rg.name,
        account: account.key.account,
        admin_token,
    })
}

fn mint_admin_token(store: &Store, tenant_id: &str) -> Result<String> {
    let token = new_secret();
    store.insert_access_token(&AccessTokenRow {
        token: digest(&token),
        tenant_id: tenant_id.to_owned(),
        principal: ADMIN_PRINCIPAL.into(),
        expires_at: rfc3339_in(ADMIN_TOKEN_SECONDS),
        created_at: now_rfc3339(),
    })?;
    Ok(token)
}

/// Written to a temporary file and renamed, so a crash never leaves half a file; readable by the owner only.
fn write_credentials(dir: &Path, creds: &Credentials) -> Result<()> {
    let io = |e: std::io::Error| {
        ControlError::Internal(format!("cannot write {}: {e}", dir.join(Credentials::FILE).display()))
    };
    let tmp = dir.join(format!("{}.tmp", Credentials::FILE));
    let body = serde_json::to_string_pretty(creds).map_err(|e| ControlError::Internal(e.to_string()))?;
    std::fs::write(&tmp, body).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, dir.join(Credentials::FILE)).map_err(io)?;
    Ok(())
}
