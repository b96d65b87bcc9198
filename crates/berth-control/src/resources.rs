//! Resource groups and accounts: created, read, updated and deleted through the management plane.
//! An account lives in a region of the catalog, has its own endpoint, models, deployments and two keys.

use crate::catalog::normalize_region;
use crate::clock::now_rfc3339;
use crate::deployments::valid_resource_name;
use crate::error::Result;
use crate::ids::new_secret;
use crate::{Control, ControlError};
use berth_store::{AccountKey, AccountRow, DeleteRefusal, ResourceGroupRow};

/// An account PUT, parsed from the wire.
#[derive(Debug, Clone, Default)]
pub struct AccountPutInput {
    pub location: Option<String>,
    pub kind: Option<String>,
    pub sku: Option<String>,
}

const KINDS: [&str; 2] = ["OpenAI", "AIServices"];

impl Control {
    fn subscription_exists(&self, subscription: &str) -> Result<()> {
        if self.store.subscriptions()?.iter().any(|s| s.id.eq_ignore_ascii_case(subscription)) {
            Ok(())
        } else {
            Err(ControlError::NotFound {
                code: "SubscriptionNotFound",
                message: format!("The subscription '{subscription}' could not be found."),
            })
        }
    }

    fn known_region(&self, location: &str) -> Result<String> {
        let region = normalize_region(location);
        if self.config.catalog.region(&region).is_none() {
            let known: Vec<&str> = self.config.catalog.regions.keys().map(String::as_str).collect();
            return Err(ControlError::invalid(
                "LocationNotAvailableForResourceType",
                format!("The provided location '{location}' is not available for resource type 'Microsoft.CognitiveServices/accounts'. List of available regions for the resource type is '{}'.", known.join(",")),
                "location",
            ));
        }
        Ok(region)
    }

    pub fn resource_group(&self, subscription: &str, name: &str) -> Result<ResourceGroupRow> {
        self.subscription_exists(subscription)?;
        self.store.resource_group(subscription, name)?.ok_or_else(|| ControlError::NotFound {
            code: "ResourceGroupNotFound",
            message: format!("Resource group '{name}' could not be found."),
        })
    }

    /// Creates a resource group (or returns the existing one); true when created.
    pub fn put_resource_group(
        &self,
        subscription: &str,
        name: &str,
        location: Option<&str>,
    ) -> Result<(ResourceGroupRow, bool)> {
        self.subscription_exists(subscription)?;
        if name.is_empty()
            || name.len() > 90
            || !name.chars().all(|c| c.is_alphanumeric() || "-_.()".contains(c))
            || name.ends_with('.')
        {
            return Err(ControlError::invalid(
                "InvalidResourceGroup",
                format!("The resource group name '{name}' is invalid."),
                "name",
            ));
        }
        if let Some(existing) = self.store.resource_group(subscription, name)? {
            return Ok((existing, false));
        }
        let location = self.known_region(location.ok_or_else(|| {
            ControlError::invalid(
                "LocationRequired",
                "The location property is required for this definition.",
                "location",
            )
        })?)?;
        let row = ResourceGroupRow {
            subscription_id: subscription.to_owned(),
            name: name.to_owned(),
            location,
            created_at: now_rfc3339(),
        };
        let created = self.store.insert_resource_group(&row)?;
        Ok((self.store.resource_group(subscription, name)?.unwrap_or(row), created))
    }

    /// Deletes an empty resource group; false when it did not exist.
    pub fn delete_resource_group(&self, subscription: &str, name: &str) -> Result<bool> {
        self.subscription_exists(subscription)?;
        match self.store.delete_resource_group(subscription, name)? {
            None => Ok(false),
            Some(Ok(())) => Ok(true),
            Some(Err(DeleteRefusal::HasAccounts(a))) => Err(ControlError::Conflict(format!(
                "The resource group '{name}' still holds the accounts {}; delete them first.",
                a.join(", ")
            ))),
            Some(Err(other)) => Err(ControlError::Internal(format!("unexpected refusal {other:?}"))),
        }
    }

    /// Creates an account in a region of the catalog, or updates its kind and SKU; the region of an
    /// existing account cannot change. Returns the row and whether it was created.
    pub fn put_account(&self, key: &AccountKey, input: AccountPutInput) -> Result<(AccountRow, bool)> {
        let rg = self.resource_group(&key.subscription_id, &key.resource_group)?;
        if !valid_resource_name(&key.account) {
            return Err(ControlError::invalid(
                "InvalidResourceName",
                format!("Resource name '{}' is invalid. The name can contain 2 to 64 letters, digits, '_', '.' and '-', and must start with a letter or digit.", key.account),
                "name",
            ));
        }
        let kind = match input.kind.as_deref() {
            None => "OpenAI".to_owned(),
            Some(k) => KINDS.iter().find(|x| x.eq_ignore_ascii_case(k)).map(|x| x.to_string()).ok_or_else(|| {
                ControlError::invalid(
                    "InvalidKind",
                    format!("The kind '{k}' is not supported; use {}.", KINDS.join(" or ")),
                    "kind",
                )
            })?,
        };
        let sku = input.sku.clone().unwrap_or_else(|| "S0".into());
        let key = AccountKey { resource_group: rg.name.clone(), ..key.clone() };
        if let Some(existing) = self.store.account(&key)? {
            if let Some(loc) = &input.location {
                if normalize_region(loc) != normalize_region(&existing.location) {
                    return Err(ControlError::invalid(
                        "InvalidResourceLocation",
                        format!(
                            "The resource '{}' already exists in location '{}'; it cannot move to '{loc}'.",
                            existing.key.account, existing.location
                        ),
                        "location",
                    ));
                }
            }
            self.store.update_account_sku(&existing.key, &kind, &sku)?;
            return Ok((self.account(&existing.key)?, false));
        }
        let location = self.known_region(input.location.as_deref().ok_or_else(|| {
            ControlError::invalid(
                "LocationRequired",
                "The location property is required for this definition.",
                "location",
            )
        })?)?;
        let row = AccountRow {
            key: key.clone(),
            location,
            kind,
            sku,
            key1: self.vault.store(&new_secret()),
            key2: self.vault.store(&new_secret()),
            created_at: now_rfc3339(),
        };
        self.store.insert_account(&row)?;
        Ok((row, true))
    }

    /// Deletes an account without deployments or running jobs, with its models and files; false when
    /// it did not exist.
    pub fn delete_account(&self, key: &AccountKey) -> Result<bool> {
        match self.store.delete_account(key)? {
            None => Ok(false),
            Some(Ok(deleted)) => {
                for m in deleted.models {
                    let _ = std::fs::remove_dir_all(&m.path);
                }
                for f in deleted.files {
                    let _ = std::fs::remove_file(&f.path);
                }
                Ok(true)
            }
            Some(Err(DeleteRefusal::HasDeployments(d))) => Err(ControlError::Conflict(format!(
                "The account '{}' still has the deployments {}; delete them first.",
                key.account,
                d.join(", ")
            ))),
            Some(Err(DeleteRefusal::HasRunningJob(j))) => Err(ControlError::Conflict(format!(
                "The account '{}' has the fine-tuning job '{j}' running; cancel it first.",
                key.account
            ))),
            Some(Err(other)) => Err(ControlError::Internal(format!("unexpected refusal {other:?}"))),
        }
    }

    /// Replaces `Key1` or `Key2` with a new secret; the old one stops working at once.
    pub fn regenerate_key(&self, key: &AccountKey, key_name: &str) -> Result<AccountRow> {
        let account = self.account(key)?;
        let which = match key_name.to_ascii_lowercase().as_str() {
            "key1" => 1,
            "key2" => 2,
            _ => {
                return Err(ControlError::invalid(
                    "InvalidKeyName",
                    format!("'{key_name}' is not a key name; use 'Key1' or 'Key2'."),
                    "keyName",
                ))
            }
        };
        self.store.set_account_key(&account.key, which, &self.vault.store(&new_secret()))?;
        self.account(&account.key)
    }
}
