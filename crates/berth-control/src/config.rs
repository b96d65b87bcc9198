use crate::catalog::Catalog;
use crate::idle::Retention;
use berth_engine::EngineOptions;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings of the control plane, parsed once by the binary.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the database, credentials and imported models live.
    pub data_dir: PathBuf,
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
