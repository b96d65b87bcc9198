//! Engine pools as the operator registers them, and base models placed on them. Each replica opens
//! the pools it needs from the store and probes their servers itself (`berth-pool`).

use crate::clock::now_rfc3339;
use crate::error::Result;
use crate::host::PoolPlan;
use crate::{Control, ControlError};
use berth_pool::{Pool, PoolAdapter, PoolConfig, PoolStatus};
use berth_store::{BaseModelRow, EnginePoolRow};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What `berth engine-pool add` sends.
#[derive(Debug, Clone, Default)]
pub struct EnginePoolInput {
    pub name: String,
    pub kind: String,
    pub endpoints: Vec<String>,
    pub api_key: Option<String>,
    pub store_path: Option<String>,
}

/// A pool as registered, with what this replica sees of its servers now.
#[derive(Debug, Clone)]
pub struct EnginePoolInfo {
    pub row: EnginePoolRow,
    pub status: PoolStatus,
    /// Base models placed on it.
    pub base_models: Vec<String>,
}

const MAX_ENDPOINTS: usize = 64;

fn valid_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An endpoint is an `http(s)://host[:port][/path]` base URL.
fn check_endpoint(url: &str) -> std::result::Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("'{url}' is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || trimmed.len() > 512
        || !trimmed.chars().all(|c| c.is_ascii_graphic())
        || trimmed.contains(['?', '#', '@'])
    {
        return Err(format!("'{url}' is not a server's base URL (e.g. http://10.0.0.5:8000)"));
    }
    Ok(trimmed.to_owned())
}

fn invalid(code: &'static str, message: String, target: &'static str) -> ControlError {
    ControlError::invalid(code, message, target)
}

impl Control {
    /// The pool, opened (and probing) on this replica, as currently registered: a pool removed and
    /// registered again through another replica of a fleet is reopened with its new endpoints.
    pub(crate) fn open_pool(&self, name: &str) -> Result<Arc<Pool>> {
        let key = name.to_ascii_lowercase();
        let row = self.store.engine_pool(name)?.ok_or_else(|| not_found(name))?;
        let api_key = row.api_key.as_ref().map(|k| self.vault.open(k)).transpose()?;
        let config = PoolConfig { name: row.name, endpoints: row.endpoints, api_key };
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(&key).filter(|p| *p.config() == config) {
            return Ok(p.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ControlError::Internal("engine pools need the server's runtime".into()))?;
        let pool = Pool::start(config, runtime);
        pools.insert(key, pool.clone());
        Ok(pool)
    }

    pub async fn add_engine_pool(&self, input: EnginePoolInput) -> Result<EnginePoolInfo> {
        if !valid_pool_name(&input.name) {
            return Err(invalid(
                "InvalidEnginePoolName",
                format!("Engine pool name '{}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit.", input.name),
                "name",
            ));
        }
        if !input.kind.eq_ignore_ascii_case("vllm") {
            return Err(invalid(
                "UnsupportedEnginePoolKind",
                format!("Engine pool kind '{}' is not supported: the only kind is 'vllm'.", input.kind),
                "kind",
            ));
        }
        if input.endpoints.is_empty() || input.endpoints.len() > MAX_ENDPOINTS {
            return Err(invalid(
                "InvalidEndpoints",
                format!("An engine pool takes 1 to {MAX_ENDPOINTS} endpoints; {} were given.", input.endpoints.len()),
                "endpoints",
            ));
        }
        let mut endpoints = Vec::with_capacity(input.endpoints.len());
        for e in &input.endpoints {
            let url =
                check_endpoint(e).map_err(|m| invalid("InvalidEndpoints", format!("Endpoint {m}."), "endpoints"))?;
            if endpoints.contains(&url) {
                return Err(invalid("InvalidEndpoints", format!("Endpoint '{url}' is listed twice."), "endpoints"));
            }
            endpoints.push(url);
        }
        if let Some(k) = &input.api_key {
            if k.is_empty() || k.len() > 512 || !k.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(
                    "InvalidApiKey",
                    "The API key must be 1 to 512 visible ASCII characters.".into(),
                    "apiKey",
                ));
            }
        }
        if let Some(p) = &input.store_path {
            if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
                return Err(invalid(
                    "InvalidStorePath",
                    format!("The store path '{p}' must be an absolute path without '..'."),
                    "storePath",
                ));
            }
        }
        let row = EnginePoolRow {
            name: input.name.clone(),
            kind: "vllm".into(),
            endpoints,
            api_key: input.api_key.as_deref().map(|k| self.vault.store(k)),
            store_path: input.store_path.map(|p| p.trim_end_matches('/').to_owned()),
            created_at: now_rfc3339(),
        };
        if !self.store.insert_engine_pool(&row)? {
            return Err(ControlError::ConflictCode {
                code: "EnginePoolExists",
                message: format!("Engine pool '{}' exists already: remove it first to change it.", input.name),
            });
        }
        let pool = self.open_pool(&row.name)?;
        pool.refresh().await;
        self.engine_pool(&row.name)
    }

    pub fn engine_pools(&self) -> Result<Vec<EnginePoolInfo>> {
        let rows = self.store.engine_pools()?;
        rows.into_iter().map(|r| self.pool_info(r)).collect()
    }

    pub fn engine_pool(&self, name: &str) -> Result<EnginePoolInfo> {
        let row = self.store.engine_pool(name)?.ok_or_else(|| not_found(name))?;
        self.pool_info(row)
    }

    fn pool_info(&self, row: EnginePoolRow) -> Result<EnginePoolInfo> {
        let status = self.open_pool(&row.name)?.status();
        let base_models = self
            .store
            .base_models()?
            .into_iter()
            .filter(|b| b.engine_pool.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(&row.name)))
            .map(|b| b.name)
            .collect();
        Ok(EnginePoolInfo { row, status, base_models })
    }

    /// Removes a pool no base model is placed on; false when there was none.
    pub fn remove_engine_pool(&self, name: &str) -> Result<bool> {
        match self.store.delete_engine_pool(name)? {
            Ok(removed) => {
                self.pools.lock().unwrap_or_else(|p| p.into_inner()).remove(&name.to_ascii_lowercase());
                Ok(removed)
            }
            Err(models) => Err(ControlError::ConflictCode {
                code: "EnginePoolInUse",
                message: format!(
                    "Engine pool '{name}' serves the base models {}: remove them from it first.",
                    models.join(", ")
                ),
            }),
        }
    }

    /// At base-model registration: the pool exists, the weights are a Hugging Face directory (what
    /// vLLM serves), and every endpoint serves the model. Returns the pool's name as registered and
    /// its smallest context length.
    pub(crate) async fn check_pool_serves(
        &self,
        pool: &str,
        path: &std::path::Path,
        served_model: &str,
    ) -> Result<(String, Option<u64>)> {
        let row = self.store.engine_pool(pool)?.ok_or_else(|| {
            invalid(
                "EnginePoolNotFound",
                format!("Engine pool '{pool}' is not registered; add it with `berth engine-pool add`."),
                "enginePool",
            )
        })?;
        if !path.is_dir() {
            return Err(invalid(
                "InvalidModelPath",
                format!("A base model on an engine pool is a Hugging Face directory (the one its vLLM servers were started with); '{}' is a file.", path.display()),
                "path",
            ));
        }
        let max_len = self.open_pool(&row.name)?.check_serves(served_model).await.map_err(|m| {
            invalid("EnginePoolMismatch", format!("The base model cannot be placed on the pool: {m}."), "enginePool")
        })?;
        Ok((row.name, max_len))
    }

    /// How a model of `base` is served when `base` is on a pool: the adapter by a name unique to its
    /// files (an id copied into two accounts is two adapters), at the path the servers see.
    pub(crate) fn pool_plan(
        &self,
        base: &BaseModelRow,
        adapter: Option<(&String, &String)>,
    ) -> Result<Option<PoolPlan>> {
        let Some(pool_name) = &base.engine_pool else { return Ok(None) };
        let row = self.store.engine_pool(pool_name)?.ok_or_else(|| not_found(pool_name))?;
        let pool = self.open_pool(pool_name)?;
        let adapter = adapter.map(|(id, path)| {
            let mut h = std::hash::DefaultHasher::new();
            path.hash(&mut h);
            PoolAdapter { name: format!("{id}-{:08x}", h.finish() as u32), path: self.path_on_pool(&row, path) }
        });
        Ok(Some(PoolPlan {
            pool,
            served_model: base.served_model.clone().unwrap_or_else(|| base.name.clone()),
            context_length: usize::try_from(base.context_length).unwrap_or(usize::MAX),
            adapter,
            strict: true,
        }))
    }

    /// The engine pool a model of this account is served by, if any.
    pub fn engine_pool_of(&self, account: &berth_store::AccountKey, model: &str) -> Option<String> {
        let base = match self.store.model(account, model).ok().flatten() {
            Some(m) => m.base_model,
            None => model.to_owned(),
        };
        self.store.base_model(&base).ok().flatten()?.engine_pool
    }

    /// A path in the model store as the pool's servers see it.
    fn path_on_pool(&self, row: &EnginePoolRow, path: &str) -> String {
        let (Some(theirs), Ok(ours)) = (&row.store_path, std::fs::canonicalize(&self.config.store_dir)) else {
            return path.to_owned();
        };
        match std::path::Path::new(path).strip_prefix(&ours) {
            Ok(rest) => format!("{theirs}/{}", rest.display()),
            Err(_) => path.to_owned(),
        }
    }
}

fn not_found(name: &str) -> ControlError {
    ControlError::NotFound { code: "EnginePoolNotFound", message: format!("Engine pool '{name}' is not registered.") }
}
