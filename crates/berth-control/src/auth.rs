//! Who is calling. Bearer tokens are opaque secrets recorded in the store with their tenant and expiry;
//! API keys belong to one account. Roles come with the identity work; today any principal of a tenant
//! may act on that tenant's subscriptions.

use crate::clock::{now_rfc3339, rfc3339_in, unix_now, unix_of};
use crate::error::Result;
use crate::ids::new_secret;
use crate::{Control, ControlError};
use berth_store::{AccessTokenRow, AccountRow};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub object_id: String,
}

/// An authenticated caller of the data plane.
#[derive(Debug, Clone)]
pub enum Caller {
    Principal(Principal),
    ApiKey(AccountRow),
}

impl Control {
    /// Checks a bearer token (without the `Bearer ` prefix).
    pub fn authenticate_bearer(&self, token: &str) -> Result<Principal> {
        let invalid = || ControlError::Unauthenticated {
            code: "InvalidAuthenticationToken",
            message: "The access token is invalid.".into(),
        };
        let row = self.store.access_token(token.trim())?.ok_or_else(invalid)?;
        let expires = unix_of(&row.expires_at).ok_or_else(invalid)?;
        if expires <= unix_now() {
            return Err(ControlError::Unauthenticated {
                code: "InvalidAuthenticationToken",
                message: format!("The access token expired at '{}'.", row.expires_at),
            });
        }
        Ok(Principal { tenant_id: row.tenant_id, object_id: row.principal })
    }

    /// The account an API key belongs to.
    pub fn authenticate_key(&self, key: &str) -> Result<AccountRow> {
        self.store.account_by_api_key(key.trim())?.ok_or(ControlError::Unauthenticated {
            code: "401",
            message: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.".into(),
        })
    }

    /// Refuses a principal acting on a subscription outside its tenant.
    pub fn authorize_subscription(&self, principal: &Principal, subscription_id: &str) -> Result<()> {
        let sub = self.store.subscriptions()?.into_iter().find(|s| s.id.eq_ignore_ascii_case(subscription_id));
        match sub {
            Some(s) if s.tenant_id == principal.tenant_id => Ok(()),
            Some(_) => Err(ControlError::Forbidden {
                code: "AuthorizationFailed",
                message: format!(
                    "The client '{}' with object id '{}' does not have authorization to perform this action over scope '/subscriptions/{subscription_id}' or the scope is invalid.",
                    principal.object_id, principal.object_id
                ),
            }),
            None => Err(ControlError::NotFound {
                code: "SubscriptionNotFound",
                message: format!("The subscription '{subscription_id}' could not be found."),
            }),
        }
    }

    /// Mints a short-lived token for the caller's tenant (`berth token`).
    pub fn issue_token(&self, principal: &Principal) -> Result<AccessTokenRow> {
        self.store.purge_access_tokens(&now_rfc3339())?;
        let row = AccessTokenRow {
            token: new_secret(),
            tenant_id: principal.tenant_id.clone(),
            principal: principal.object_id.clone(),
            expires_at: rfc3339_in(self.config.token_ttl_seconds),
            created_at: now_rfc3339(),
        };
        self.store.insert_access_token(&row)?;
        Ok(row)
    }
}
