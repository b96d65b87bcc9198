//! Files and fine-tuning jobs as the OpenAI / Azure OpenAI authoring API writes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"object": "list", "data": [...], "has_more": bool}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub object: String,
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, has_more: bool) -> Self {
        Page { object: "list".into(), data, has_more }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: i64,
    pub created_at: i64,
    pub filename: String,
    pub purpose: String,
    pub status: String,
    pub status_details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

/// A hyper-parameter: a number, a numeric string, or `"auto"`. Read by the server into a number or
/// `None`.
pub type HyperValue = Option<Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HyperparametersIn {
    #[serde(default)]
    pub n_epochs: HyperValue,
    #[serde(default)]
    pub batch_size: HyperValue,
    #[serde(default)]
    pub learning_rate_multiplier: HyperValue,
    /// DPO only.
    #[serde(default)]
    pub beta: HyperValue,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisedIn {
    #[serde(default)]
    pub hyperparameters: Option<HyperparametersIn>,
}

/// The newer `method: {"type": "supervised", "supervised": {"hyperparameters": ...}}` form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodIn {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub supervised: Option<SupervisedIn>,
    /// `{"hyperparameters": {..., "beta"}}`, the same shape as `supervised`.
    #[serde(default)]
    pub dpo: Option<SupervisedIn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCreateRequest {
    pub model: String,
    pub training_file: String,
    #[serde(default)]
    pub validation_file: Option<String>,
    #[serde(default)]
    pub hyperparameters: Option<HyperparametersIn>,
    #[serde(default)]
    pub method: Option<MethodIn>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub seed: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub n_epochs: i64,
    pub batch_size: i64,
    pub learning_rate_multiplier: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub object: String,
    pub model: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub fine_tuned_model: Option<String>,
    pub organization_id: String,
    pub result_files: Vec<String>,
    pub status: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub hyperparameters: Hyperparameters,
    pub method: Value,
    pub trained_tokens: Option<i64>,
    pub error: Option<JobError>,
    pub seed: i64,
    pub suffix: Option<String>,
    pub estimated_finish: Option<i64>,
    pub integrations: Option<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub level: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCheckpoint {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub fine_tuned_model_checkpoint: String,
    pub step_number: i64,
    pub metrics: Value,
    pub fine_tuning_job_id: String,
}
