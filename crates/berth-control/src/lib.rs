//! Berth's control plane: everything between the HTTP surfaces and the engine.
//!
//! Principal types:
//! - [`Control`]: the service object the server holds. It owns the [`berth_store::Store`] and the
//!   [`ModelHost`], bootstraps the first tenant on first start, authenticates callers, registers and
//!   imports models, and drives deployments through long-running provisioning.
//! - [`ModelHost`]: the loaded engines (one per base model or full-weights model) and the route of
//!   each deployment to its engine and adapter.
//! - [`ControlError`]: typed failures; each HTTP surface maps them to its own error shape.
//!
//! This crate knows nothing of HTTP; it speaks in rows, ids and engine handles.

mod admission;
mod auth;
mod bootstrap;
mod capacity;
mod catalog;
mod clock;
mod config;
mod control;
mod deployments;
mod error;
mod files;
mod fine_tuning;
mod fleet;
mod host;
mod idle;
mod ids;
mod metering;
mod metrics;
mod models;
mod pools;
mod ratelimit;
mod resources;
mod roles;
mod secrets;
mod sku;

pub use auth::{Caller, Principal};
pub use berth_pool::{EndpointStatus, PoolStatus};
/// Rows the control plane hands out, re-exported so that callers need not depend on the store.
pub use berth_store::{
    AccountKey, AccountRow, BaseModelRow, DeletionRow, DeploymentRow, EnginePoolRow, FileRow, FineTuningCheckpointRow,
    FineTuningEventRow, FineTuningJobRow, FineTuningMetricRow, ModelRow, OperationRow, PrincipalRow, ResourceGroupRow,
    RoleAssignmentRow, SubscriptionRow, TenantRow,
};
pub use bootstrap::Credentials;
pub use capacity::{QuotaUsage, SkuOption};
pub use catalog::{normalize_region, Catalog, DEFAULT_CATALOG};
pub use clock::{advance_clock, now_rfc3339, rfc3339_of, unix_now, unix_of};
pub use config::ControlConfig;
pub use control::Control;
pub use deployments::{DeploymentPutInput, PutOutcome};
pub use error::ControlError;
pub use files::MAX_FILE_BYTES;
pub use fine_tuning::JobCreateInput;
pub use host::{Backend, DeploymentKey, ModelHost, Route};
pub use idle::Retention;
pub use ids::new_hex_id;
pub use metering::{CostLine, CostReport, CostScope, MinutePoint};
pub use metrics::{DeploymentLabels, EngineSample, Metrics};
pub use models::{parse_account_id, AccountModelInfo, ModelSource};
pub use pools::{EnginePoolInfo, EnginePoolInput};
pub use ratelimit::{Limits, RateLimiter, Refusal, Remaining, Ticket};
pub use resources::AccountPutInput;
pub use roles::{covers, role_id, role_named, Action, ROLES};
pub use sku::{canonical_sku, is_provisioned, SKUS};

#[cfg(test)]
mod tests;
