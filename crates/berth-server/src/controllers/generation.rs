//! What chat completions and completions share: finding the account and deployment, validating the
//! sampling fields, submitting to the engine, and turning engine events into one answer or an SSE stream.

use crate::extract::bearer_token;
use crate::{AppState, OpenAiApiError};
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_api::openai::{OneOrMany, SamplingFields, Usage};
use berth_control::AccountRow;
use berth_control::{ControlError, DeploymentKey, Route};
use berth_engine::{FinishReason, GenerateEvent, GenerateRequest, Progress, SamplingParams, TextModel, TokenLogprob};
use futures_util::stream::{self, SelectAll, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc::Receiver;
use tokio_stream::wrappers::ReceiverStream;

/// The optional `/accounts/{account}` in front of `/openai/...`: the account's own endpoint.
pub struct AccountPrefix(Option<String>);

impl AccountPrefix {
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AccountPrefix {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let path = parts.uri.path();
        Ok(AccountPrefix(
            path.strip_prefix("/accounts/")
                .and_then(|rest| rest.split('/').next())
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        ))
    }
}

/// The account a data-plane call acts on: the key's account (a key may do anything on its account), or
/// for a bearer token the one account it may do `action` on (or the one the path names).
pub fn resolve_account(
    state: &AppState,
    headers: &HeaderMap,
    prefix: Option<&str>,
    action: berth_control::Action,
) -> Result<AccountRow, OpenAiApiError> {
    let denied = || {
        OpenAiApiError::plain(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        )
    };
    if let Some(key) = headers.get("api-key") {
        let key = key.to_str().map_err(|_| denied())?;
        let account = state.authenticate_key(key).map_err(|_| denied())?;
        if prefix.is_some_and(|p| !p.eq_ignore_ascii_case(&account.key.account)) {
            return Err(denied());
        }
        return Ok(account);
    }
    match bearer_token(headers) {
        None => Err(OpenAiApiError::plain(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to missing subscription key. Make sure to include the subscription key in the 'api-key' header or a token in 'Authorization: Bearer'.",
        )),
        Some(Err(())) => Err(denied()),
        Some(Ok(token)) => {
            // The plain `OpenAI` client sends the API key as a bearer token (Azure's v1 accepts it).
            if let (Err(_), Ok(account)) = (state.authenticate_bearer(token), state.authenticate_key(token)) {
                if prefix.is_some_and(|p| !p.eq_ignore_ascii_case(&account.key.account)) {
                    return Err(denied());
                }
                return Ok(account);
            }
            let principal = state.authenticate_bearer(token).map_err(|e| match e {
                ControlError::Unauthenticated { message, .. } => OpenAiApiError::plain(StatusCode::UNAUTHORIZED, "401", message),
                other => other.into(),
            })?;
            let seen = state.accounts_for(&principal, prefix)?;
            let any_seen = !seen.is_empty();
            let mut accounts: Vec<AccountRow> = seen
                .into_iter()
                .filter(|a| state.authorize(&principal, &crate::render::account_resource_id(a), action).is_ok())
                .collect();
            match accounts.len() {
                1 => Ok(accounts.remove(0)),
                0 if any_seen => Err(OpenAiApiError::plain(
                    StatusCode::UNAUTHORIZED,
                    "PermissionDenied",
                    format!(
                        "The principal `{}` lacks the required data action `{}` to perform this operation.",
                        principal.object_id,
                        action.name()
                    ),
                )),
                0 => Err(denied()),
                _ => Err(OpenAiApiError::invalid(
                    "",
                    "AmbiguousAccount",
                    "This token can use several accounts: call the account's own endpoint, {server}/accounts/{account}/openai/...",
                )),
            }
        }
    }
}

/// An error answer of a known deployment carries its remaining limits too.
/// Ends a call that reached its deployment: an error carries the deployment's remaining limits, and
/// the answer is counted by outcome.
pub fn finish_call(
    state: &AppState,
    account: &AccountRow,
    deployment: &str,
    result: Result<Response, OpenAiApiError>,
) -> Result<Response, OpenAiApiError> {
    let resp = match result {
        Ok(resp) => resp,
        Err(mut e) => {
            if e.remaining.is_none() {
                e.remaining = state.rate_remaining(&account.key, deployment);
            }
            e.into_response()
        }
    };
    if let Some(labels) = state.deployment_labels(&account.key, deployment) {
        state.metrics().request(&labels, resp.status().as_u16());
    }
    Ok(resp)
}

/// A generation call's body: chat completions or completions. Both surfaces route it the same way.
pub trait GenerationCall: serde::de::DeserializeOwned + Send + 'static {
    /// The body's `model`: on the v1 surface, the deployment.
    fn model(&self) -> Option<&str>;

    /// Answers the call on its resolved deployment.
    fn answer(
        self,
        state: &AppState,
        account: &AccountRow,
        deployment: &str,
        route: &Route,
    ) -> impl std::future::Future<Output = Result<Response, OpenAiApiError>> + Send;
}

/// `POST /openai/deployments/{deployment}/{chat/completions|completions}`.
pub async fn on_deployment<R: GenerationCall>(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    axum::extract::Path(params): axum::extract::Path<std::collections::HashMap<String, String>>,
    crate::extract::OpenAiJson(req): crate::extract::OpenAiJson<R>,
) -> Result<Response, OpenAiApiError> {
    crate::extract::openai_api_version(&uri)?;
    let deployment = params.get("deployment").cloned().unwrap_or_default();
    serve(&state, &headers, &prefix, &deployment, req).await
}

/// `POST /openai/v1/{chat/completions|completions}`: the deployment is the body's `model`.
pub async fn on_v1<R: GenerationCall>(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    prefix: AccountPrefix,
    crate::extract::OpenAiJson(req): crate::extract::OpenAiJson<R>,
) -> Result<Response, OpenAiApiError> {
    crate::extract::openai_api_version(&uri)?;
    let deployment = deployment_of_model(req.model())?;
    serve(&state, &headers, &prefix, &deployment, req).await
}

async fn serve<R: GenerationCall>(
    state: &AppState,
    headers: &HeaderMap,
    prefix: &AccountPrefix,
    deployment: &str,
    req: R,
) -> Result<Response, OpenAiApiError> {
    let account = resolve_account(state, headers, prefix.name(), berth_control::Action::Inference)?;
    let route = route(state, &account, deployment)?;
    let answered = req.answer(state, &account, deployment, &route).await;
    finish_call(state, &account, deployment, answered)
}

/// On the v1 surface the deployment is named by the body's `model`.
pub fn deployment_of_model(model: Option<&str>) -> Result<String, OpenAiApiError> {
    match model.map(str::trim) {
        Some(m) if !m.is_empty() => Ok(m.to_owned()),
        _ => Err(OpenAiApiError::invalid(
            "model",
            "missing_required_parameter",
            "The v1 API names the deployment in 'model': you must provide a model parameter.",
        )),
    }
}

pub fn route(state: &AppState, account: &AccountRow, deployment: &str) -> Result<Route, OpenAiApiError> {
    if let Some(route) = state.host().route(&DeploymentKey::new(&account.key, deployment)) {
        return Ok(route);
    }
    if state.deployed_elsewhere_only(&account.key, deployment) {
        // Deployed through another replica and still loading here: come back, do not give up.
        return Err(OpenAiApiError::unavailable(
            "The deployment is still loading on this replica of the service. Please retry after 1 second.",
        ));
    }
    Err(OpenAiApiError::deployment_not_found())
}

/// Refuses the first field a body carries that the operation does not take: one Berth knows but does
/// not serve yet (`known`, with its reason), or one it does not know at all (a misspelling such as
/// `temprature`), as OpenAI answers "Unrecognized request argument supplied".
pub fn refuse_unknown_fields(
    unknown: &std::collections::BTreeMap<String, serde_json::Value>,
    known: &[(&str, &str)],
) -> Result<(), OpenAiApiError> {
    let Some(name) = unknown.keys().next() else { return Ok(()) };
    Err(match known.iter().find(|(k, _)| k == name) {
        Some((_, why)) => OpenAiApiError::invalid(name, "unsupported_parameter", *why),
        None => OpenAiApiError::invalid(
            name,
            "unknown_parameter",
            format!("Unrecognized request argument supplied: {name}"),
        ),
    })
}

/// Validated sampling settings of a request.
pub struct Sampling {
    pub params: SamplingParams,
    pub n: usize,
    pub stop: Vec<String>,
    pub max_tokens: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    /// The grammar every choice's answer is held to (structured outputs, required tool calls).
    pub constraint: Option<berth_text::Constraint>,
}

pub fn validate_sampling(
    f: &SamplingFields,
    vocab: usize,
    max_tokens: Option<i64>,
) -> Result<Sampling, OpenAiApiError> {
    let range = |param: &str, v: Option<f64>, lo: f64, hi: f64| -> Result<Option<f64>, OpenAiApiError> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(OpenAiApiError::invalid(
                param,
                "invalid_value",
                format!("{x} is not a valid value for '{param}': it must be between {lo} and {hi}."),
            )),
            other => Ok(other),
        }
    };
    let temperature = range("temperature", f.temperature, 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = range("top_p", f.top_p, 0.0, 1.0)?.unwrap_or(1.0);
    let presence = range("presence_penalty", f.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let frequency = range("frequency_penalty", f.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let n = f.n.unwrap_or(1);
    if !(1..=128).contains(&n) {
        return Err(OpenAiApiError::invalid(
            "n",
            "invalid_value",
            format!("{n} is not a valid value for 'n': it must be between 1 and 128."),
        ));
    }
    let stop = match &f.stop {
        None => vec![],
        Some(OneOrMany::One(s)) => vec![s.clone()],
        Some(OneOrMany::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(OpenAiApiError::invalid(
            "stop",
            "invalid_value",
            format!("'stop' takes at most {MAX_STOP_SEQUENCES} sequences; {} were given.", stop.len()),
        ));
    }
    // Stops are matched on the shared engine thread at every token: their length is bounded too.
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(OpenAiApiError::invalid(
            "stop",
            "invalid_value",
            format!("Each 'stop' sequence may have at most {MAX_STOP_BYTES} bytes; one has {}.", long.len()),
        ));
    }
    let max_tokens = match max_tokens {
        Some(m) if m < 1 => {
            return Err(OpenAiApiError::invalid(
                "max_tokens",
                "invalid_value",
                format!("{m} is not a valid value for 'max_tokens': it must be at least 1."),
            ))
        }
        Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        None => None,
    };
    let mut logit_bias = Vec::new();
    for (token, bias) in f.logit_bias.iter().flatten() {
        let id = token.parse::<u32>().ok().filter(|id| (*id as usize) < vocab).ok_or_else(|| {
            OpenAiApiError::invalid(
                "logit_bias",
                "invalid_value",
                format!("'{token}' in 'logit_bias' is not a token id of this model (0 to {}).", vocab - 1),
            )
        })?;
        if !(-100.0..=100.0).contains(bias) {
            return Err(OpenAiApiError::invalid(
                "logit_bias",
                "invalid_value",
                format!("The bias {bias} for token {token} must be between -100 and 100."),
            ));
        }
        logit_bias.push((id, *bias as f32));
    }
    Ok(Sampling {
        params: SamplingParams {
            temperature: temperature as f32,
            top_p: top_p as f32,
            seed: f.seed.map(|s| s as u64),
            presence_penalty: presence as f32,
            frequency_penalty: frequency as f32,
            logit_bias,
            logprobs: None,
        },
        n: n as usize,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        max_tokens,
        stream: f.stream.unwrap_or(false),
        include_usage: f.stream_options.as_ref().is_some_and(|o| o.include_usage),
        constraint: None,
    })
}

/// One choice being generated: its index, which prompt it answers, and its events.
pub struct Running {
    pub index: u32,
    pub prompt_index: usize,
    pub events: Receiver<GenerateEvent>,
}

/// OpenAI's limits on `stop`: 4 sequences; Berth also bounds each one's length.
const MAX_STOP_SEQUENCES: usize = 4;
const MAX_STOP_BYTES: usize = 256;

/// Completion tokens charged at admission for a request without `max_tokens` (corrected when it ends).
const DEFAULT_COMPLETION_ESTIMATE: usize = 256;

/// A call admitted and queued: its choices, and its charge.
pub struct Submitted {
    pub running: Vec<Running>,
    pub charge: Charge,
}

/// An admitted call's charge against its deployment's limits, and where its usage is metered. A call
/// that ends without an answer (the client went away, the engine failed after generating) is still
/// billed: dropping the charge meters what the engine computed for it.
pub struct Charge {
    ticket: Option<berth_control::Ticket>,
    /// What the deployment had left when the call was admitted.
    remaining: berth_control::Remaining,
    /// Provisioned deployments are charged prompt tokens less cached ones.
    provisioned: bool,
    control: std::sync::Arc<berth_control::Control>,
    account: berth_control::AccountKey,
    deployment: String,
    /// Each choice's prompt and what the engine computed for it.
    progress: Vec<(usize, Arc<Progress>)>,
    /// The deployment's metric labels.
    labels: Option<berth_control::DeploymentLabels>,
    admitted: std::time::Instant,
    first_text: Option<std::time::Instant>,
}

impl Charge {
    /// Corrects the admission charge to what the call used, and meters it with its latencies.
    fn finish(mut self, usage: &Usage) {
        if let Some(labels) = &self.labels {
            let first = self.first_text.map(|t| t - self.admitted);
            let per_token = match (self.first_text, usage.completion_tokens) {
                (Some(t), n) if n > 1 => Some(t.elapsed() / u32::try_from(n - 1).unwrap_or(u32::MAX)),
                _ => None,
            };
            self.control.metrics().latency(labels, first, per_token);
        }
        self.settle(usage);
    }

    /// Notes the first text of the answer (time to first token).
    fn text_arrived(&mut self) {
        self.first_text.get_or_insert_with(std::time::Instant::now);
    }

    fn settle(&mut self, usage: &Usage) {
        let Some(ticket) = self.ticket.take() else { return };
        let cached = usage.prompt_tokens_details.cached_tokens;
        let charged = if self.provisioned { usage.prompt_tokens.saturating_sub(cached) } else { usage.prompt_tokens };
        ticket.settle(charged.saturating_add(usage.completion_tokens), std::time::Instant::now());
        self.control.record_usage(
            &self.account,
            &self.deployment,
            usage.prompt_tokens,
            cached,
            usage.completion_tokens,
            self.first_text.map(|t| t - self.admitted),
        );
    }

    /// What the engine computed so far: each admitted prompt once, every choice's sampled tokens.
    fn computed(&self) -> Usage {
        let mut prompts = std::collections::BTreeMap::new();
        let mut completion = 0u64;
        for (prompt_index, p) in &self.progress {
            let (prompt, cached) = p.prompt_tokens();
            if prompt > 0 {
                prompts.entry(*prompt_index).or_insert((prompt as u64, cached as u64));
            }
            completion = completion.saturating_add(p.completion_tokens() as u64);
        }
        Usage::new(prompts.values().map(|v| v.0).sum(), completion, prompts.values().map(|v| v.1).sum())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            let usage = self.computed();
            self.settle(&usage);
        }
    }
}

impl Submitted {
    pub fn remaining(&self) -> berth_control::Remaining {
        self.charge.remaining
    }
}

/// Adds the remaining-limit headers to an answer.
pub fn with_limits(mut resp: Response, remaining: &berth_control::Remaining) -> Response {
    crate::headers::rate_limit_headers(resp.headers_mut(), remaining);
    resp
}

/// Checks every prompt against the context, admits the call against the deployment's limits (charged
/// at prompt tokens + `max_tokens` for each choice), and queues `n` choices for each prompt.
/// `cache_scope` partitions the prefix cache (callers of different subscriptions never share cached
/// prompts). `operation` names the call in a 429's message.
#[allow(clippy::too_many_arguments)]
pub fn submit(
    state: &AppState,
    account: &AccountRow,
    deployment: &str,
    operation: &str,
    route: &Route,
    prompts: &[Vec<u32>],
    sampling: &Sampling,
    param: &str,
    default_max: Option<usize>,
) -> Result<Submitted, OpenAiApiError> {
    let context = route.context_length();
    let mut plans = Vec::new();
    let mut estimate = 0u64;
    for prompt in prompts {
        if prompt.is_empty() {
            return Err(OpenAiApiError::invalid(param, "invalid_value", "The prompt is empty."));
        }
        // The whole KV pool bounds one sequence too: a prompt that leaves no room for one token in it
        // can never run, so it is refused here rather than queued.
        let kv_limit = route.kv_capacity_tokens();
        if prompt.len() >= kv_limit {
            return Err(OpenAiApiError::invalid(
                param,
                "context_length_exceeded",
                format!(
                    "This deployment can hold at most {kv_limit} tokens of prompt and completion in its cache, which is less than this model's maximum context length of {context} tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
                    prompt.len()
                ),
            ));
        }
        let room = context.saturating_sub(prompt.len());
        let max_tokens = sampling.max_tokens.or(default_max).unwrap_or(room);
        if room == 0 || prompt.len().saturating_add(max_tokens) > context {
            return Err(OpenAiApiError::invalid(
                param,
                "context_length_exceeded",
                format!(
                    "This model's maximum context length is {context} tokens. However, you requested {} tokens ({} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
                    prompt.len().saturating_add(max_tokens),
                    prompt.len()
                ),
            ));
        }
        let charged = sampling.max_tokens.or(default_max).unwrap_or(room.min(DEFAULT_COMPLETION_ESTIMATE));
        estimate += (prompt.len() + charged * sampling.n) as u64;
        plans.push(max_tokens);
    }
    let provisioned = state.is_provisioned_deployment(&account.key, deployment);
    // Deleted (through another replica) since its route was taken: as if it had never been routed.
    let admitted = state.admit(&account.key, deployment, estimate).map_err(|e| match e {
        berth_control::ControlError::NotFound { .. } => OpenAiApiError::deployment_not_found(),
        e => e.into(),
    })?;
    let ticket = match admitted {
        Ok(t) => t,
        Err(refusal) => {
            if let Some(labels) = state.deployment_labels(&account.key, deployment) {
                state.metrics().rate_limited(&labels);
            }
            state.record_rate_limited(&account.key, deployment);
            let secs = refusal.retry_after.as_secs_f64().ceil() as u64;
            let mut e = OpenAiApiError::plain(
                StatusCode::TOO_MANY_REQUESTS,
                "429",
                format!("Requests to the {operation} Operation of deployment '{deployment}' have been refused. {} Please retry after {secs} seconds.", refusal.message),
            );
            e.retry_after_ms = Some(refusal.retry_after.as_millis().max(1) as u64);
            e.remaining = Some(refusal.remaining);
            return Err(e);
        }
    };
    let mut charge = Charge {
        remaining: ticket.remaining,
        ticket: Some(ticket),
        provisioned,
        control: state.0.clone(),
        account: account.key.clone(),
        deployment: deployment.to_owned(),
        progress: Vec::new(),
        labels: state.deployment_labels(&account.key, deployment),
        admitted: std::time::Instant::now(),
        first_text: None,
    };
    let mut out = Vec::new();
    for (p, (prompt, max_tokens)) in prompts.iter().zip(plans).enumerate() {
        for j in 0..sampling.n {
            let mut params = sampling.params.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(j as u64));
            // A log-probability event precedes each token's text: twice the room then.
            let per_token = if params.logprobs.is_some() { 2 } else { 1 };
            let (tx, rx) = tokio::sync::mpsc::channel(max_tokens.saturating_mul(per_token).saturating_add(4));
            let request = GenerateRequest {
                prompt: prompt.clone(),
                adapter: route.adapter.clone(),
                sampling: params,
                max_tokens,
                stop: sampling.stop.clone(),
                cache_scope: account.key.subscription_id.clone(),
                ignore_eos: false,
                reserved: provisioned,
                constraint: sampling.constraint.clone(),
            };
            // A refusal here drops the charge: the choices already queued are billed for what they
            // computed before their channels closed.
            let progress = route.submit(request, tx).map_err(OpenAiApiError::from)?;
            charge.progress.push((p, progress));
            out.push(Running { index: (p * sampling.n + j) as u32, prompt_index: p, events: rx });
        }
    }
    Ok(Submitted { running: out, charge })
}

/// A finished choice.
pub struct Choice {
    pub index: u32,
    pub prompt_index: usize,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Each generated token's log-probability, when asked for.
    pub logprobs: Vec<TokenLogprob>,
}

/// A token's text as OpenAI reports it in `logprobs`: its piece, and the piece's bytes.
fn piece(text: &TextModel, id: u32) -> (String, Vec<u8>) {
    let s = text.decode(&[id]);
    let bytes = s.as_bytes().to_vec();
    (s, bytes)
}

/// Chat completions' `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}`.
pub fn chat_logprobs(text: &TextModel, tokens: &[TokenLogprob]) -> serde_json::Value {
    let entry = |id: u32, lp: f32| {
        let (token, bytes) = piece(text, id);
        serde_json::json!({ "token": token, "logprob": lp, "bytes": bytes })
    };
    let content: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(t.token, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
            e
        })
        .collect();
    serde_json::json!({ "content": content, "refusal": null })
}

/// Legacy completions' `logprobs`: parallel lists of tokens, their log-probabilities, the top
/// alternatives as `{token: logprob}`, and each token's offset in the text (after `offset`).
pub fn completion_logprobs(text: &TextModel, tokens: &[TokenLogprob], offset: usize) -> serde_json::Value {
    let mut at = offset;
    let (mut pieces, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for t in tokens {
        let (token, _) = piece(text, t.token);
        offsets.push(at);
        at += token.chars().count();
        pieces.push(token);
        lps.push(t.logprob);
        let top: serde_json::Map<String, serde_json::Value> =
            t.top.iter().map(|&(id, lp)| (piece(text, id).0, serde_json::json!(lp))).collect();
        tops.push(serde_json::Value::Object(top));
    }
    serde_json::json!({ "tokens": pieces, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets })
}

/// Waits for every choice; usage counts each prompt once. The call's charge is corrected to its usage.
pub async fn collect(submitted: Submitted) -> Result<(Vec<Choice>, Usage), OpenAiApiError> {
    let Submitted { running, mut charge } = submitted;
    let mut choices = Vec::with_capacity(running.len());
    let mut prompt_tokens = std::collections::BTreeMap::new();
    let mut completion_tokens = 0;
    let mut cached = std::collections::BTreeMap::new();
    for mut r in running {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        loop {
            match r.events.recv().await {
                Some(GenerateEvent::Text(t)) => {
                    charge.text_arrived();
                    text.push_str(&t)
                }
                Some(GenerateEvent::Logprob(lp)) => logprobs.push(lp),
                Some(GenerateEvent::Finished { reason, prompt_tokens: p, completion_tokens: c, cached_tokens }) => {
                    prompt_tokens.insert(r.prompt_index, p as u64);
                    cached.entry(r.prompt_index).or_insert(cached_tokens as u64);
                    completion_tokens += c as u64;
                    choices.push(Choice {
                        index: r.index,
                        prompt_index: r.prompt_index,
                        text,
                        finish_reason: reason,
                        logprobs,
                    });
                    break;
                }
                Some(GenerateEvent::Failed(e)) => return Err(OpenAiApiError::from(e)),
                None => return Err(OpenAiApiError::internal("the engine dropped a request")),
            }
        }
    }
    let usage = Usage::new(prompt_tokens.values().sum(), completion_tokens, cached.values().sum());
    charge.finish(&usage);
    Ok((choices, usage))
}

/// How one surface writes its stream frames.
pub trait ChunkFormat: Send + 'static {
    /// Frames before any text (prompt filter results, the assistant role).
    fn opening(&self, indices: &[u32]) -> Vec<String>;
    /// A text delta, with the log-probabilities of the tokens it completes (empty unless asked for);
    /// `None` while the format holds the text back (a tool call being written).
    fn text(&mut self, index: u32, text: String, logprobs: Vec<TokenLogprob>) -> Option<String>;
    /// The choice's last frames: what was held back, then its finish reason.
    fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<String>;
    fn usage(&self, usage: Usage) -> String;
}

struct StreamState<F> {
    events: SelectAll<stream::BoxStream<'static, (u32, usize, GenerateEvent)>>,
    format: F,
    include_usage: bool,
    prompt_tokens: std::collections::BTreeMap<usize, u64>,
    cached_tokens: std::collections::BTreeMap<usize, u64>,
    completion_tokens: u64,
    opening: Vec<String>,
    done: bool,
    /// Finished when the stream ends; dropped with it if the client goes away (then it settles to, and meters, what was computed).
    charge: Option<Charge>,
    /// Per choice, log-probabilities whose tokens' text has not been sent yet.
    pending_logprobs: std::collections::HashMap<u32, Vec<TokenLogprob>>,
}

fn frame(json: String) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// An SSE response: `data: {chunk}` frames, then (optionally) usage, then `data: [DONE]`. Dropping the
/// body (the client went away) drops the event receivers, which frees the sequences in the engine.
pub fn sse<F: ChunkFormat>(submitted: Submitted, format: F, include_usage: bool) -> Response {
    let remaining = submitted.remaining();
    let Submitted { running, charge } = submitted;
    let indices: Vec<u32> = running.iter().map(|r| r.index).collect();
    let mut events = SelectAll::new();
    for r in running {
        let (index, prompt) = (r.index, r.prompt_index);
        events.push(ReceiverStream::new(r.events).map(move |e| (index, prompt, e)).boxed());
    }
    let opening = format.opening(&indices);
    let state = StreamState {
        events,
        format,
        include_usage,
        prompt_tokens: Default::default(),
        completion_tokens: 0,
        cached_tokens: Default::default(),
        opening,
        done: false,
        charge: Some(charge),
        pending_logprobs: Default::default(),
    };
    let body = stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if !st.opening.is_empty() {
            let frames: String = st.opening.drain(..).map(|f| format!("data: {f}\n\n")).collect();
            return Some((Ok::<_, Infallible>(Bytes::from(frames)), st));
        }
        loop {
            match st.events.next().await {
                Some((index, _, GenerateEvent::Text(t))) => {
                    if let Some(charge) = st.charge.as_mut() {
                        charge.text_arrived();
                    }
                    let logprobs = st.pending_logprobs.remove(&index).unwrap_or_default();
                    match st.format.text(index, t, logprobs) {
                        Some(chunk) => return Some((Ok(frame(chunk)), st)),
                        None => continue,
                    }
                }
                Some((index, _, GenerateEvent::Logprob(lp))) => {
                    // Held until the text its token completes (a character may span tokens).
                    st.pending_logprobs.entry(index).or_default().push(lp);
                    continue;
                }
                Some((
                    index,
                    prompt,
                    GenerateEvent::Finished { reason, prompt_tokens, completion_tokens, cached_tokens },
                )) => {
                    st.prompt_tokens.insert(prompt, prompt_tokens as u64);
                    st.cached_tokens.entry(prompt).or_insert(cached_tokens as u64);
                    st.completion_tokens += completion_tokens as u64;
                    let mut frames = String::new();
                    if let Some(held) = st.pending_logprobs.remove(&index).filter(|h| !h.is_empty()) {
                        if let Some(chunk) = st.format.text(index, String::new(), held) {
                            frames.push_str(&format!("data: {chunk}\n\n"));
                        }
                    }
                    for chunk in st.format.finish(index, reason) {
                        frames.push_str(&format!("data: {chunk}\n\n"));
                    }
                    return Some((Ok(Bytes::from(frames)), st));
                }
                Some((_, _, GenerateEvent::Failed(e))) => {
                    st.done = true;
                    let err = OpenAiApiError::from(e);
                    let body =
                        serde_json::to_string(&berth_api::openai::OpenAiError { error: err.body }).unwrap_or_default();
                    return Some((Ok(frame(body)), st));
                }
                None => {
                    st.done = true;
                    let mut tail = String::new();
                    let usage = Usage::new(
                        st.prompt_tokens.values().sum(),
                        st.completion_tokens,
                        st.cached_tokens.values().sum(),
                    );
                    if let Some(charge) = st.charge.take() {
                        charge.finish(&usage);
                    }
                    if st.include_usage {
                        tail.push_str(&format!("data: {}\n\n", st.format.usage(usage)));
                    }
                    tail.push_str("data: [DONE]\n\n");
                    return Some((Ok(Bytes::from(tail)), st));
                }
            }
        }
    });
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    crate::headers::rate_limit_headers(h, &remaining);
    resp
}

/// Tokenising and template rendering are CPU work: off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OpenAiApiError> + Send + 'static,
) -> Result<T, OpenAiApiError> {
    tokio::task::spawn_blocking(f).await.map_err(OpenAiApiError::internal)?
}

pub fn completion_id(prefix: &str) -> String {
    format!("{prefix}-{}", berth_control::new_hex_id())
}

pub fn fingerprint(route: &Route) -> String {
    route.fingerprint()
}
