//! Base models (registered by path) and fine-tuned models (imported into an account from a PEFT
//! adapter or a full-weights directory, copied into the data directory so that they outlive their
//! source).

use crate::clock::now_rfc3339;
use crate::error::Result;
use crate::ids::new_hex_id;
use crate::{Control, ControlError};
use berth_engine::{probe_config, LoraAdapter, ModelConfig};
use berth_store::{AccountKey, BaseModelRow, ModelRow};
use std::path::{Path, PathBuf};

/// Where an imported fine-tune comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Adapter(PathBuf),
    Weights(PathBuf),
}

/// A model an account can deploy: a base model or one of its fine-tunes.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountModelInfo {
    pub id: String,
    /// The base of a fine-tune; `None` for a base model.
    pub base_model: Option<String>,
    pub kind: String,
    pub created_at: String,
}

fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.contains(".ft-")
}

impl Control {
    /// Registers (or re-registers) a base model by path, after reading its configuration.
    pub async fn add_base_model(&self, name: &str, path: &str) -> Result<BaseModelRow> {
        self.add_base_model_on(name, path, None, None).await
    }

    /// Registers a base model served by Berth's engine (`engine_pool: None`) or by an engine pool,
    /// whose servers must all serve it as `served_model` (default: `name`).
    pub async fn add_base_model_on(
        &self,
        name: &str,
        path: &str,
        engine_pool: Option<&str>,
        served_model: Option<&str>,
    ) -> Result<BaseModelRow> {
        if !valid_model_name(name) {
            return Err(ControlError::invalid(
                "InvalidModelName",
                format!("Base model name '{name}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit, without '.ft-'."),
                "name",
            ));
        }
        let path = std::fs::canonicalize(path).map_err(|e| {
            ControlError::invalid("InvalidModelPath", format!("Model path '{path}' cannot be read: {e}."), "path")
        })?;
        let probe_path = path.clone();
        let config = tokio::task::spawn_blocking(move || probe_config(&probe_path))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| {
                ControlError::invalid(
                    "InvalidModel",
                    format!("'{}' is not a model Berth can run: {e}.", path.display()),
                    "path",
                )
            })?;
        if served_model.is_some() && engine_pool.is_none() {
            return Err(ControlError::invalid(
                "InvalidModel",
                "'servedModel' names the model on an engine pool: give 'enginePool' too.",
                "servedModel",
            ));
        }
        let served = served_model.unwrap_or(name);
        if served.is_empty() || served.len() > 256 || served.chars().any(|c| c.is_control()) {
            return Err(ControlError::invalid(
                "InvalidModel",
                "'servedModel' must be 1 to 256 characters.",
                "servedModel",
            ));
        }
        let mut context_length = config.context_length as i64;
        let pool = match engine_pool {
            None => None,
            Some(pool) => {
                let (pool, max_len) = self.check_pool_serves(pool, &path, served).await?;
                if let Some(n) = max_len {
                    context_length = context_length.min(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Some(pool)
            }
        };
        let row = BaseModelRow {
            name: name.to_owned(),
            path: path.display().to_string(),
            format: if path.is_dir() { "hf" } else { "gguf" }.into(),
            architecture: config.architecture.name().into(),
            context_length,
            created_at: now_rfc3339(),
            served_model: pool.as_ref().map(|_| served.to_owned()),
            engine_pool: pool,
        };
        self.store.upsert_base_model(&row)?;
        Ok(self.store.base_model(name)?.unwrap_or(row))
    }

    pub fn base_models(&self) -> Result<Vec<BaseModelRow>> {
        Ok(self.store.base_models()?)
    }

    /// Imports a fine-tune of `base` from a server directory (the operator's; the server checks): validates
    /// it against the base's shapes, copies it under the data directory, and records it as
    /// `<base>.ft-<32 hex>`.
    pub async fn import_model(&self, account: &AccountKey, base: &str, source: ModelSource) -> Result<ModelRow> {
        self.import_from(account, base, source, None).await
    }

    /// Imports a fine-tune whose files a client uploaded into `dir` (see [`Control::upload_dir`]). Its
    /// messages name the uploaded files, never where the server keeps them; `dir` is removed after.
    pub async fn import_uploaded_model(
        &self,
        account: &AccountKey,
        base: &str,
        source: ModelSource,
    ) -> Result<ModelRow> {
        let dir = match &source {
            ModelSource::Adapter(d) | ModelSource::Weights(d) => d.clone(),
        };
        let result = self.import_from(account, base, source, Some(&dir)).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// A new, owner-only directory for one upload's files.
    pub fn upload_dir(&self) -> Result<PathBuf> {
        let dir = self.config.store_dir.join("uploads").join(new_hex_id());
        berth_durable::create_private_dir_all(&dir)
            .map_err(|e| ControlError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }

    async fn import_from(
        &self,
        account: &AccountKey,
        base: &str,
        source: ModelSource,
        uploaded: Option<&Path>,
    ) -> Result<ModelRow> {
        let account = self.account(account)?.key;
        let base_row = self.store.base_model(base)?.ok_or_else(|| ControlError::NotFound {
            code: "BaseModelNotFound",
            message: format!("Base model '{base}' is not registered; add it with `berth base-model add`."),
        })?;
        let id = format!("{base}.ft-{}", new_hex_id());
        let dest = self.config.store_dir.join("models").join(&id);
        let base_path = PathBuf::from(&base_row.path);
        let (kind, src) = match &source {
            ModelSource::Adapter(p) => ("adapter", p.clone()),
            ModelSource::Weights(p) => ("weights", p.clone()),
        };
        let dest2 = dest.clone();
        let checked = tokio::task::spawn_blocking(move || -> Result<()> {
            let base_config = probe_config(&base_path).map_err(|e| {
                ControlError::invalid(
                    "InvalidModel",
                    format!("Base model '{}' cannot be read: {e}.", base_path.display()),
                    "base",
                )
            })?;
            match source {
                ModelSource::Adapter(dir) => check_adapter(&dir, &base_config)?,
                ModelSource::Weights(dir) => check_weights(&dir, &base_config)?,
            }
            copy_dir(&src, &dest2).map_err(|e| {
                ControlError::Internal(format!("cannot copy {} into the data directory: {e}", src.display()))
            })
        })
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?;
        if let Err(e) = checked {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(match (uploaded, e) {
                (Some(dir), ControlError::Invalid { code, message, target }) => {
                    // Say which uploaded file is wrong, not where the server put it.
                    let inside = format!("{}/", dir.display());
                    let message =
                        message.replace(&inside, "").replace(&dir.display().to_string(), "the uploaded files");
                    ControlError::Invalid { code, message, target }
                }
                (_, e) => e,
            });
        }
        let row = ModelRow {
            account,
            id,
            base_model: base_row.name,
            kind: kind.into(),
            path: dest.display().to_string(),
            created_at: now_rfc3339(),
        };
        if let Err(e) = self.store.insert_model(&row) {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(e.into());
        }
        Ok(row)
    }

    /// Base models and the account's fine-tunes.
    pub fn account_models(&self, account: &AccountKey) -> Result<Vec<AccountModelInfo>> {
        let account = self.account(account)?.key;
        let mut out: Vec<AccountModelInfo> = self
            .store
            .base_models()?
            .into_iter()
            .map(|b| AccountModelInfo { id: b.name, base_model: None, kind: "base".into(), created_at: b.created_at })
            .collect();
        out.extend(self.store.models(&account)?.into_iter().map(|m| AccountModelInfo {
            id: m.id,
            base_model: Some(m.base_model),
            kind: m.kind,
            created_at: m.created_at,
        }));
        Ok(out)
    }
}

fn check_adapter(dir: &Path, base: &ModelConfig) -> Result<()> {
    LoraAdapter::load(dir, base).map(|_| ()).map_err(|e| {
        ControlError::invalid(
            "InvalidAdapter",
            format!("The adapter in '{}' cannot be used: {e}.", dir.display()),
            "adapter",
        )
    })
}

fn check_weights(dir: &Path, base: &ModelConfig) -> Result<()> {
    let config = probe_config(dir).map_err(|e| {
        ControlError::invalid(
            "InvalidModel",
            format!("The weights in '{}' cannot be used: {e}.", dir.display()),
            "weights",
        )
    })?;
    if config.architecture != base.architecture
        || config.hidden_size != base.hidden_size
        || config.num_layers != base.num_layers
    {
        return Err(ControlError::invalid(
            "InvalidModel",
            format!(
                "The weights in '{}' are a {} model with {} layers of width {}, but the base is a {} model with {} layers of width {}.",
                dir.display(),
                config.architecture.name(),
                config.num_layers,
                config.hidden_size,
                base.architecture.name(),
                base.num_layers,
                base.hidden_size
            ),
            "weights",
        ));
    }
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.partial", dest.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), tmp.join(entry.file_name()))?;
        }
    }
    berth_durable::sync_tree(&tmp)?;
    berth_durable::publish(&tmp, dest)
}

/// The account key of an account's ARM id.
pub fn parse_account_id(id: &str) -> Option<AccountKey> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [s, sub, r, rg, p, ns, a, name]
            if s.eq_ignore_ascii_case("subscriptions")
                && r.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.CognitiveServices")
                && a.eq_ignore_ascii_case("accounts") =>
        {
            Some(AccountKey {
                subscription_id: (*sub).to_owned(),
                resource_group: (*rg).to_owned(),
                account: (*name).to_owned(),
            })
        }
        _ => None,
    }
}

impl Control {
    /// Deploying a model from another account (`properties.model.source`): the model is copied into the
    /// target account under the same id, so that the deployment outlives the source. The target region
    /// must support fine-tuning. The caller has been authorised on the source already.
    pub(crate) fn copy_model_from(&self, target: &berth_store::AccountRow, source: &str, model: &str) -> Result<()> {
        let invalid = |m: String| ControlError::invalid("InvalidResourceProperties", m, "properties.model.source");
        let key = parse_account_id(source).ok_or_else(|| {
            invalid(format!("'{source}' is not the resource id of an account (/subscriptions/.../accounts/{{name}})."))
        })?;
        let src = self.store.account(&key)?.ok_or_else(|| ControlError::NotFound {
            code: "ResourceNotFound",
            message: format!("The source account '{source}' was not found."),
        })?;
        let region = crate::catalog::normalize_region(&target.location);
        if !self.config.catalog.region(&region).is_some_and(|r| r.fine_tuning) {
            return Err(invalid(format!("The region '{region}' of the target account does not support fine-tuned models, so '{model}' cannot be deployed there from another account.")));
        }
        let m = self
            .store
            .model(&src.key, model)?
            .ok_or_else(|| invalid(format!("The source account '{}' has no model '{model}'.", src.key.account)))?;
        if self.store.model(&target.key, model)?.is_some() {
            return Ok(());
        }
        let dest = self.config.store_dir.join("models").join(format!("{}-{}", model, crate::ids::new_hex_id()));
        copy_dir(Path::new(&m.path), &dest)
            .map_err(|e| ControlError::Internal(format!("cannot copy {} into the target account: {e}", m.path)))?;
        let row = ModelRow {
            account: target.key.clone(),
            id: m.id.clone(),
            base_model: m.base_model.clone(),
            kind: m.kind.clone(),
            path: dest.display().to_string(),
            created_at: now_rfc3339(),
        };
        if let Err(e) = self.store.insert_model(&row) {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(e.into());
        }
        tracing::info!(model, from = %src.key.account, to = %target.key.account, "model copied across accounts");
        Ok(())
    }
}
