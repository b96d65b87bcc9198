use crate::catalog::Catalog;
use crate::idle::Retention;
use berth_engine::EngineOptions;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings of the control plane, parsed once by the binary.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This replica's own files: the SQLite database (when no `database_url`), credentials, the
    /// token-signing key by default, TLS material.
    pub data_dir: PathBuf,
    /// Where models, training files and fine-tuning work live: the data directory on one machine, a
    /// directory every replica can read and write (a shared volume) in a fleet.
    pub store_dir: PathBuf,
    /// PostgreSQL (`postgres://...`) shared by replicas; SQLite in the data directory when `None`.
    pub database_url: Option<String>,
    /// The key that signs tokens and seals API keys; every replica of a fleet must hold the same one.
    pub signing_key_path: PathBuf,
    /// This replica's name, in the `x-berth-replica` header, logs and metrics.
    pub replica: String,
    /// The URL clients use to reach this server (endpoint of accounts, async-operation URLs).
    pub public_url: String,
    /// The region of the bootstrap account.
    pub location: String,
    /// Lifetime of access tokens minted by `berth token`.
    pub token_ttl_seconds: i64,
    /// Batch, queue and KV-cache sizes of every engine (one per loaded base model).
    pub engine: EngineOptions,
    /// Memory all engines together may take (weights and KV caches); `None`: no limit.
    pub engine_memory_bytes: Option<u64>,
    /// Fine-tuning jobs that run at once on this machine.
    pub fine_tuning_slots: usize,
    /// Regions, deployment types per model family, capacity rules and default quotas.
    pub catalog: Arc<Catalog>,
    /// When idle and Developer deployments are deleted.
    pub retention: Retention,
    /// `POST /berth/v1/clock` may move Berth's clock (tests).
    pub test_clock: bool,
}

impl ControlConfig {
    pub fn new(data_dir: PathBuf, public_url: String) -> Self {
        ControlConfig {
            store_dir: data_dir.clone(),
            database_url: None,
            signing_key_path: data_dir.join("token-signing.key"),
            replica: default_replica_name(),
            data_dir,
            public_url,
            location: "local".into(),
            token_ttl_seconds: 3600,
            engine: EngineOptions::default(),
            engine_memory_bytes: None,
            fine_tuning_slots: 1,
            catalog: Arc::new(Catalog::builtin()),
            retention: Retention::default(),
            test_clock: false,
        }
    }
}

/// `BERTH_REPLICA`, else the host's name (a Kubernetes pod's name), else `berth`.
pub fn default_replica_name() -> String {
    std::env::var("BERTH_REPLICA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "berth".into())
}
