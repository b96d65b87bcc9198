//! Berth's own administration calls (no Azure equivalent): register base models, import fine-tuned
//! models, mint access tokens.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelAdd {
    pub name: String,
    pub path: String,
    /// Serve it, and its fine-tunes, on this engine pool instead of Berth's engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_pool: Option<String>,
    /// The pool's name for the model (vLLM's `--served-model-name`); default: `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModel {
    pub name: String,
    pub path: String,
    pub format: String,
    pub architecture: String,
    pub context_length: i64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
}

/// `POST /berth/v1/engine-pools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnginePoolAdd {
    pub name: String,
    /// `vllm`.
    pub kind: String,
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The model store's directory as the pool's servers see it (default: the same path as Berth's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
}

/// An engine pool and what the answering replica sees of its servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnginePool {
    pub name: String,
    pub kind: String,
    pub endpoints: Vec<EnginePoolEndpoint>,
    pub base_models: Vec<String>,
    /// Adapters that deployments on this replica need.
    pub adapters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    pub api_key_set: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnginePoolEndpoint {
    pub url: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Models the server serves from its weights.
    pub models: Vec<String>,
    /// Adapters it holds.
    pub adapters: Vec<String>,
    pub running: f64,
    pub waiting: f64,
    pub kv_cache_usage: f64,
    pub in_flight: usize,
    pub served: u64,
}

/// `POST .../accounts/{a}/models/import`: exactly one of `adapter` and `weights`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelImport {
    pub base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedModel {
    pub id: String,
    pub base_model: String,
    pub kind: String,
    pub created_at: String,
    pub account: String,
    #[serde(rename = "resourceGroup")]
    pub resource_group: String,
}

/// What `berth token` prints (the shape of `az account get-access-token`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessToken {
    #[serde(rename = "accessToken")]
    pub access_token: String,
    #[serde(rename = "expiresOn")]
    pub expires_on: String,
    pub tenant: String,
    pub subscription: String,
    #[serde(rename = "tokenType")]
    pub token_type: String,
}
