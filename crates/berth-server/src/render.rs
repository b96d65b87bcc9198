//! Rows to wire resources.

use berth_api::arm::{
    Account, AccountModel, AccountProperties, ArmErrorBody, Deployment, DeploymentModel, DeploymentProperties,
    OperationStatus, RateLimit, Sku, SystemData,
};
use berth_control::{AccountModelInfo, Control};
use berth_control::{AccountRow, DeploymentRow, OperationRow};
use std::collections::BTreeMap;

pub fn account_resource_id(a: &AccountRow) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
        a.key.subscription_id, a.key.resource_group, a.key.account
    )
}

/// The data-plane endpoint of an account: the server's URL with the account in the path, so that a
/// bearer token (which may see several accounts) names the one it means.
pub fn account_endpoint(control: &Control, a: &AccountRow) -> String {
    format!("{}/accounts/{}/", control.config().public_url.trim_end_matches('/'), a.key.account)
}

pub fn account(control: &Control, a: &AccountRow, tenant_id: &str) -> Account {
    let endpoint = account_endpoint(control, a);
    Account {
        id: account_resource_id(a),
        name: a.key.account.clone(),
        kind_type: "Microsoft.CognitiveServices/accounts".into(),
        kind: a.kind.clone(),
        location: a.location.clone(),
        sku: Sku { name: a.sku.clone(), capacity: None },
        tags: BTreeMap::new(),
        properties: AccountProperties {
            endpoint: endpoint.clone(),
            endpoints: BTreeMap::from([("OpenAI Language Model Instance API".to_string(), endpoint.clone())]),
            provisioning_state: "Succeeded".into(),
            custom_sub_domain_name: a.key.account.clone(),
            public_network_access: "Enabled".into(),
        },
        resource_group: a.key.resource_group.clone(),
        subscription_id: a.key.subscription_id.clone(),
        tenant_id: tenant_id.to_owned(),
        endpoint,
    }
}

pub fn deployment(control: &Control, d: &DeploymentRow) -> Deployment {
    let rate_limits = match berth_control::Limits::standard(d.sku_capacity) {
        _ if berth_control::is_provisioned(&d.sku_name) => vec![],
        berth_control::Limits::Standard { requests_per_window, tokens_per_minute } => vec![
            RateLimit { key: "request".into(), renewal_period: 10, count: saturating_i64(requests_per_window) },
            RateLimit { key: "token".into(), renewal_period: 60, count: saturating_i64(tokens_per_minute) },
        ],
        berth_control::Limits::Provisioned { .. } => vec![],
    };
    Deployment {
        id: control.deployment_resource_id(&d.account, &d.name),
        name: d.name.clone(),
        kind: "Microsoft.CognitiveServices/accounts/deployments".into(),
        sku: Sku { name: d.sku_name.clone(), capacity: Some(d.sku_capacity) },
        system_data: SystemData {
            created_by: d.created_by.clone(),
            created_by_type: control.principal_type(&d.account.subscription_id, &d.created_by).into(),
            created_at: d.created_at.clone(),
            last_modified_by: d.modified_by.clone(),
            last_modified_by_type: control.principal_type(&d.account.subscription_id, &d.modified_by).into(),
            last_modified_at: d.modified_at.clone(),
        },
        etag: d.etag.clone(),
        tags: d.tags.clone(),
        properties: DeploymentProperties {
            model: DeploymentModel {
                format: Some(d.model_format.clone()),
                name: Some(d.model_name.clone()),
                version: Some(d.model_version.clone()),
                source: None,
                source_account: None,
            },
            provisioning_state: d.provisioning_state.clone(),
            capabilities: BTreeMap::from([
                ("chatCompletion".to_string(), "true".to_string()),
                ("completion".to_string(), "true".to_string()),
            ]),
            rate_limits,
            current_capacity: d.sku_capacity,
            rai_policy_name: crate::controllers::deployments::RAI_POLICY.into(),
            version_upgrade_option: crate::controllers::deployments::VERSION_UPGRADE.into(),
            error: error_body(&d.error_code, &d.error_message),
            scheduled_deletion_time: control.scheduled_deletion(d).ok().flatten(),
            engine_pool: control.engine_pool_of(&d.account, &d.model_name),
        },
    }
}

/// A stored failure (code and message columns) as ARM's error body.
fn error_body(code: &Option<String>, message: &Option<String>) -> Option<ArmErrorBody> {
    code.as_ref().map(|code| ArmErrorBody {
        code: code.clone(),
        message: message.clone().unwrap_or_default(),
        target: None,
        details: vec![],
        additional_info: vec![],
    })
}

pub fn operation_url(control: &Control, op: &OperationRow, api_version: &str) -> String {
    format!(
        "{}/subscriptions/{}/providers/Microsoft.CognitiveServices/locations/{}/operationResults/{}?api-version={api_version}",
        control.config().public_url.trim_end_matches('/'),
        op.subscription_id,
        op.location,
        op.id
    )
}

pub fn operation(op: &OperationRow) -> OperationStatus {
    OperationStatus {
        id: format!(
            "/subscriptions/{}/providers/Microsoft.CognitiveServices/locations/{}/operationResults/{}",
            op.subscription_id, op.location, op.id
        ),
        name: op.id.clone(),
        status: op.status.clone(),
        start_time: op.start_time.clone(),
        end_time: op.end_time.clone(),
        error: error_body(&op.error_code, &op.error_message),
    }
}

pub fn account_model(m: &AccountModelInfo) -> AccountModel {
    let created_at = chrono::DateTime::parse_from_rfc3339(&m.created_at).map(|t| t.timestamp()).unwrap_or(0);
    AccountModel {
        id: m.id.clone(),
        object: "model".into(),
        created_at,
        owned_by: if m.base_model.is_some() { "organization-owner" } else { "system" }.into(),
        model: m.base_model.clone(),
        status: "succeeded".into(),
        capabilities: BTreeMap::from([
            ("chat_completion".to_string(), true),
            ("completion".to_string(), true),
            ("fine_tune".to_string(), m.base_model.is_none()),
            ("inference".to_string(), true),
        ]),
        lifecycle_status: "generally-available".into(),
    }
}

pub fn arm_account_model(m: &AccountModelInfo, skus: &[berth_control::SkuOption]) -> berth_api::arm::ArmAccountModel {
    use berth_api::arm::{ArmAccountModel, CapacityRange, ModelRef, ModelSku, ModelSystemData};
    let yes = |b: bool| if b { "true" } else { "false" }.to_string();
    ArmAccountModel {
        format: "OpenAI".into(),
        name: m.id.clone(),
        version: "1".into(),
        base_model: m.base_model.clone().map(|name| ModelRef { format: "OpenAI".into(), name, version: "1".into() }),
        is_default_version: true,
        capabilities: BTreeMap::from([
            ("chatCompletion".to_string(), yes(true)),
            ("completion".to_string(), yes(true)),
            ("fineTune".to_string(), yes(m.base_model.is_none())),
        ]),
        skus: skus
            .iter()
            .map(|s| ModelSku {
                name: s.name.into(),
                usage_name: s.usage_name.clone(),
                capacity: CapacityRange { minimum: s.minimum, maximum: s.maximum, step: s.step, default: s.default },
            })
            .collect(),
        lifecycle_status: "GenerallyAvailable".into(),
        system_data: ModelSystemData { created_at: m.created_at.clone() },
    }
}

pub fn file(f: &berth_control::FileRow) -> berth_api::fine_tuning::FileObject {
    berth_api::fine_tuning::FileObject {
        id: f.id.clone(),
        object: "file".into(),
        bytes: f.bytes,
        created_at: f.created_at,
        filename: f.filename.clone(),
        purpose: f.purpose.clone(),
        status: f.status.clone(),
        status_details: None,
    }
}

pub fn job(j: &berth_control::FineTuningJobRow) -> berth_api::fine_tuning::Job {
    let hyperparameters = berth_api::fine_tuning::Hyperparameters {
        n_epochs: j.n_epochs,
        batch_size: j.batch_size,
        learning_rate_multiplier: j.learning_rate_multiplier,
    };
    berth_api::fine_tuning::Job {
        id: j.id.clone(),
        object: "fine_tuning.job".into(),
        model: j.model.clone(),
        created_at: j.created_at,
        finished_at: j.finished_at,
        fine_tuned_model: j.fine_tuned_model.clone(),
        organization_id: j.account.subscription_id.clone(),
        result_files: j.result_files.clone(),
        status: j.status.clone(),
        training_file: j.training_file.clone(),
        validation_file: j.validation_file.clone(),
        method: match (j.method.as_str(), j.beta) {
            ("dpo", beta) => {
                let mut hp = serde_json::to_value(&hyperparameters).unwrap_or_default();
                hp["beta"] = serde_json::json!(beta.unwrap_or(0.1));
                serde_json::json!({ "type": "dpo", "dpo": { "hyperparameters": hp } })
            }
            _ => serde_json::json!({ "type": "supervised", "supervised": { "hyperparameters": hyperparameters } }),
        },
        hyperparameters,
        trained_tokens: j.trained_tokens,
        error: j.error_code.as_ref().map(|code| berth_api::fine_tuning::JobError {
            code: code.clone(),
            message: j.error_message.clone().unwrap_or_default(),
            param: j.error_param.clone(),
        }),
        seed: j.seed,
        suffix: j.suffix.clone(),
        estimated_finish: j.estimated_finish,
        integrations: None,
    }
}

pub fn job_event(e: &berth_control::FineTuningEventRow) -> berth_api::fine_tuning::JobEvent {
    berth_api::fine_tuning::JobEvent {
        id: e.id.clone(),
        object: "fine_tuning.job.event".into(),
        created_at: e.created_at,
        level: e.level.clone(),
        message: e.message.clone(),
        kind: e.kind.clone(),
        data: e.data.as_deref().and_then(|d| serde_json::from_str(d).ok()),
    }
}

pub fn checkpoint(c: &berth_control::FineTuningCheckpointRow) -> berth_api::fine_tuning::JobCheckpoint {
    berth_api::fine_tuning::JobCheckpoint {
        id: c.id.clone(),
        object: "fine_tuning.job.checkpoint".into(),
        created_at: c.created_at,
        fine_tuned_model_checkpoint: c.fine_tuned_model_checkpoint.clone(),
        step_number: c.step_number,
        metrics: serde_json::from_str(&c.metrics).unwrap_or_default(),
        fine_tuning_job_id: c.job_id.clone(),
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
