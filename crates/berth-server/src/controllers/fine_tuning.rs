//! `/openai/fine_tuning/jobs`: create, list, get, cancel, events and checkpoints.

use super::generation::{resolve_account, AccountPrefix};
use crate::extract::{openai_api_version, OpenAiJson};
use crate::{render, AppState, OpenAiApiError};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use berth_api::fine_tuning::{HyperValue, Job, JobCheckpoint, JobCreateRequest, JobEvent, Page};
use berth_control::JobCreateInput;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    after: Option<String>,
    limit: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, OpenAiApiError> {
        match &self.limit {
            None => Ok(20),
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => Ok(n),
                _ => Err(OpenAiApiError::invalid(
                    "limit",
                    "invalid_value",
                    format!("'{l}' is not a valid limit: use a number from 1 to 100."),
                )),
            },
        }
    }
}

fn job_id(params: &HashMap<String, String>) -> String {
    params.get("job").cloned().unwrap_or_default()
}

/// A number, a numeric string, or `"auto"` (`None`).
fn hyper<T: std::str::FromStr>(value: &HyperValue, name: &str) -> Result<Option<T>, OpenAiApiError> {
    let bad = || {
        OpenAiApiError::invalid(
            &format!("hyperparameters.{name}"),
            "invalid_value",
            format!(
                "'{}' is not a valid value for {name}: use a number or \"auto\".",
                value.as_ref().map(Value::to_string).unwrap_or_default()
            ),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
        Some(Value::Number(n)) => n.to_string().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

pub async fn create_job(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    OpenAiJson(req): OpenAiJson<JobCreateRequest>,
) -> Result<(StatusCode, Json<Job>), OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let kind = req.method.as_ref().and_then(|m| m.kind.clone()).unwrap_or_else(|| "supervised".into());
    let section = match kind.as_str() {
        "supervised" => req.method.as_ref().and_then(|m| m.supervised.as_ref()),
        "dpo" => req.method.as_ref().and_then(|m| m.dpo.as_ref()),
        other => {
            return Err(OpenAiApiError::invalid(
                "method.type",
                "invalid_value",
                format!("The method '{other}' is not supported; use 'supervised' or 'dpo'."),
            ))
        }
    };
    let hp = section.and_then(|s| s.hyperparameters.clone()).or(req.hyperparameters.clone()).unwrap_or_default();
    let input = JobCreateInput {
        model: req.model,
        training_file: req.training_file,
        validation_file: req.validation_file,
        n_epochs: hyper(&hp.n_epochs, "n_epochs")?,
        batch_size: hyper(&hp.batch_size, "batch_size")?,
        learning_rate_multiplier: hyper(&hp.learning_rate_multiplier, "learning_rate_multiplier")?,
        suffix: req.suffix,
        seed: req.seed,
        beta: hyper(&hp.beta, "beta")?,
        method: Some(kind),
    };
    let job = state.create_job(&account.key, input)?;
    Ok((StatusCode::CREATED, Json(render::job(&job))))
}

pub async fn list_jobs(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Job>>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let limit = q.limit()?;
    let mut jobs = state.jobs(&account.key, q.after.as_deref(), limit + 1)?;
    let has_more = jobs.len() > limit;
    jobs.truncate(limit);
    Ok(Json(Page::new(jobs.iter().map(render::job).collect(), has_more)))
}

pub async fn get_job(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Job>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    Ok(Json(render::job(&state.job(&account.key, &job_id(&params))?)))
}

/// `POST .../fine_tuning/jobs/{job}/{cancel|pause|resume}`: cancel; Azure's pause (the job stops at its
/// next pass and keeps its checkpoints); resume (queued again, it continues from its last checkpoint).
pub async fn job_action(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Job>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let id = job_id(&params);
    let job = match params.get("action").map(String::as_str) {
        Some("cancel") => state.cancel_job(&account.key, &id)?,
        Some("pause") => state.pause_job(&account.key, &id)?,
        Some("resume") => state.resume_job(&account.key, &id)?,
        _ => return Err(OpenAiApiError::plain(StatusCode::NOT_FOUND, "404", "Resource not found")),
    };
    Ok(Json(render::job(&job)))
}

pub async fn list_events(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<JobEvent>>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let limit = q.limit()?;
    let mut events = state.job_events(&account.key, &job_id(&params), q.after.as_deref(), limit + 1)?;
    let has_more = events.len() > limit;
    events.truncate(limit);
    Ok(Json(Page::new(events.iter().map(render::job_event).collect(), has_more)))
}

pub async fn list_checkpoints(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Page<JobCheckpoint>>, OpenAiApiError> {
    openai_api_version(&uri)?;
    let account = resolve_account(&state, &headers, prefix.name(), berth_control::Action::Authoring)?;
    let checkpoints = state.job_checkpoints(&account.key, &job_id(&params))?;
    Ok(Json(Page::new(checkpoints.iter().map(render::checkpoint).collect(), false)))
}
