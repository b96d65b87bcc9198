//! What a deployment may be: the catalog's offers for its model family in its account's region, the
//! provisioned capacity rules, and the subscription's quota per region and family.

use crate::catalog::normalize_region;
use crate::error::Result;
use crate::sku::is_provisioned;
use crate::{Control, ControlError};
use berth_store::{AccountKey, AccountRow, DeploymentRow};

/// One quota of a subscription in a region, as `.../locations/{region}/usages` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaUsage {
    /// `OpenAI.Standard.<family>` or `OpenAI.ProvisionedManaged.<family>`.
    pub name: String,
    pub localized_name: String,
    pub current: i64,
    pub limit: i64,
}

/// A deployment type a deployment can move to, with its capacity range.
#[derive(Debug, Clone, PartialEq)]
pub struct SkuOption {
    pub name: &'static str,
    /// The quota the type draws on (`OpenAI.Standard.<family>`, ...).
    pub usage_name: String,
    pub minimum: i64,
    pub maximum: i64,
    pub step: i64,
    pub default: i64,
}

/// The model a deployment serves, placed in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placement {
    pub base_model: String,
    pub family: String,
    pub fine_tuned: bool,
}

fn quota_label(provisioned: bool, family: &str) -> (String, String) {
    if provisioned {
        (format!("OpenAI.ProvisionedManaged.{family}"), format!("Provisioned Managed Throughput Unit - {family}"))
    } else {
        (format!("OpenAI.Standard.{family}"), format!("Tokens Per Minute (thousands) - {family}"))
    }
}

impl Control {
    /// The base model and family behind a model name of an account (a base model, a fine-tune or a checkpoint).
    pub(crate) fn placement(&self, account: &AccountKey, model_name: &str) -> Result<Option<Placement>> {
        let (base, fine_tuned) = match self.store.model(account, model_name)? {
            Some(m) => (m.base_model, true),
            None => match self.store.base_model(model_name)? {
                Some(b) => (b.name, false),
                None => return Ok(None),
            },
        };
        Ok(self.config.catalog.family_of(&base).map(|(family, _)| Placement {
            base_model: base.clone(),
            family: family.to_owned(),
            fine_tuned,
        }))
    }

    /// Checks a deployment against the catalog and the quota; `replacing` is the deployment it updates.
    pub(crate) fn check_capacity(
        &self,
        account: &AccountRow,
        model_name: &str,
        sku: &str,
        capacity: i64,
        replacing: Option<&DeploymentRow>,
    ) -> Result<Placement> {
        let catalog = &self.config.catalog;
        let region = normalize_region(&account.location);
        let invalid =
            |message: String, target: &'static str| ControlError::invalid("InvalidResourceProperties", message, target);
        let placement = self.placement(&account.key, model_name)?.ok_or_else(|| {
            invalid(
                format!(
                    "The model '{model_name}' belongs to no model family of the catalog, so it cannot be deployed."
                ),
                "properties.model.name",
            )
        })?;
        let Some(region_info) = catalog.region(&region) else {
            return Err(invalid(
                format!("The region '{region}' of account '{}' is not in the catalog.", account.key.account),
                "location",
            ));
        };
        if placement.fine_tuned && !region_info.fine_tuning {
            return Err(invalid(
                format!("The region '{region}' does not support fine-tuned models; the fine-tuned model '{model_name}' cannot be deployed there."),
                "properties.model.name",
            ));
        }
        if sku == "Developer" && !placement.fine_tuned {
            return Err(invalid(
                format!("The SKU 'Developer' is for fine-tuned models only; '{model_name}' is a base model."),
                "sku.name",
            ));
        }
        if !catalog.offers(sku, &placement.family, &region) {
            return Err(invalid(
                format!(
                    "The specified SKU '{sku}' for model '{}' is not supported in this region '{region}'.",
                    placement.base_model
                ),
                "sku.name",
            ));
        }
        let provisioned = is_provisioned(sku);
        if provisioned {
            let rule = catalog.ptu_rule(&placement.family, sku);
            let off_step = capacity.checked_sub(rule.min).and_then(|d| d.checked_rem(rule.step)).is_none_or(|r| r != 0);
            if capacity < rule.min || off_step {
                return Err(invalid(
                    format!(
                        "The capacity {capacity} is invalid for SKU '{sku}' and model '{}': provisioned deployments of this model take at least {} PTU, in steps of {}.",
                        placement.base_model, rule.min, rule.step
                    ),
                    "sku.capacity",
                ));
            }
        }
        let limit = if provisioned { catalog.quota.provisioned_ptu } else { catalog.quota.standard_ktpm };
        let used = self.quota_used(&account.key.subscription_id, &region, &placement.family, provisioned, replacing)?;
        if used.checked_add(capacity).is_none_or(|total| total > limit) {
            let (_, label) = quota_label(provisioned, &placement.family);
            return Err(ControlError::invalid(
                "InsufficientQuota",
                format!(
                    "This operation require {capacity} new capacity in quota {label}, which is bigger than the current available capacity {}. The current quota usage is {used} and the quota limit is {limit} for quota {label}.",
                    limit.saturating_sub(used).max(0)
                ),
                "sku.capacity",
            ));
        }
        Ok(placement)
    }

    /// Capacity the subscription's deployments use in a region for a family, by kind; `except` is left out.
    fn quota_used(
        &self,
        subscription: &str,
        region: &str,
        family: &str,
        provisioned: bool,
        except: Option<&DeploymentRow>,
    ) -> Result<i64> {
        let mut used: i64 = 0;
        for account in self.store.accounts_in_subscription(subscription)? {
            if normalize_region(&account.location) != region {
                continue;
            }
            for d in self.store.deployments(&account.key)? {
                if except.is_some_and(|e| e.account == d.account && e.name.eq_ignore_ascii_case(&d.name)) {
                    continue;
                }
                if is_provisioned(&d.sku_name) != provisioned || d.provisioning_state == "Failed" {
                    continue;
                }
                if self.placement(&account.key, &d.model_name)?.is_some_and(|p| p.family == family) {
                    used = used.saturating_add(d.sku_capacity);
                }
            }
        }
        Ok(used)
    }

    /// Every quota of a subscription in a region: each family the region offers, standard and provisioned.
    pub fn usages(&self, subscription: &str, location: &str) -> Result<Vec<QuotaUsage>> {
        let catalog = &self.config.catalog;
        let region = normalize_region(location);
        if catalog.region(&region).is_none() {
            return Err(ControlError::NotFound {
                code: "LocationNotFound",
                message: format!("The location '{location}' is not in the catalog."),
            });
        }
        let mut out = Vec::new();
        for family in catalog.families.keys() {
            let skus = catalog.skus_for(family, &region);
            for provisioned in [false, true] {
                if !skus.iter().any(|s| is_provisioned(s) == provisioned) {
                    continue;
                }
                let (name, localized_name) = quota_label(provisioned, family);
                let limit = if provisioned { catalog.quota.provisioned_ptu } else { catalog.quota.standard_ktpm };
                out.push(QuotaUsage {
                    name,
                    localized_name,
                    current: self.quota_used(subscription, &region, family, provisioned, None)?,
                    limit,
                });
            }
        }
        Ok(out)
    }

    /// The deployment types a deployment can move to in its region, with capacity ranges.
    pub fn deployment_skus(&self, account: &AccountKey, name: &str) -> Result<Vec<SkuOption>> {
        let d = self.deployment(account, name)?;
        self.model_skus(account, &d.model_name)
    }

    /// The deployment types a model of an account can be deployed with in the account's region, with
    /// capacity ranges (what the portal's deploy dialog offers).
    pub fn model_skus(&self, account: &AccountKey, model: &str) -> Result<Vec<SkuOption>> {
        let account_row = self.account(account)?;
        let catalog = &self.config.catalog;
        let Some(p) = self.placement(&account_row.key, model)? else { return Ok(vec![]) };
        let region = normalize_region(&account_row.location);
        Ok(catalog
            .skus_for(&p.family, &region)
            .into_iter()
            .filter(|s| p.fine_tuned || *s != "Developer")
            .map(|s| {
                let provisioned = is_provisioned(s);
                let limit = if provisioned { catalog.quota.provisioned_ptu } else { catalog.quota.standard_ktpm };
                let (minimum, step) = if provisioned {
                    (catalog.ptu_rule(&p.family, s).min, catalog.ptu_rule(&p.family, s).step)
                } else {
                    (1, 1)
                };
                SkuOption {
                    name: s,
                    usage_name: quota_label(provisioned, &p.family).0,
                    minimum,
                    maximum: limit,
                    step,
                    default: minimum,
                }
            })
            .collect())
    }
}
