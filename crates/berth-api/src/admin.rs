//! Berth's own administration calls (no Azure equivalent): register base models, import fine-tuned
//! models, mint access tokens.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelAdd {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModel {
    pub name: String,
    pub path: String,
    pub format: String,
    pub architecture: String,
    pub context_length: i64,
    pub created_at: String,
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
