//! Berth's own calls: base models, importing fine-tunes, minting tokens. Bearer-authenticated like ARM.

use super::AccountPath;
use crate::extract::{arm_api_version, ArmJson, ArmPrincipal};
use crate::{AppState, ArmApiError};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use berth_api::admin::{
    AccessToken, BaseModel, BaseModelAdd, EnginePool, EnginePoolAdd, EnginePoolEndpoint, ImportedModel, ModelImport,
};
use berth_api::arm::List;
use berth_control::BaseModelRow;
use berth_control::ModelSource;

fn base_model(b: BaseModelRow) -> BaseModel {
    BaseModel {
        name: b.name,
        path: b.path,
        format: b.format,
        architecture: b.architecture,
        context_length: b.context_length,
        created_at: b.created_at,
        engine_pool: b.engine_pool,
        served_model: b.served_model,
    }
}

fn engine_pool(p: berth_control::EnginePoolInfo) -> EnginePool {
    EnginePool {
        name: p.row.name,
        kind: p.row.kind,
        endpoints: p
            .status
            .endpoints
            .into_iter()
            .map(|e| EnginePoolEndpoint {
                url: e.url,
                health: e.health,
                error: e.error,
                models: e.models,
                adapters: e.adapters,
                running: e.running,
                waiting: e.waiting,
                kv_cache_usage: e.kv_cache_usage,
                in_flight: e.in_flight,
                served: e.served,
            })
            .collect(),
        base_models: p.base_models,
        adapters: p.status.adapters,
        store_path: p.row.store_path,
        api_key_set: p.row.api_key.is_some(),
        created_at: p.row.created_at,
    }
}

pub async fn list_engine_pools(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
) -> Result<Json<List<EnginePool>>, ArmApiError> {
    state.operator(&principal)?;
    let value = state.engine_pools()?.into_iter().map(engine_pool).collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn show_engine_pool(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    Path(name): Path<String>,
) -> Result<Json<EnginePool>, ArmApiError> {
    state.operator(&principal)?;
    Ok(Json(engine_pool(state.engine_pool(&name)?)))
}

pub async fn add_engine_pool(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    ArmJson(body): ArmJson<EnginePoolAdd>,
) -> Result<(StatusCode, Json<EnginePool>), ArmApiError> {
    state.operator(&principal)?;
    let info = state
        .add_engine_pool(berth_control::EnginePoolInput {
            name: body.name,
            kind: body.kind,
            endpoints: body.endpoints,
            api_key: body.api_key,
            store_path: body.store_path,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(engine_pool(info))))
}

pub async fn remove_engine_pool(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    Path(name): Path<String>,
) -> Result<StatusCode, ArmApiError> {
    state.operator(&principal)?;
    Ok(if state.remove_engine_pool(&name)? { StatusCode::OK } else { StatusCode::NO_CONTENT })
}

pub async fn list_base_models(
    State(state): State<AppState>,
    ArmPrincipal(_principal): ArmPrincipal,
) -> Result<Json<List<BaseModel>>, ArmApiError> {
    let value = state.base_models()?.into_iter().map(base_model).collect();
    Ok(Json(List { value, next_link: None }))
}

pub async fn add_base_model(
    State(state): State<AppState>,
    ArmPrincipal(_principal): ArmPrincipal,
    ArmJson(body): ArmJson<BaseModelAdd>,
) -> Result<(StatusCode, Json<BaseModel>), ArmApiError> {
    state.operator(&_principal)?;
    let row = state
        .add_base_model_on(&body.name, &body.path, body.engine_pool.as_deref(), body.served_model.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(base_model(row))))
}

pub async fn import_model(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
    ArmJson(body): ArmJson<ModelImport>,
) -> Result<(StatusCode, Json<ImportedModel>), ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    // The body names a directory on the server: only the operator, who owns that filesystem, may
    // have it read (and only the operator sees what reading it says). Tenants' own adapters and
    // weights come by upload, not by server path.
    state.operator(&principal)?;
    let source = match (body.adapter, body.weights) {
        (Some(a), None) => ModelSource::Adapter(a.into()),
        (None, Some(w)) => ModelSource::Weights(w.into()),
        _ => {
            return Err(ArmApiError::bad_request(
                "InvalidRequestContent",
                "Give exactly one of 'adapter' (a PEFT LoRA directory) and 'weights' (a full-weights directory).",
            ))
        }
    };
    let row = state.import_model(&path.key(), &body.base, source).await?;
    Ok((StatusCode::CREATED, Json(imported(row))))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenRequest {
    tenant: Option<String>,
    principal: Option<String>,
}

/// A fresh signed token (`berth token`): the caller's own, or (operator only) another principal's.
pub async fn issue_token(
    State(state): State<AppState>,
    ArmPrincipal(principal): ArmPrincipal,
    body: axum::body::Bytes,
) -> Result<Json<AccessToken>, ArmApiError> {
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ArmApiError::bad_request(
                "InvalidRequestContent",
                format!("Send {{\"tenant\": ..., \"principal\": ...}} or nothing: {e}"),
            )
        })?
    };
    let target = req.principal.map(|object_id| berth_control::Principal {
        tenant_id: req.tenant.clone().unwrap_or_else(|| principal.tenant_id.clone()),
        object_id,
    });
    let row = state.issue_token(&principal, target.as_ref())?;
    let holder = berth_control::Principal { tenant_id: row.tenant_id.clone(), object_id: row.principal.clone() };
    let subscription = state.subscriptions_for(&holder)?.into_iter().next().map(|s| s.id).unwrap_or_default();
    Ok(Json(AccessToken {
        access_token: row.token,
        expires_on: row.expires_at,
        tenant: row.tenant_id,
        subscription,
        token_type: "Bearer".into(),
    }))
}

/// The most one upload of model files may carry: an adapter is megabytes; full weights of the models
/// Berth serves on a CPU are a few gigabytes.
pub const MAX_MODEL_UPLOAD_BYTES: usize = 16 << 30;
const MAX_ADAPTER_UPLOAD_BYTES: u64 = 2 << 30;
const MAX_UPLOAD_FILES: usize = 64;

/// A file name an upload may use: a plain name, never a path, a hidden file or an odd byte.
fn valid_upload_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `POST .../accounts/{a}/models/upload` (multipart): a tenant imports a fine-tune by sending its
/// files. Fields: `base` (the base model), `kind` (`adapter` or `weights`), then one `file` part per
/// file (`adapter_config.json` and `adapter_model.safetensors`; or `config.json` and the
/// safetensors). Everything is checked before anything is recorded; nothing of the server's
/// filesystem is named in an answer.
pub async fn upload_model(
    State(state): State<AppState>,
    uri: Uri,
    ArmPrincipal(principal): ArmPrincipal,
    Path(path): Path<AccountPath>,
    multipart: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<ImportedModel>), ArmApiError> {
    arm_api_version(&uri)?;
    state.authorize(&principal, &path.scope(), berth_control::Action::Write)?;
    let invalid = |message: String| {
        let mut e = ArmApiError::bad_request("InvalidModelUpload", message);
        e.target = Some("file".into());
        e
    };
    let mut multipart = multipart.map_err(|e| {
        invalid(format!("The upload must be multipart/form-data with the fields 'base', 'kind' and 'file': {e}"))
    })?;
    let dir = state.upload_dir()?;
    let received = receive_files(&mut multipart, &dir, &invalid).await;
    let (base, kind) = match received {
        Ok(fields) => fields,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
    };
    let source = match kind.as_str() {
        "adapter" => ModelSource::Adapter(dir),
        _ => ModelSource::Weights(dir),
    };
    let row = state.import_uploaded_model(&path.key(), &base, source).await?;
    Ok((StatusCode::CREATED, Json(imported(row))))
}

/// Streams the file parts into `dir` under their checked names; returns `base` and `kind`.
async fn receive_files(
    multipart: &mut axum::extract::Multipart,
    dir: &std::path::Path,
    invalid: &impl Fn(String) -> ArmApiError,
) -> Result<(String, String), ArmApiError> {
    use tokio::io::AsyncWriteExt;
    let (mut base, mut kind, mut names, mut total) = (None, None, Vec::<String>::new(), 0u64);
    while let Some(mut field) =
        multipart.next_field().await.map_err(|e| invalid(format!("The multipart body cannot be read: {e}")))?
    {
        match field.name().unwrap_or_default() {
            "base" => base = Some(field.text().await.map_err(|e| invalid(format!("'base' cannot be read: {e}")))?),
            "kind" => kind = Some(field.text().await.map_err(|e| invalid(format!("'kind' cannot be read: {e}")))?),
            "file" => {
                let name = field.file_name().unwrap_or_default().to_owned();
                if !valid_upload_name(&name) {
                    return Err(invalid(format!("The file name '{name}' is not allowed: use a plain name of letters, digits, '.', '_' and '-' (no path), as the model's own files are named.")));
                }
                if names.contains(&name) {
                    return Err(invalid(format!("The file '{name}' was sent twice.")));
                }
                if names.len() >= MAX_UPLOAD_FILES {
                    return Err(invalid(format!("An upload holds at most {MAX_UPLOAD_FILES} files.")));
                }
                let limit = if kind.as_deref() == Some("adapter") {
                    MAX_ADAPTER_UPLOAD_BYTES
                } else {
                    MAX_MODEL_UPLOAD_BYTES as u64
                };
                let mut out = tokio::fs::File::create(dir.join(&name))
                    .await
                    .map_err(|e| ArmApiError::from(berth_control::ControlError::Internal(e.to_string())))?;
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| invalid(format!("The file '{name}' cannot be read: {e}")))?
                {
                    total = total.saturating_add(chunk.len() as u64);
                    if total > limit {
                        return Err(invalid(format!(
                            "The upload is larger than the {} MiB allowed for this kind of model.",
                            limit >> 20
                        )));
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ArmApiError::from(berth_control::ControlError::Internal(e.to_string())))?;
                }
                names.push(name);
            }
            other => {
                return Err(invalid(format!(
                    "The field '{other}' is not part of a model upload; send 'base', 'kind' and 'file' parts."
                )))
            }
        }
    }
    let base = base.ok_or_else(|| invalid("The field 'base' (the base model) is required.".into()))?;
    let kind = kind.ok_or_else(|| invalid("The field 'kind' ('adapter' or 'weights') is required.".into()))?;
    if !matches!(kind.as_str(), "adapter" | "weights") {
        return Err(invalid(format!("'kind' must be 'adapter' or 'weights', not '{kind}'.")));
    }
    if names.is_empty() {
        return Err(invalid("The upload has no 'file' parts.".into()));
    }
    Ok((base, kind))
}

fn imported(row: berth_control::ModelRow) -> ImportedModel {
    ImportedModel {
        id: row.id,
        base_model: row.base_model,
        kind: row.kind,
        created_at: row.created_at,
        account: row.account.account,
        resource_group: row.account.resource_group,
    }
}
