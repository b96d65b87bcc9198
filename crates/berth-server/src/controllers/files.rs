//! `/openai/files`: upload (multipart), list, get, delete and content.

use super::generation::{resolve_account, AccountPrefix};
use crate::extract::openai_api_version;
use crate::{render, AppState, OpenAiApiError};
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::fine_tuning::{Deleted, FileObject, Page};
use std::collections::HashMap;

fn path_id(params: &HashMap<String, String>, key: &str) -> String {
    params.get(key).cloned().unwrap_or_default()
}

fn multipart_error(message: impl Into<String>) -> OpenAiApiError {
    OpenAiApiError::invalid("file", "invalidPayload", message)
}

pub async fn upload_file(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<FileObject>), OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let mut multipart = multipart.map_err(|e| {
        multipart_error(format!("The upload must be multipart/form-data with the fields 'purpose' and 'file': {e}"))
    })?;
    let (mut purpose, mut file) = (None, None);
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(format!("The multipart body cannot be read: {e}")))?;
        let Some(field) = field else { break };
        match field.name() {
            Some("purpose") => {
                purpose = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| multipart_error(format!("The 'purpose' field cannot be read: {e}")))?,
                )
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.jsonl").to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_error(format!("The 'file' field cannot be read: {e}")))?;
                file = Some((name, bytes));
            }
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| {
        OpenAiApiError::invalid("purpose", "invalidPayload", "The 'purpose' field is required; use 'fine-tune'.")
    })?;
    let (name, bytes) = file.ok_or_else(|| multipart_error("The 'file' field is required."))?;
    let row = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.upload_file(&account.key, &name, &purpose, &bytes))
            .await
            .map_err(OpenAiApiError::internal)??
    };
    Ok((StatusCode::CREATED, Json(render::file(&row))))
}

pub async fn list_files(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
) -> Result<Json<Page<FileObject>>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    Ok(Json(Page::new(state.files(&account.key)?.iter().map(render::file).collect(), false)))
}

pub async fn get_file(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<FileObject>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    Ok(Json(render::file(&state.file(&account.key, &path_id(&params, "file"))?)))
}

pub async fn delete_file(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Deleted>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let row = state.delete_file(&account.key, &path_id(&params, "file"))?;
    Ok(Json(Deleted { id: row.id, object: "file".into(), deleted: true }))
}

pub async fn file_content(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let (row, bytes) = state.file_content(&account.key, &path_id(&params, "file"))?;
    let kind = if row.filename.ends_with(".csv") { "text/csv" } else { "application/octet-stream" };
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}
