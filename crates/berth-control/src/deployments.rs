//! Deployments: validation of a PUT, the stored row and its operation, and long-running provisioning
//! that loads the model into an engine in the background.

use crate::clock::now_rfc3339;
use crate::error::Result;
use crate::host::{DeploymentKey, LoadPlan};
use crate::ids::new_hex_id;
use crate::sku::{canonical_sku, is_provisioned};
use crate::{Control, ControlError};
use berth_engine::AdapterId;
use berth_store::{AccountKey, DeploymentRow, OperationRow};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A PUT body, already parsed from the wire.
#[derive(Debug, Clone, Default)]
pub struct DeploymentPutInput {
    pub sku_name: Option<String>,
    pub sku_capacity: Option<i64>,
    pub model_format: Option<String>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub model_source: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub api_version: String,
    pub caller: String,
    /// Sent as PATCH (provisioned deployments are created and scaled only with PUT).
    pub patch: bool,
}

/// What a PUT did.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub created: bool,
    pub row: DeploymentRow,
    /// Set when provisioning runs in the background.
    pub operation: Option<OperationRow>,
}

pub(crate) fn valid_resource_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl Control {
    pub fn deployment(&self, account: &AccountKey, name: &str) -> Result<DeploymentRow> {
        let account = self.account(account)?.key;
        self.store.deployment(&account, name)?.ok_or_else(|| ControlError::NotFound {
            code: "NotFound",
            message: format!(
                "Specified resource '/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}/deployments/{name}' cannot be found.",
                account.subscription_id, account.resource_group, account.account
            ),
        })
    }

    pub fn deployments(&self, account: &AccountKey) -> Result<Vec<DeploymentRow>> {
        let account = self.account(account)?.key;
        Ok(self.store.deployments(&account)?)
    }

    pub fn operation(&self, id: &str) -> Result<OperationRow> {
        self.store.operation(id)?.ok_or_else(|| ControlError::NotFound {
            code: "NotFound",
            message: format!("Operation '{id}' cannot be found."),
        })
    }

    /// Creates or updates a deployment. A new model starts provisioning in the background; a change of
    /// SKU, capacity or tags alone applies at once.
    pub fn put_deployment(
        self: &Arc<Self>,
        account: &AccountKey,
        name: &str,
        input: DeploymentPutInput,
    ) -> Result<PutOutcome> {
        let account_row = self.account(account)?;
        let account = account_row.key.clone();
        if !valid_resource_name(name) {
            return Err(ControlError::invalid(
                "InvalidResourceName",
                format!("Resource name '{name}' is invalid. The name can contain 2 to 64 letters, digits, '_', '.' and '-', and must start with a letter or digit."),
                "name",
            ));
        }
        let existing = self.store.deployment(&account, name)?;
        let sku_name = match &input.sku_name {
            Some(s) => canonical_sku(s).ok_or_else(|| {
                ControlError::invalid(
                    "InvalidResourceProperties",
                    format!(
                        "The specified SKU '{s}' is not a deployment type. Use one of: {}.",
                        crate::SKUS.join(", ")
                    ),
                    "sku.name",
                )
            })?,
            None => match &existing {
                Some(e) => canonical_sku(&e.sku_name).unwrap_or("Standard"),
                None => {
                    return Err(ControlError::invalid(
                        "InvalidResourceProperties",
                        "The deployment's 'sku' is required.",
                        "sku",
                    ))
                }
            },
        };
        let capacity = input.sku_capacity.or(existing.as_ref().map(|e| e.sku_capacity)).unwrap_or(1);
        if capacity < 1 {
            return Err(ControlError::invalid(
                "InvalidResourceProperties",
                format!("The capacity {capacity} is invalid: it must be at least 1."),
                "sku.capacity",
            ));
        }
        let maximum = self.config.catalog.max_capacity(sku_name);
        if capacity > maximum {
            return Err(ControlError::invalid(
                "InvalidResourceProperties",
                format!("The capacity {capacity} is invalid: a '{sku_name}' deployment takes at most {maximum}, the quota limit of its type."),
                "sku.capacity",
            ));
        }
        if is_provisioned(sku_name) && input.api_version.as_str() < "2024-10-01" {
            return Err(ControlError::invalid(
                "InvalidResourceProperties",
                format!(
                    "The SKU '{sku_name}' requires api-version 2024-10-01 or later; the request used '{}'.",
                    input.api_version
                ),
                "sku.name",
            ));
        }
        let model_name = match (&input.model_name, &existing) {
            (Some(m), _) => m.clone(),
            (None, Some(e)) => e.model_name.clone(),
            (None, None) => {
                return Err(ControlError::invalid(
                    "InvalidResourceProperties",
                    "The deployment's 'properties.model.name' is required.",
                    "properties.model.name",
                ))
            }
        };
        let format = input.model_format.clone().unwrap_or_else(|| "OpenAI".into());
        let version = input
            .model_version
            .clone()
            .or(existing.as_ref().map(|e| e.model_version.clone()))
            .unwrap_or_else(|| "1".into());
        if is_provisioned(sku_name) && input.patch && (input.sku_name.is_some() || input.sku_capacity.is_some()) {
            return Err(ControlError::invalid(
                "InvalidResourceProperties",
                format!("The SKU '{sku_name}' is provisioned: create and scale such deployments with PUT, not PATCH."),
                "sku",
            ));
        }
        if let Some(source) = &input.model_source {
            self.copy_model_from(&account_row, source, &model_name)?;
        }
        // Resolve now, so that a PUT naming a model that does not exist fails synchronously, as Azure's does.
        self.load_plan(&account, &model_name, &format, &version)?;
        self.check_capacity(&account_row, &model_name, sku_name, capacity, existing.as_ref())?;

        let now = now_rfc3339();
        let tags = input.tags.clone().or(existing.as_ref().map(|e| e.tags.clone())).unwrap_or_default();
        let same_model = existing.as_ref().is_some_and(|e| e.model_name == model_name && e.model_version == version);
        let keep_running = same_model && existing.as_ref().is_some_and(|e| e.provisioning_state == "Succeeded");
        let operation_id = new_hex_id();
        let row = DeploymentRow {
            account: account.clone(),
            name: existing.as_ref().map(|e| e.name.clone()).unwrap_or_else(|| name.to_owned()),
            sku_name: sku_name.to_owned(),
            sku_capacity: capacity,
            model_format: format,
            model_name,
            model_version: version,
            provisioning_state: if keep_running { "Succeeded" } else { "Creating" }.into(),
            error_code: None,
            error_message: None,
            etag: format!("\"{}\"", new_hex_id()),
            tags,
            created_by: existing.as_ref().map(|e| e.created_by.clone()).unwrap_or_else(|| input.caller.clone()),
            created_at: existing.as_ref().map(|e| e.created_at.clone()).unwrap_or_else(|| now.clone()),
            modified_by: input.caller.clone(),
            modified_at: now.clone(),
            operation_id: operation_id.clone(),
        };
        let op = OperationRow {
            id: operation_id,
            subscription_id: account.subscription_id.clone(),
            location: account_row.location.clone(),
            resource_id: self.deployment_resource_id(&account, &row.name),
            status: if keep_running { "Succeeded" } else { "InProgress" }.into(),
            start_time: now.clone(),
            end_time: keep_running.then(|| now.clone()),
            error_code: None,
            error_message: None,
        };
        if !keep_running {
            // The operation is this replica's from the moment it exists: the lease first.
            self.hold(&crate::fleet::provision_lease(&op.id));
        }
        self.store.put_deployment(&row, &op)?;
        if !keep_running {
            self.spawn_provisioning(row.clone());
        }
        Ok(PutOutcome { created: existing.is_none(), row, operation: (!keep_running).then_some(op) })
    }

    /// Deletes a deployment and unloads what it alone used. Returns false when it did not exist.
    pub async fn delete_deployment(&self, account: &AccountKey, name: &str) -> Result<bool> {
        let account = self.account(account)?.key;
        let Some(row) = self.store.delete_deployment(&account, name, &now_rfc3339(), None)? else { return Ok(false) };
        let host = self.host.clone();
        let key = DeploymentKey::new(&account, &row.name);
        self.limiter.forget(&key);
        tokio::task::spawn_blocking(move || host.unprovision(&key))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        Ok(true)
    }

    pub fn deployment_resource_id(&self, account: &AccountKey, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}/deployments/{name}",
            account.subscription_id, account.resource_group, account.account
        )
    }

    /// What to load for `model_name` in this account: an imported fine-tune, or a base model.
    pub(crate) fn load_plan(
        &self,
        account: &AccountKey,
        model_name: &str,
        format: &str,
        version: &str,
    ) -> Result<LoadPlan> {
        let not_supported = || {
            ControlError::invalid(
                "DeploymentModelNotSupported",
                format!("The model '{model_name}' of format '{format}' and version '{version}' is not supported or does not exist in this account."),
                "properties.model",
            )
        };
        if !format.eq_ignore_ascii_case("OpenAI") {
            return Err(not_supported());
        }
        if let Some(m) = self.store.model(account, model_name)? {
            let base = self.store.base_model(&m.base_model)?.ok_or_else(not_supported)?;
            let pool = self.pool_plan(&base, (m.kind == "adapter").then_some((&m.id, &m.path)))?;
            return Ok(match m.kind.as_str() {
                "adapter" => LoadPlan {
                    weights: base.path,
                    text_from: None,
                    adapter_dir: Some(m.path),
                    adapter_id: Some(AdapterId(m.id.clone())),
                    model_name: m.id,
                    pool,
                },
                _ if base.engine_pool.is_some() => {
                    return Err(ControlError::invalid(
                        "DeploymentModelNotSupported",
                        format!("The model '{model_name}' has full weights of its own, and its base '{}' is served by engine pool '{}': only adapters of a pool's base model can be deployed on it. Register the weights as a base model of the pool instead.", base.name, base.engine_pool.unwrap_or_default()),
                        "properties.model",
                    ))
                }
                _ => LoadPlan {
                    weights: m.path,
                    text_from: Some(base.path),
                    adapter_dir: None,
                    adapter_id: None,
                    model_name: m.id,
                    pool: None,
                },
            });
        }
        if let Some(b) = self.store.base_model(model_name)? {
            let pool = self.pool_plan(&b, None)?;
            return Ok(LoadPlan {
                weights: b.path,
                text_from: None,
                adapter_dir: None,
                adapter_id: None,
                model_name: b.name,
                pool,
            });
        }
        Err(not_supported())
    }

    /// Provisions in the background (see [`Control::provision`]).
    pub(crate) fn spawn_provisioning(self: &Arc<Self>, row: DeploymentRow) {
        let control = self.clone();
        self.spawn(async move { control.provision(row).await });
    }

    /// Loads the deployment's model on a blocking thread, then records `Succeeded` or `Failed` with the
    /// reason, unless a later PUT or a DELETE took the deployment over meanwhile.
    pub(crate) async fn provision(self: &Arc<Self>, row: DeploymentRow) {
        // One provisioner per operation across the fleet: the holder of its lease. Another replica
        // loads the deployment once it is `Succeeded`; one whose provisioner died takes the lease over.
        // (A deployment already `Succeeded` is only being loaded again, by every replica that starts.)
        if row.provisioning_state == "Succeeded" {
            return self.provision_holding_lease(&row).await;
        }
        let lease = crate::fleet::provision_lease(&row.operation_id);
        if !self.hold(&lease) {
            return;
        }
        self.fleet_provisioning.lock().unwrap_or_else(|p| p.into_inner()).insert(lease.clone());
        self.provision_holding_lease(&row).await;
        self.fleet_provisioning.lock().unwrap_or_else(|p| p.into_inner()).remove(&lease);
        let _ = self.store.release_lease(&lease, self.replica());
    }

    async fn provision_holding_lease(self: &Arc<Self>, row: &DeploymentRow) {
        let key = DeploymentKey::new(&row.account, &row.name);
        let started = std::time::Instant::now();
        let result = match self.load_plan(&row.account, &row.model_name, &row.model_format, &row.model_version) {
            Err(e) => Err(e.to_string()),
            Ok(mut plan) => {
                if let Some(p) = plan.pool.as_mut() {
                    p.strict = row.provisioning_state != "Succeeded";
                }
                self.host.provision_async(key.clone(), plan).await
            }
        };
        let error = result.as_ref().err().map(|e| format!("The model '{}' could not be loaded: {e}", row.model_name));
        let state = if error.is_none() { "Succeeded" } else { "Failed" };
        self.metrics.provisioned(error.is_none(), started.elapsed());
        let applied = self.store.finish_provisioning(
            &row.account,
            &row.name,
            &row.operation_id,
            state,
            error.as_deref().map(|m| ("ModelLoadFailed", m)),
            &now_rfc3339(),
        );
        match (&applied, &error) {
            (Ok(true), None) => {
                tracing::info!(deployment = %row.name, ms = started.elapsed().as_millis() as u64, "deployment succeeded")
            }
            (Ok(true), Some(m)) => tracing::warn!(deployment = %row.name, error = %m, "deployment failed"),
            (Ok(false), _) => {}
            (Err(e), _) => tracing::error!(deployment = %row.name, error = %e, "cannot record the provisioning result"),
        }
        // Deleted while we were loading: drop what we loaded for it.
        if !matches!(applied, Ok(true))
            && result.is_ok()
            && matches!(self.store.deployment(&row.account, &row.name), Ok(None))
        {
            let host = self.host.clone();
            let _ = tokio::task::spawn_blocking(move || host.unprovision(&key)).await;
        }
    }
}
