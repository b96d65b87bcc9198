//! `POST /openai/deployments/{deployment}/chat/completions`.

use super::chat_tools::{self, ToolPlan};
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
    ("data_sources", "'data_sources' (Azure OpenAI On Your Data) is not supported by Berth."),
    ("audio", "Audio output is not supported by this deployment's model."),
    ("modalities", "Output modalities other than text are not supported by this deployment's model."),
    ("prediction", "Predicted outputs are not supported by this deployment's model."),
    ("reasoning_effort", "'reasoning_effort' applies to reasoning models only; this deployment's model is not one."),
    ("store", "Stored completions ('store': true) are not supported: Berth keeps no answers."),
    ("metadata", "'metadata' tags stored completions, and Berth keeps no answers ('store' is not supported)."),
];

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];
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
            None if m.role == "assistant" && (m.tool_calls.is_some() || m.function_call.is_some()) => String::new(),
            None => {
                return Err(OpenAiApiError::invalid(
                    &format!("messages[{i}].content"),
                    "invalid_value",
                    format!("messages[{i}] has no 'content'."),
                ))
            }
        };
        let param = format!("messages[{i}]");
        let mut message = match m.role.as_str() {
            "developer" => ChatMessage::new("system", content),
            // The legacy function result: a tool result named by its function.
            "function" => ChatMessage::new("tool", content),
            role => ChatMessage::new(role, content),
        };
        if m.role == "assistant" {
            message.tool_calls = chat_tools::history_calls(&param, m.tool_calls.as_ref(), m.function_call.as_ref())?;
        } else if m.tool_calls.is_some() || m.function_call.is_some() {
            return Err(OpenAiApiError::invalid(
                &format!("{param}.tool_calls"),
                "invalid_value",
                format!("Only assistant messages carry tool calls; {param} is a '{}' message.", m.role),
            ));
        }
        if m.role == "tool" {
            let Some(id) = &m.tool_call_id else {
                return Err(OpenAiApiError::invalid(
                    &format!("{param}.tool_call_id"),
                    "invalid_value",
                    format!("Missing required parameter: '{param}.tool_call_id'."),
                ));
            };
            message.tool_call_id = Some(id.clone());
        }
        out.push(message);
    }
    Ok(out)
}

fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), OpenAiApiError> {
    let mut unknown = req.unknown.clone();
    unknown.remove("functions");
    unknown.remove("function_call");
    // Not storing is what Berth does anyway.
    if unknown.get("store").is_some_and(|v| v.is_null() || v == &serde_json::Value::Bool(false)) {
        unknown.remove("store");
    }
    generation::refuse_unknown_fields(&unknown, CHAT_FIELDS_NOT_YET_SERVED)?;
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
        let plan = chat_tools::plan(&req)?;
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
        let (tools, grammar) = (plan.tools.clone(), plan.grammar.clone());
        let schema_param = if plan.names.is_empty() { "response_format" } else { "tools" };
        let (prompt, constraint) = blocking(move || {
            let rendered = text.render_prompt(&msgs, &tools, true).map_err(|e| {
                OpenAiApiError::invalid(
                    "messages",
                    "invalid_value",
                    format!("The messages cannot be formatted for this model: {e}"),
                )
            })?;
            let constraint = grammar
                .map(|g| {
                    text.constrain(&g).map_err(|e| {
                        OpenAiApiError::invalid(
                            schema_param,
                            "invalid_value",
                            format!("Invalid schema for '{schema_param}': {e}"),
                        )
                    })
                })
                .transpose()?;
            Ok((text.encode(&rendered).map_err(OpenAiApiError::internal)?, constraint))
        })
        .await?;
        sampling.constraint = constraint;
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
            let format = ChatFormat {
                id,
                created,
                model: route.model_name.clone(),
                fingerprint,
                text: text_model,
                logprobs,
                plan,
                written: Default::default(),
            };
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
                .map(|c| {
                    let answer = chat_tools::answer(&plan, c.text);
                    ChatChoice {
                        index: c.index,
                        finish_reason: Some(answer.finish_reason.unwrap_or(c.finish_reason.as_str()).into()),
                        message: ChatMessageOut {
                            role: "assistant".into(),
                            content: answer.content,
                            tool_calls: answer.tool_calls,
                            function_call: answer.function_call,
                        },
                        logprobs: logprobs.then(|| generation::chat_logprobs(&text_model, &c.logprobs)),
                        content_filter_results: BTreeMap::new(),
                    }
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
    plan: ToolPlan,
    /// Per choice, when tools were offered: the text so far, and how much of it went out as content.
    written: std::collections::HashMap<u32, (String, usize)>,
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

    fn choice(index: u32, delta: ChatDelta, finish: Option<&str>) -> ChatChunkChoice {
        ChatChunkChoice {
            index,
            delta,
            finish_reason: finish.map(str::to_owned),
            logprobs: None,
            content_filter_results: BTreeMap::new(),
        }
    }
}

impl ChunkFormat for ChatFormat {
    fn opening(&self, indices: &[u32]) -> Vec<String> {
        let mut frames = vec![self.chunk(vec![], None, true)];
        for &i in indices {
            let delta =
                ChatDelta { role: Some("assistant".into()), content: Some(String::new()), ..Default::default() };
            frames.push(self.chunk(vec![Self::choice(i, delta, None)], None, false));
        }
        frames
    }

    fn text(&mut self, index: u32, text: String, logprobs: Vec<berth_engine::TokenLogprob>) -> Option<String> {
        let text = if self.plan.names.is_empty() {
            text
        } else {
            // A call may be starting: content goes out only up to where a `<tool_call>` could begin.
            let (all, sent) = self.written.entry(index).or_default();
            all.push_str(&text);
            let upto = chat_tools::releasable(all).max(*sent);
            let out = all[*sent..upto].to_owned();
            *sent = upto;
            if out.is_empty() && logprobs.is_empty() {
                return None;
            }
            out
        };
        let mut choice = Self::choice(index, ChatDelta { content: Some(text), ..Default::default() }, None);
        if self.logprobs {
            choice.logprobs = Some(generation::chat_logprobs(&self.text, &logprobs));
        }
        Some(self.chunk(vec![choice], None, false))
    }

    fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<String> {
        let mut frames = Vec::new();
        let mut finish = reason.as_str();
        if let Some((all, sent)) = self.written.remove(&index) {
            let answer = chat_tools::answer(&self.plan, all.clone());
            if let Some(calls) = &answer.tool_calls {
                // Each call as OpenAI streams it: id, type and name first, then the arguments.
                for (k, call) in calls.iter().enumerate() {
                    let head = serde_json::json!([{
                        "index": k, "id": call["id"], "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }]);
                    let args =
                        serde_json::json!([{"index": k, "function": {"arguments": call["function"]["arguments"]}}]);
                    for delta in [head, args] {
                        let d = ChatDelta { tool_calls: serde_json::from_value(delta).ok(), ..Default::default() };
                        frames.push(self.chunk(vec![Self::choice(index, d, None)], None, false));
                    }
                }
            } else if let Some(call) = &answer.function_call {
                let d = ChatDelta { function_call: Some(call.clone()), ..Default::default() };
                frames.push(self.chunk(vec![Self::choice(index, d, None)], None, false));
            } else if sent < all.len() {
                let d = ChatDelta { content: Some(all[sent..].to_owned()), ..Default::default() };
                frames.push(self.chunk(vec![Self::choice(index, d, None)], None, false));
            }
            finish = answer.finish_reason.unwrap_or(finish);
        }
        frames.push(self.chunk(vec![Self::choice(index, ChatDelta::default(), Some(finish))], None, false));
        frames
    }

    fn usage(&self, usage: Usage) -> String {
        self.chunk(vec![], Some(usage), false)
    }
}
