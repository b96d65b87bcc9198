//! Who is calling. Bearer tokens are JWTs (`jsonwebtoken`, HS256 only) signed under a key kept in the
//! data directory (claims `aud`, `iss`, `iat`, `nbf`, `exp`, `tid`, `oid`, `sub`); the bootstrap administrator's
//! long-lived token is an opaque secret recorded in the store. API keys belong to one account. What a
//! principal may do is decided by its role assignments (`roles.rs`).

use crate::clock::{now_rfc3339, rfc3339_in, unix_now, unix_of};
use crate::error::Result;
use crate::secrets::{digest, matches};
use crate::{Control, ControlError};
use berth_store::{AccessTokenRow, AccountRow};

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
        let claims = Claims {
            aud: AUDIENCE.into(),
            iss: issuer(&target.tenant_id),
            iat: now,
            nbf: now,
            exp,
            tid: target.tenant_id.clone(),
            oid: target.object_id.clone(),
            sub: target.object_id.clone(),
        };
        Ok(AccessTokenRow {
            token: self.sign_jwt(&claims)?,
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

    fn sign_jwt(&self, claims: &Claims) -> Result<String> {
        let key = jsonwebtoken::EncodingKey::from_secret(&self.signing_key);
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), claims, &key)
            .map_err(|e| ControlError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Checks signature (HS256 only: the header's `alg` cannot choose another), audience, issuer and
    /// the time claims. Expiry and not-before are read on Berth's clock, the one every time comes from.
    fn verify_jwt(&self, token: &str) -> Result<Principal> {
        let invalid = |why: &str| ControlError::Unauthenticated {
            code: "InvalidAuthenticationToken",
            message: format!("The access token is invalid: {why}."),
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let key = jsonwebtoken::DecodingKey::from_secret(&self.signing_key);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => invalid("the signature does not match"),
                    ErrorKind::InvalidAlgorithm => invalid("it is not signed with HS256"),
                    ErrorKind::InvalidAudience => invalid("it is not meant for this service"),
                    ErrorKind::MissingRequiredClaim(c) => invalid(&format!("it has no '{c}' claim")),
                    _ => invalid("it is not a well-formed JWT"),
                }
            })?
            .claims;
        if claims.iss != issuer(&claims.tid) {
            return Err(invalid("its issuer is not its tenant's"));
        }
        let now = unix_now();
        if claims.exp <= now {
            return Err(ControlError::Unauthenticated {
                code: "ExpiredAuthenticationToken",
                message: format!("The access token expired at '{}'.", crate::clock::rfc3339_of(claims.exp)),
            });
        }
        if claims.nbf > now {
            return Err(invalid("it is not valid yet"));
        }
        Ok(Principal { tenant_id: claims.tid, object_id: claims.oid })
    }
}

/// The audience of Berth's tokens: Azure Resource Manager's, which the Azure CLI and SDKs ask for.
const AUDIENCE: &str = "https://management.azure.com/";

fn issuer(tenant: &str) -> String {
    format!("https://sts.berth.local/{tenant}/")
}

/// The claims of a bearer token, as Entra ID's access tokens carry them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    tid: String,
    oid: String,
    sub: String,
}
