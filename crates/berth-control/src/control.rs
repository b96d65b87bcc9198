use crate::bootstrap::{ensure_bootstrapped, Credentials};
use crate::error::Result;
use crate::fine_tuning::FineTuningState;
use crate::host::ModelHost;
use crate::ratelimit::RateLimiter;
use crate::secrets::{digest, is_digest, Vault};
use crate::{ControlConfig, ControlError, Principal};
use berth_durable as durable;
use berth_store::{AccountKey, AccountRow, Store, SubscriptionRow};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// The control plane. Shared behind an `Arc` by every request handler.
pub struct Control {
    pub(crate) store: Arc<Store>,
    pub(crate) host: Arc<ModelHost>,
    pub(crate) config: ControlConfig,
    credentials: Credentials,
    /// Background work (provisioning); joined on shutdown.
    tasks: Mutex<JoinSet<()>>,
    ready: AtomicBool,
    pub(crate) fine_tuning: FineTuningState,
    pub(crate) limiter: Arc<RateLimiter>,
    /// Signs and checks bearer tokens (`DATA_DIR/token-signing.key`).
    pub(crate) signing_key: Vec<u8>,
    /// Seals API keys under a key derived from the signing key.
    pub(crate) vault: Vault,
    /// This replica's Prometheus metrics.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Deployments made on other replicas that this one is loading now.
    pub(crate) fleet_loading: Mutex<std::collections::HashSet<crate::host::DeploymentKey>>,
    /// Leases of the provisioning operations this replica runs now.
    pub(crate) fleet_provisioning: Mutex<std::collections::HashSet<String>>,
    /// Engine pools this replica has opened (and probes), by lower-cased name.
    pub(crate) pools: Mutex<std::collections::HashMap<String, Arc<berth_pool::Pool>>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Control {
    /// Opens the data directory (creating it), migrates the database and bootstraps on first start.
    /// Deployments are not loaded yet: call [`Control::restore`].
    pub fn open(config: ControlConfig) -> Result<Arc<Self>> {
        let cannot_create = |e: std::io::Error| {
            ControlError::Internal(format!("cannot create data directory {}: {e}", config.data_dir.display()))
        };
        durable::create_private_dir_all(&config.data_dir).map_err(cannot_create)?;
        durable::create_private_dir_all(&config.store_dir.join("models")).map_err(|e| {
            ControlError::Internal(format!("cannot create the model store {}: {e}", config.store_dir.display()))
        })?;
        let store = Arc::new(match &config.database_url {
            Some(url) => Store::open_postgres(url)?,
            None => Store::open(&config.data_dir.join("berth.db"))?,
        });
        let signing_key = signing_key(&config.signing_key_path)?;
        if store.is_postgres() {
            check_fleet_signing_key(&store, &signing_key, &config.signing_key_path)?;
        }
        let vault = Vault::new(&signing_key);
        seal_plain_secrets(&store, &vault)?;
        let credentials = ensure_bootstrapped(&store, &config, &vault)?;
        let host = Arc::new(ModelHost::new(config.engine.clone()).with_memory_budget(config.engine_memory_bytes));
        // Replicas on one database admit together; one process keeps the state in memory.
        let limiter =
            Arc::new(if store.is_postgres() { RateLimiter::shared(store.clone()) } else { RateLimiter::default() });
        let control = Arc::new(Control {
            store,
            host,
            config,
            credentials,
            tasks: Mutex::new(JoinSet::new()),
            ready: AtomicBool::new(false),
            fine_tuning: FineTuningState::default(),
            // Replicas on one database admit together; one process keeps the state in memory.
            limiter,
            signing_key,
            vault,
            metrics: crate::metrics::Metrics::default(),
            fleet_loading: Mutex::default(),
            fleet_provisioning: Mutex::default(),
            pools: Mutex::default(),
        });
        // Databases from before roles: the bootstrap administrator owns everything of its tenant.
        if control.store.count_role_assignments()? == 0 {
            let admin = berth_store::PrincipalRow {
                tenant_id: control.credentials.tenant_id.clone(),
                object_id: crate::bootstrap::ADMIN_PRINCIPAL.into(),
                display_name: "Berth administrator".into(),
                kind: "User".into(),
                created_at: crate::clock::now_rfc3339(),
            };
            control.store.upsert_principal(&admin)?;
            control.grant_administrator(&admin.tenant_id, &admin.object_id)?;
        }
        Ok(control)
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition: what was counted, and the engines' and jobs' state now.
    pub fn render_metrics(&self) -> Result<String> {
        let jobs = self.store.job_status_counts()?;
        let pools: Vec<berth_pool::PoolStatus> =
            self.pools.lock().unwrap_or_else(|p| p.into_inner()).values().map(|p| p.status()).collect();
        Ok(self.metrics.render(&self.host.engine_samples(), &pools, &jobs))
    }

    /// A deployment's metric labels (its account, name and model), when it exists.
    pub fn deployment_labels(
        &self,
        account: &AccountKey,
        deployment: &str,
    ) -> Option<crate::metrics::DeploymentLabels> {
        let d = self.store.deployment(account, deployment).ok().flatten()?;
        Some(crate::metrics::DeploymentLabels { account: d.account.account, deployment: d.name, model: d.model_name })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    pub fn host(&self) -> &Arc<ModelHost> {
        &self.host
    }

    /// True once every deployment that was `Succeeded` (or mid-provisioning) at the last stop is loaded
    /// again or has failed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Loads again every deployment that was `Succeeded`, and resumes those a crash interrupted while
    /// `Creating`. Returns once all have finished.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        let rows = self.store.all_deployments()?;
        let mut pending = Vec::new();
        for row in rows {
            if !matches!(row.provisioning_state.as_str(), "Succeeded" | "Creating" | "Accepted") {
                continue;
            }
            let control = self.clone();
            pending.push(tokio::spawn(async move { control.provision(row).await }));
        }
        for p in pending {
            let _ = p.await;
        }
        self.start_fine_tuning()?;
        self.start_idle_sweeper();
        self.start_fleet_beat();
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Stops fine-tuning (a running job resumes at the next start), waits for background work, then
    /// unloads every engine.
    pub async fn shutdown(&self) {
        self.fine_tuning.stop();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
        self.release_leases();
        let host = self.host.clone();
        let _ = tokio::task::spawn_blocking(move || host.shutdown()).await;
    }

    /// The account, or ARM's `ResourceNotFound`.
    pub fn account(&self, key: &AccountKey) -> Result<AccountRow> {
        self.store.account(key)?.ok_or_else(|| ControlError::NotFound {
            code: "ResourceNotFound",
            message: format!(
                "The Resource 'Microsoft.CognitiveServices/accounts/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                key.account, key.resource_group
            ),
        })
    }

    pub fn accounts_in_subscription(&self, subscription_id: &str) -> Result<Vec<AccountRow>> {
        Ok(self.store.accounts_in_subscription(subscription_id)?)
    }

    /// Subscriptions of the principal's tenant.
    pub fn subscriptions_for(&self, principal: &Principal) -> Result<Vec<SubscriptionRow>> {
        Ok(self.store.subscriptions()?.into_iter().filter(|s| s.tenant_id == principal.tenant_id).collect())
    }

    /// Accounts a principal can use on the data plane, optionally only those with this name.
    pub fn accounts_for(&self, principal: &Principal, name: Option<&str>) -> Result<Vec<AccountRow>> {
        let mut out = Vec::new();
        for sub in self.subscriptions_for(principal)? {
            out.extend(
                self.store
                    .accounts_in_subscription(&sub.id)?
                    .into_iter()
                    .filter(|a| name.is_none_or(|n| a.key.account.eq_ignore_ascii_case(n))),
            );
        }
        Ok(out)
    }

    /// ARM's `createdByType` for a principal acting in a subscription: `ManagedIdentity`,
    /// `Application` (a service principal) or `User`.
    pub fn principal_type(&self, subscription_id: &str, object_id: &str) -> &'static str {
        let kind = self
            .tenant_of_subscription(subscription_id)
            .ok()
            .flatten()
            .and_then(|t| self.store.principal(&t, object_id).ok().flatten())
            .map(|p| p.kind);
        match kind.as_deref() {
            Some("ManagedIdentity") => "ManagedIdentity",
            Some("ServicePrincipal") => "Application",
            _ => "User",
        }
    }

    pub fn tenant_of_subscription(&self, subscription_id: &str) -> Result<Option<String>> {
        Ok(self.store.subscriptions()?.into_iter().find(|s| s.id == subscription_id).map(|s| s.tenant_id))
    }
}

/// Databases from before digests: API keys are digested and sealed, opaque tokens digested.
fn seal_plain_secrets(store: &Store, vault: &Vault) -> Result<()> {
    for account in store.all_accounts()? {
        for (which, stored) in [(1, &account.key1), (2, &account.key2)] {
            if let Some(sealed) = vault.upgrade(stored) {
                store.set_account_key(&account.key, which, &sealed)?;
            }
        }
    }
    for token in store.access_token_values()? {
        if !is_digest(&token) {
            store.rename_access_token(&token, &digest(&token))?;
        }
    }
    Ok(())
}

/// The token-signing key, made on first start (32 random bytes, readable by the owner only). A key
/// file that exists but does not read as one is refused, never replaced: a new key would leave every
/// sealed API key unreadable and every issued token invalid.
fn signing_key(path: &std::path::Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            return std::str::from_utf8(&bytes).ok().and_then(|hex| decode_hex(hex.trim())).ok_or_else(|| {
                ControlError::Internal(format!(
                    "the token-signing key {} is damaged (it must hold 64 hexadecimal digits); restore it from a backup. Berth does not replace it, since sealed API keys and issued tokens depend on it",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ControlError::Internal(format!("cannot read the token-signing key {}: {e}", path.display()))),
    }
    let hex = format!("{}{}", crate::ids::new_hex_id(), crate::ids::new_hex_id());
    if let Some(parent) = path.parent() {
        durable::create_private_dir_all(parent)
            .map_err(|e| ControlError::Internal(format!("cannot create {}: {e}", parent.display())))?;
    }
    durable::write_file(path, hex.as_bytes())
        .map_err(|e| ControlError::Internal(format!("cannot write {}: {e}", path.display())))?;
    decode_hex(&hex).ok_or_else(|| ControlError::Internal("a new signing key did not decode".into()))
}

/// Every replica on one database must sign and seal with the same key, or a token minted by one is
/// refused by another and API keys sealed by one cannot be read by another. The first replica records
/// the key's fingerprint; one with another key refuses to start, saying which file to share.
fn check_fleet_signing_key(store: &Store, key: &[u8], path: &std::path::Path) -> Result<()> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mine = digest(&format!("berth-signing-key-fingerprint:{hex}"));
    let fleets = store.agree_on("signing_key_fingerprint", &mine)?;
    if fleets != mine {
        return Err(ControlError::Internal(format!(
            "this replica's token-signing key ({}) is not the one the other replicas of this database use: give every replica the same key file (--signing-key), e.g. a mounted secret",
            path.display()
        )));
    }
    Ok(())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}
