//! `POST /openai/deployments/{deployment}/chat/completions`.

use super::generation::{self, blocking, ChunkFormat, GenerationCall};
use crate::{AppState, OpenAiApiError};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::openai::{
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatMessageOut,
    Content, PromptFilterResult, Usage,
};
use berth_control::{AccountRow, Route};
use berth_engine::{ChatMessage, FinishReason};
use std::collections::BTreeMap;

/// Fields of Azure OpenAI's chat completions that Berth does not serve yet: refused by name.
const CHAT_FIELDS_NOT_YET_SERVED: &[(&str, &str)] = &[
    ("functions", "Functions (legacy function calling) are not supported by this deployment's model."),
    ("function_call", "'function_call' (legacy function calling) is not supported by this deployment's model."),
    ("data_sources", "'data_sources' (Azure OpenAI On Your Data) is not supported by Berth."),
    ("audio", "Audio output is not supported by this deployment's model."),
    ("modalities", "Output modalities other than text are not supported by this deployment's model."),
    ("prediction", "Predicted outputs are not supported by this deployment's model."),
    ("reasoning_effort", "'reasoning_effort' applies to reasoning models only; this deployment's model is not one."),
];

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];
/// Most messages one request may carry (the context bounds their tokens; this bounds the work of
/// rendering and tokenising a request that could never fit).
const MAX_MESSAGES: usize = 2048;

/// Validates the messages and flattens their content to text.
fn messages(req: &ChatCompletionRequest) -> Result<Vec<ChatMessage>, OpenAiApiError> {
    if req.messages.is_empty() {
        return Err(OpenAiApiError::invalid(
            "messages",
            "invalid_value",
            "'messages' must contain at least one message.",
        ));
    }
    if req.messages.len() > MAX_MESSAGES {
        return Err(OpenAiApiError::invalid(
            "messages",
            "array_above_max_length",
            format!("'messages' has {} messages; at most {MAX_MESSAGES} are allowed.", req.messages.len()),
        ));
    }
    let mut out = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(OpenAiApiError::invalid(
                &format!("messages[{i}].role"),
                "invalid_value",
                format!("'{}' is not a valid role for messages[{i}]; use one of {}.", m.role, ROLES.join(", ")),
            ));
        }
        let content = match &m.content {
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(OpenAiApiError::invalid(
                                &format!("messages[{i}].content[{j}]"),
                                "invalid_value",
                                format!("Content parts of type '{kind}' are not supported by this model; only 'text' parts with a 'text' field are."),
                            ))
                        }
                    }
                }
                text
            }
            None if m.role == "assistant" && m.tool_calls.is_some() => {
                return Err(OpenAiApiError::invalid(
                    &format!("messages[{i}].tool_calls"),
                    "invalid_value",
                    "Tool calls are not supported by this model.",
                ))
            }
            None => {
                return Err(OpenAiApiError::invalid(
                    &format!("messages[{i}].content"),
                    "invalid_value",
                    format!("messages[{i}] has no 'content'."),
                ))
            }
        };
        let role = if m.role == "developer" { "system" } else { m.role.as_str() };
        out.push(ChatMessage::new(role, content));
    }
    Ok(out)
}

fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), OpenAiApiError> {
    generation::refuse_unknown_fields(&req.unknown, CHAT_FIELDS_NOT_YET_SERVED)?;
    if req.tool_choice.as_ref().is_some_and(|c| c.as_str() != Some("none")) {
        return Err(OpenAiApiError::invalid(
            "tool_choice",
            "unsupported_parameter",
            "'tool_choice' is not supported by this deployment's model: it has no tools.",
        ));
    }
    if req.parallel_tool_calls.is_some() {
        return Err(OpenAiApiError::invalid(
            "parallel_tool_calls",
            "unsupported_parameter",
            "'parallel_tool_calls' is not supported by this deployment's model: it has no tools.",
        ));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(OpenAiApiError::invalid(
            "tools",
            "unsupported_parameter",
            "Tools (function calling) are not supported by this deployment's model.",
        ));
    }
    if let Some(n) = req.top_logprobs {
        if !(0..=20).contains(&n) {
            return Err(OpenAiApiError::invalid(
                "top_logprobs",
                "invalid_value",
                format!("{n} is not a valid value for 'top_logprobs': it must be between 0 and 20."),
            ));
        }
        if req.logprobs != Some(true) {
            return Err(OpenAiApiError::invalid(
                "top_logprobs",
                "invalid_value",
                "'logprobs' must be set to true when 'top_logprobs' is given.",
            ));
        }
    }
    if let Some(format) = &req.response_format {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(OpenAiApiError::invalid(
                "response_format",
                "unsupported_parameter",
                "Only response_format {\"type\": \"text\"} is supported; JSON mode and structured outputs are not.",
            ));
        }
    }
    Ok(())
}

impl GenerationCall for ChatCompletionRequest {
    fn model(&self) -> Option<&str> {
        self.sampling.model.as_deref()
    }

    async fn answer(
        self,
        state: &AppState,
        account: &AccountRow,
        deployment: &str,
        route: &Route,
    ) -> Result<Response, OpenAiApiError> {
        let req = self;
        refuse_unsupported(&req)?;
        let msgs = messages(&req)?;
        let text = route.text().clone();
        let mut sampling = generation::validate_sampling(
            &req.sampling,
            text.vocab_size(),
            req.max_completion_tokens.or(req.sampling.max_tokens),
        )?;
        let logprobs = req.logprobs == Some(true);
        if logprobs {
            sampling.params.logprobs = Some(usize::try_from(req.top_logprobs.unwrap_or(0)).unwrap_or(0));
        }
        let text_model = text.clone();
        let prompt = blocking(move || {
            let rendered = text.render_chat(&msgs).map_err(|e| {
                OpenAiApiError::invalid(
                    "messages",
                    "invalid_value",
                    format!("The messages cannot be formatted for this model: {e}"),
                )
            })?;
            text.encode(&rendered).map_err(OpenAiApiError::internal)
        })
        .await?;
        let submitted = generation::submit(
            state,
            account,
            deployment,
            "ChatCompletions_Create",
            route,
            &[prompt],
            &sampling,
            "messages",
            None,
        )?;
        let remaining = submitted.remaining();
        let id = generation::completion_id("chatcmpl");
        let created = berth_control::unix_now();
        let fingerprint = generation::fingerprint(route);
        if sampling.stream {
            let format =
                ChatFormat { id, created, model: route.model_name.clone(), fingerprint, text: text_model, logprobs };
            return Ok(generation::sse(submitted, format, sampling.include_usage));
        }
        let (choices, usage) = generation::collect(submitted).await?;
        let resp = Json(ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model: route.model_name.clone(),
            system_fingerprint: fingerprint,
            prompt_filter_results: vec![PromptFilterResult {
                prompt_index: 0,
                content_filter_results: BTreeMap::new(),
            }],
            choices: choices
                .into_iter()
                .map(|c| ChatChoice {
                    index: c.index,
                    finish_reason: Some(c.finish_reason.as_str().into()),
                    message: ChatMessageOut { role: "assistant".into(), content: c.text },
                    logprobs: logprobs.then(|| generation::chat_logprobs(&text_model, &c.logprobs)),
                    content_filter_results: BTreeMap::new(),
                })
                .collect(),
            usage,
        })
        .into_response();
        Ok(generation::with_limits(resp, &remaining))
    }
}

struct ChatFormat {
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    text: std::sync::Arc<berth_engine::TextModel>,
    /// Whether the request asked for `logprobs`.
    logprobs: bool,
}

impl ChatFormat {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>, filters: bool) -> String {
        serde_json::to_string(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            prompt_filter_results: if filters {
                vec![PromptFilterResult { prompt_index: 0, content_filter_results: BTreeMap::new() }]
            } else {
                vec![]
            },
            choices,
            usage,
        })
        .unwrap_or_default()
    }

    fn choice(index: u32, delta: ChatDelta, finish: Option<FinishReason>) -> ChatChunkChoice {
        ChatChunkChoice {
            index,
            delta,
            finish_reason: finish.map(|f| f.as_str().into()),
            logprobs: None,
            content_filter_results: BTreeMap::new(),
        }
    }
}

impl ChunkFormat for ChatFormat {
    fn opening(&self, indices: &[u32]) -> Vec<String> {
        let mut frames = vec![self.chunk(vec![], None, true)];
        for &i in indices {
            let delta = ChatDelta { role: Some("assistant".into()), content: Some(String::new()) };
            frames.push(self.chunk(vec![Self::choice(i, delta, None)], None, false));
        }
        frames
    }

    fn text(&self, index: u32, text: String, logprobs: Vec<berth_engine::TokenLogprob>) -> String {
        let mut choice = Self::choice(index, ChatDelta { role: None, content: Some(text) }, None);
        if self.logprobs {
            choice.logprobs = Some(generation::chat_logprobs(&self.text, &logprobs));
        }
        self.chunk(vec![choice], None, false)
    }

    fn finish(&self, index: u32, reason: FinishReason) -> String {
        self.chunk(vec![Self::choice(index, ChatDelta::default(), Some(reason))], None, false)
    }

    fn usage(&self, usage: Usage) -> String {
        self.chunk(vec![], Some(usage), false)
    }
}
