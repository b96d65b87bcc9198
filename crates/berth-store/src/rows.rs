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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    pub key1: String,
    pub key2: String,
    pub created_at: String,
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
