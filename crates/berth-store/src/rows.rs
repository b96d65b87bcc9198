//! Plain rows, one struct per table. Times are RFC 3339 strings in UTC.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRow {
    pub id: String,
    pub display_name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRow {
    pub id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceGroupRow {
    pub subscription_id: String,
    pub name: String,
    pub location: String,
    pub created_at: String,
}

/// Where an account lives: subscription, resource group, name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountKey {
    pub subscription_id: String,
    pub resource_group: String,
    pub account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    pub key: AccountKey,
    pub location: String,
    pub kind: String,
    pub sku: String,
    pub key1: StoredKey,
    pub key2: StoredKey,
    pub created_at: String,
}

/// An API key as the store keeps it: a digest to find its account by, and the key sealed under the
/// data directory's secret so that `listKeys` can show it again. The key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub digest: String,
    pub sealed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenRow {
    pub token: String,
    pub tenant_id: String,
    pub principal: String,
    pub expires_at: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModelRow {
    pub name: String,
    pub path: String,
    /// `gguf` or `hf`.
    pub format: String,
    pub architecture: String,
    pub context_length: i64,
    pub created_at: String,
    /// The engine pool that serves it and its fine-tunes; `None`: Berth's own engine.
    pub engine_pool: Option<String>,
    /// The pool's name for the model (vLLM's `--served-model-name`).
    pub served_model: Option<String>,
}

/// A pool of inference servers (vLLM) that base models can be placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnginePoolRow {
    pub name: String,
    /// `vllm`.
    pub kind: String,
    /// Base URLs of the servers.
    pub endpoints: Vec<String>,
    /// The servers' `--api-key`, sealed like an account's keys.
    pub api_key: Option<StoredKey>,
    /// The model store's directory as the servers see it, when it is mounted elsewhere than on Berth.
    pub store_path: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRow {
    pub account: AccountKey,
    pub id: String,
    pub base_model: String,
    /// `adapter` (PEFT LoRA) or `weights` (full weights).
    pub kind: String,
    pub path: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRow {
    pub account: AccountKey,
    pub name: String,
    pub sku_name: String,
    pub sku_capacity: i64,
    pub model_format: String,
    pub model_name: String,
    pub model_version: String,
    pub provisioning_state: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub etag: String,
    pub tags: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: String,
    pub modified_by: String,
    pub modified_at: String,
    pub operation_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRow {
    pub id: String,
    pub subscription_id: String,
    pub location: String,
    pub resource_id: String,
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`.
    pub status: String,
    pub start_time: String,
    pub end_time: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// An uploaded file. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRow {
    pub id: String,
    pub account: AccountKey,
    pub filename: String,
    /// `fine-tune` (uploaded) or `fine-tune-results` (written by a job).
    pub purpose: String,
    pub bytes: i64,
    /// Chat examples in the file (0 for results).
    pub examples: i64,
    pub path: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuningJobRow {
    pub id: String,
    pub account: AccountKey,
    /// The base model.
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub n_epochs: i64,
    pub batch_size: i64,
    pub learning_rate_multiplier: f64,
    pub suffix: Option<String>,
    pub seed: i64,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub fine_tuned_model: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_param: Option<String>,
    pub trained_tokens: Option<i64>,
    pub result_files: Vec<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub estimated_finish: Option<i64>,
    /// `supervised` or `dpo`.
    pub method: String,
    /// DPO's beta.
    pub beta: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FineTuningEventRow {
    pub job_id: String,
    pub seq: i64,
    pub id: String,
    pub created_at: i64,
    pub level: String,
    pub message: String,
    /// `message` or `metrics`.
    pub kind: String,
    /// JSON, for `metrics` events.
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuningCheckpointRow {
    /// `ftchkpt-<32 hex>`, also the id of the deployable model.
    pub id: String,
    pub job_id: String,
    pub created_at: i64,
    pub step_number: i64,
    pub epoch: i64,
    /// JSON object of metrics.
    pub metrics: String,
    pub fine_tuned_model_checkpoint: String,
}

/// One optimiser step's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuningMetricRow {
    pub job_id: String,
    pub step: i64,
    pub train_loss: f64,
    pub train_mean_token_accuracy: f64,
    pub valid_loss: Option<f64>,
    pub valid_mean_token_accuracy: Option<f64>,
    pub full_valid_loss: Option<f64>,
    pub full_valid_mean_token_accuracy: Option<f64>,
}

/// A span during which a deployment hosted one model under one SKU (`ended_at` open while it does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostingRow {
    pub account: AccountKey,
    pub deployment: String,
    pub model: String,
    pub base_model: String,
    pub fine_tuned: bool,
    pub sku: String,
    pub started_at: String,
    pub ended_at: Option<String>,
}

/// Tokens one deployment served in one hour (unix seconds of the hour's start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub account: AccountKey,
    pub deployment: String,
    pub hour: i64,
    pub model: String,
    pub base_model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
}

/// A deployment deleted by Berth itself (idle, or a Developer deployment's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRow {
    pub account: AccountKey,
    pub deployment: String,
    pub model: String,
    pub reason: String,
    pub deleted_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRow {
    pub tenant_id: String,
    pub object_id: String,
    pub display_name: String,
    /// `User`, `ServicePrincipal` or `ManagedIdentity`.
    pub kind: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssignmentRow {
    pub id: String,
    pub tenant_id: String,
    pub principal: String,
    /// A built-in role's name (`Owner`, `Cognitive Services OpenAI User`, ...).
    pub role: String,
    /// `/`, `/subscriptions/{id}`, `.../resourceGroups/{rg}` or an account's id.
    pub scope: String,
    pub created_at: String,
}
