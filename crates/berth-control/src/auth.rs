//! Who is calling. Bearer tokens are JWTs signed with HMAC-SHA256 under a key kept in the data
//! directory (claims `tid`, `oid`, `exp`), checked in constant time; the bootstrap administrator's
//! long-lived token is an opaque secret recorded in the store. API keys belong to one account. What a
//! principal may do is decided by its role assignments (`roles.rs`).

use crate::clock::{now_rfc3339, rfc3339_in, unix_now, unix_of};
use crate::error::Result;
use crate::secrets::{digest, matches};
use crate::{Control, ControlError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use berth_store::{AccessTokenRow, AccountRow};
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub object_id: String,
}

/// An authenticated caller of the data plane. Made once per request, so its size does not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
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
        if token.trim().matches('.').count() == 2 {
            return self.verify_jwt(token.trim());
        }
        let row = self.store.access_token(&digest(token.trim()))?.ok_or_else(invalid)?;
        let expires = unix_of(&row.expires_at).ok_or_else(invalid)?;
        if expires <= unix_now() {
            return Err(ControlError::Unauthenticated {
                code: "InvalidAuthenticationToken",
                message: format!("The access token expired at '{}'.", row.expires_at),
            });
        }
        Ok(Principal { tenant_id: row.tenant_id, object_id: row.principal })
    }

    /// The account an API key belongs to: found by the key's digest, which is then compared in
    /// constant time.
    pub fn authenticate_key(&self, key: &str) -> Result<AccountRow> {
        let key = key.trim();
        self.store
            .account_by_key_digest(&digest(key))?
            .filter(|a| matches(key, &a.key1.digest) || matches(key, &a.key2.digest))
            .ok_or(ControlError::Unauthenticated {
                code: "401",
                message: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.".into(),
            })
    }

    /// An account's two API keys, unsealed (`listKeys`).
    pub fn account_keys(&self, account: &AccountRow) -> Result<(String, String)> {
        Ok((self.vault.open(&account.key1)?, self.vault.open(&account.key2)?))
    }

    /// Refuses a principal acting on a subscription outside its tenant (listings then filter by role).
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

    /// Mints a signed token for `principal` (`berth token`): the caller's own, or, for the operator, any
    /// principal of any tenant.
    pub fn issue_token(&self, caller: &Principal, for_principal: Option<&Principal>) -> Result<AccessTokenRow> {
        self.store.purge_access_tokens(&now_rfc3339())?;
        let target = match for_principal {
            Some(p) if p != caller => {
                self.operator(caller)?;
                if self.store.principal(&p.tenant_id, &p.object_id)?.is_none() {
                    return Err(ControlError::NotFound {
                        code: "PrincipalNotFound",
                        message: format!("Principal {} does not exist in the directory {}.", p.object_id, p.tenant_id),
                    });
                }
                p.clone()
            }
            _ => caller.clone(),
        };
        let now = unix_now();
        let exp = now + self.config.token_ttl_seconds;
        let claims = serde_json::json!({
            "aud": "https://management.azure.com/",
            "iss": format!("https://sts.berth.local/{}/", target.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "tid": target.tenant_id,
            "oid": target.object_id,
            "sub": target.object_id,
        });
        Ok(AccessTokenRow {
            token: self.sign_jwt(&claims),
            tenant_id: target.tenant_id,
            principal: target.object_id,
            expires_at: rfc3339_in(self.config.token_ttl_seconds),
            created_at: now_rfc3339(),
        })
    }

    /// A token for the managed identity whose secret is `identity_header` (the identity endpoint, as
    /// App Service serves it to `az login --identity`). `client_id` or `object_id`, when given, must
    /// name that identity.
    pub fn managed_identity_token(&self, identity_header: &str, requested_id: Option<&str>) -> Result<AccessTokenRow> {
        let unknown = || ControlError::Unauthenticated {
            code: "InvalidIdentityHeader",
            message: "The X-IDENTITY-HEADER is not the secret of a managed identity.".into(),
        };
        let digest = digest(identity_header.trim());
        let (tenant_id, object_id) = self.store.identity_secret(&digest)?.ok_or_else(unknown)?;
        if requested_id.is_some_and(|id| !id.eq_ignore_ascii_case(&object_id)) {
            return Err(ControlError::invalid(
                "IdentityNotFound",
                format!(
                    "No managed identity with id '{}' is assigned to this workload.",
                    requested_id.unwrap_or_default()
                ),
                "client_id",
            ));
        }
        let me = Principal { tenant_id, object_id };
        self.issue_token(&me, None)
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.signing_key).expect("HMAC takes keys of any length")
    }

    fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal> {
        let invalid = |why: &str| ControlError::Unauthenticated {
            code: "InvalidAuthenticationToken",
            message: format!("The access token is invalid: {why}."),
        };
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("not a JWT"));
        };
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid("bad signature encoding"))?;
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig).map_err(|_| invalid("the signature does not match"))?;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid("bad payload encoding"))?)
                .map_err(|_| invalid("bad payload"))?;
        let exp = claims.get("exp").and_then(|v| v.as_i64()).ok_or_else(|| invalid("no expiry"))?;
        if exp <= unix_now() {
            return Err(ControlError::Unauthenticated {
                code: "ExpiredAuthenticationToken",
                message: format!("The access token expired at '{}'.", crate::clock::rfc3339_of(exp)),
            });
        }
        let field = |k: &str| {
            claims.get(k).and_then(|v| v.as_str()).map(str::to_owned).ok_or_else(|| invalid("missing tid or oid"))
        };
        Ok(Principal { tenant_id: field("tid")?, object_id: field("oid")? })
    }
}
