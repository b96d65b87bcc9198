use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `{"error": {...}}`, the one error shape of the management plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmError {
    pub error: ArmErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub details: Vec<Value>,
    #[serde(rename = "additionalInfo", default)]
    pub additional_info: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sku {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default, deserialize_with = "capacity")]
    pub capacity: Option<i64>,
}

/// Capacity arrives as a number (SDKs) or a numeric string (the Azure CLI).
fn capacity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            // A float only when it is whole and inside i64: `1e19` must not saturate to i64::MAX.
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("sku.capacity must be a whole number, got {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("sku.capacity must be a whole number, got \"{s}\""))),
        Some(other) => Err(D::Error::custom(format!("sku.capacity must be a number, got {other}"))),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(rename = "sourceAccount", default, skip_serializing_if = "Option::is_none")]
    pub source_account: Option<String>,
}

/// Body of `PUT .../deployments/{name}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeploymentPut {
    #[serde(default)]
    pub sku: Option<Sku>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Option<DeploymentPutProperties>,
    /// Every other field, so that the server can refuse what it does not serve by name.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeploymentPutProperties {
    #[serde(default)]
    pub model: Option<DeploymentModel>,
    #[serde(rename = "raiPolicyName", default)]
    pub rai_policy_name: Option<String>,
    #[serde(rename = "versionUpgradeOption", default)]
    pub version_upgrade_option: Option<String>,
    /// Every other field, so that the server can refuse what it does not serve by name.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemData {
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "createdByType")]
    pub created_by_type: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "lastModifiedBy")]
    pub last_modified_by: String,
    #[serde(rename = "lastModifiedByType")]
    pub last_modified_by_type: String,
    #[serde(rename = "lastModifiedAt")]
    pub last_modified_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub key: String,
    #[serde(rename = "renewalPeriod")]
    pub renewal_period: i64,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentProperties {
    pub model: DeploymentModel,
    #[serde(rename = "provisioningState")]
    pub provisioning_state: String,
    pub capabilities: BTreeMap<String, String>,
    #[serde(rename = "rateLimits")]
    pub rate_limits: Vec<RateLimit>,
    #[serde(rename = "currentCapacity")]
    pub current_capacity: i64,
    #[serde(rename = "raiPolicyName")]
    pub rai_policy_name: String,
    #[serde(rename = "versionUpgradeOption")]
    pub version_upgrade_option: String,
    /// Why provisioning failed (Berth's addition; Azure puts it only on the operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ArmErrorBody>,
    /// When Berth deletes the deployment if it stays idle (Berth's addition: Azure's 15-day rule,
    /// or a Developer deployment's end).
    #[serde(rename = "scheduledDeletionTime", default, skip_serializing_if = "Option::is_none")]
    pub scheduled_deletion_time: Option<String>,
    /// The engine pool that serves it (Berth's addition; absent on Berth's own engine).
    #[serde(rename = "enginePool", default, skip_serializing_if = "Option::is_none")]
    pub engine_pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sku: Sku,
    #[serde(rename = "systemData")]
    pub system_data: SystemData,
    pub etag: String,
    pub tags: BTreeMap<String, String>,
    pub properties: DeploymentProperties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub value: Vec<T>,
    #[serde(rename = "nextLink", default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// What an `Azure-AsyncOperation` URL answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationStatus {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(rename = "startTime")]
    pub start_time: String,
    #[serde(rename = "endTime", default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ArmErrorBody>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountProperties {
    pub endpoint: String,
    pub endpoints: BTreeMap<String, String>,
    #[serde(rename = "provisioningState")]
    pub provisioning_state: String,
    #[serde(rename = "customSubDomainName")]
    pub custom_sub_domain_name: String,
    #[serde(rename = "publicNetworkAccess")]
    pub public_network_access: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind_type: String,
    pub kind: String,
    pub location: String,
    pub sku: Sku,
    pub tags: BTreeMap<String, String>,
    pub properties: AccountProperties,
    /// Convenience fields the `berth` CLI shows (not in Azure's resource).
    #[serde(rename = "resourceGroup")]
    pub resource_group: String,
    #[serde(rename = "subscriptionId")]
    pub subscription_id: String,
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountKeys {
    pub key1: String,
    pub key2: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(rename = "subscriptionId")]
    pub subscription_id: String,
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    #[serde(rename = "displayName")]
    pub display_name: String,
    pub state: String,
}

/// A model an account can deploy (`GET .../accounts/{a}/models` and `/openai/models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountModel {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub owned_by: String,
    /// The base model a fine-tune was made from; `null` for a base model.
    pub model: Option<String>,
    pub status: String,
    pub capabilities: BTreeMap<String, bool>,
    pub lifecycle_status: String,
}

/// A model an account can deploy, as ARM lists it (`GET .../accounts/{a}/models`), with the deployment
/// types its region offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmAccountModel {
    pub format: String,
    pub name: String,
    pub version: String,
    /// The base model of a fine-tune or checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<ModelRef>,
    pub is_default_version: bool,
    pub capabilities: BTreeMap<String, String>,
    pub skus: Vec<ModelSku>,
    pub lifecycle_status: String,
    pub system_data: ModelSystemData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub format: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSku {
    pub name: String,
    pub usage_name: String,
    pub capacity: CapacityRange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSystemData {
    pub created_at: String,
}

/// Capacity range of a deployment type (`.../deployments/{name}/skus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRange {
    pub minimum: i64,
    pub maximum: i64,
    pub step: i64,
    pub default: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuName {
    pub name: String,
}

/// A deployment type a deployment can move to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSku {
    pub resource_type: String,
    pub sku: SkuName,
    pub capacity: CapacityRange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageName {
    pub value: String,
    pub localized_value: String,
}

/// One quota of `.../locations/{location}/usages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    pub unit: String,
    pub name: UsageName,
    pub quota_period: Option<String>,
    pub limit: f64,
    pub current_value: f64,
    pub next_reset_time: Option<String>,
    pub status: String,
}

/// One deployment's charges in a cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostLineOut {
    pub subscription_id: String,
    pub resource_group: String,
    pub account: String,
    pub deployment: String,
    pub model: String,
    pub sku: String,
    pub hosting_hours: f64,
    pub hosting_cost: f64,
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub token_cost: f64,
    pub total_cost: f64,
}

/// `.../providers/Microsoft.CognitiveServices/costs`: Berth's cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReportOut {
    pub from: String,
    pub to: String,
    pub currency: String,
    pub value: Vec<CostLineOut>,
    pub total_cost: f64,
}

/// A deployment Berth deleted itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDeletion {
    pub name: String,
    pub model: String,
    pub reason: String,
    pub deleted_at: String,
}

/// A PUT of an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountPut {
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub sku: Option<SkuName>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Option<serde_json::Value>,
}

/// `{"keyName": "Key1"}` of `regenerateKey`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegenerateKey {
    pub key_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroupPut {
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupProperties {
    pub provisioning_state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroup {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind_type: String,
    pub location: String,
    pub properties: ResourceGroupProperties,
    pub tags: BTreeMap<String, String>,
}
