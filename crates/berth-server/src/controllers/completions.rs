//! `POST /openai/deployments/{deployment}/completions` (legacy completions).

use super::generation::{self, blocking, ChunkFormat, GenerationCall};
use crate::{AppState, OpenAiApiError};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::openai::{Completion, CompletionChoice, CompletionRequest, Prompt, PromptFilterResult, Usage};
use berth_control::{AccountRow, Route};
use berth_engine::FinishReason;
use std::collections::BTreeMap;

/// Legacy completions stop after 16 tokens unless told otherwise.
const DEFAULT_MAX_TOKENS: usize = 16;

impl GenerationCall for CompletionRequest {
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
        generation::refuse_unknown_fields(&req.unknown, &[])?;
        if let Some(n) = req.logprobs {
            if !(0..=5).contains(&n) {
                return Err(OpenAiApiError::invalid(
                    "logprobs",
                    "invalid_value",
                    format!("{n} is not a valid value for 'logprobs': it must be between 0 and 5."),
                ));
            }
            if req.echo == Some(true) {
                return Err(OpenAiApiError::invalid(
                    "logprobs",
                    "unsupported_parameter",
                    "'logprobs' with 'echo' (the prompt's log-probabilities) is not supported; leave one of them out.",
                ));
            }
        }
        if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(OpenAiApiError::invalid(
                "suffix",
                "unsupported_parameter",
                "'suffix' (insertion) is not supported by this model.",
            ));
        }
        let text = route.text().clone();
        let mut sampling = generation::validate_sampling(&req.sampling, text.vocab_size(), req.sampling.max_tokens)?;
        sampling.params.logprobs = req.logprobs.map(|n| usize::try_from(n).unwrap_or(0));
        if let Some(best_of) = req.best_of {
            if best_of != sampling.n as i64 {
                return Err(OpenAiApiError::invalid(
                    "best_of",
                    "unsupported_parameter",
                    "'best_of' other than 'n' is not supported.",
                ));
            }
        }
        let prompt = req
            .prompt
            .clone()
            .ok_or_else(|| OpenAiApiError::invalid("prompt", "missing_required_parameter", "'prompt' is required."))?;
        // A token the embedding has no row for would fail the whole batch in the engine: refuse it here.
        let vocab = text.vocab_size().min(route.vocab_size());
        let prompts: Vec<Vec<u32>> = blocking(move || match prompt {
            Prompt::Text(s) => Ok(vec![text.encode(&s).map_err(OpenAiApiError::internal)?]),
            Prompt::Texts(v) => v.iter().map(|s| text.encode(s).map_err(OpenAiApiError::internal)).collect(),
            Prompt::Tokens(ids) => Ok(vec![ids]),
            Prompt::TokenLists(lists) => Ok(lists),
        })
        .await?;
        if prompts.is_empty() {
            return Err(OpenAiApiError::invalid("prompt", "invalid_value", "'prompt' must not be an empty list."));
        }
        if let Some(bad) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(OpenAiApiError::invalid(
                "prompt",
                "invalid_value",
                format!("Token id {bad} is outside this model's vocabulary of {vocab}."),
            ));
        }
        let echo: Vec<String> = if req.echo == Some(true) {
            let text = route.text().clone();
            prompts.iter().map(|p| text.decode(p)).collect()
        } else {
            vec![String::new(); prompts.len()]
        };
        let submitted = generation::submit(
            state,
            account,
            deployment,
            "Completions_Create",
            route,
            &prompts,
            &sampling,
            "prompt",
            Some(DEFAULT_MAX_TOKENS),
        )?;
        let remaining = submitted.remaining();
        let id = generation::completion_id("cmpl");
        let created = berth_control::unix_now();
        let format = CompletionFormat {
            id,
            created,
            model: route.model_name.clone(),
            fingerprint: generation::fingerprint(route),
            echo,
            n: sampling.n,
            text: route.text().clone(),
            logprobs: req.logprobs.is_some(),
            offsets: Default::default(),
        };
        if sampling.stream {
            return Ok(generation::sse(submitted, format, sampling.include_usage));
        }
        let (choices, usage) = generation::collect(submitted).await?;
        let choices = choices
            .into_iter()
            .map(|c| CompletionChoice {
                index: c.index,
                logprobs: format.logprobs.then(|| generation::completion_logprobs(&format.text, &c.logprobs, 0)),
                text: format!("{}{}", format.echo[c.prompt_index], c.text),
                finish_reason: Some(c.finish_reason.as_str().into()),
                content_filter_results: BTreeMap::new(),
            })
            .collect();
        Ok(generation::with_limits(Json(format.completion(choices, Some(usage), true)).into_response(), &remaining))
    }
}

struct CompletionFormat {
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    /// Per prompt: its text when `echo` is on, else empty.
    echo: Vec<String>,
    n: usize,
    text: std::sync::Arc<berth_engine::TextModel>,
    /// Whether the request asked for `logprobs`.
    logprobs: bool,
    /// Per streamed choice, the characters sent so far (`text_offset` counts from the answer's start).
    offsets: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
}

impl CompletionFormat {
    fn completion(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>, filters: bool) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            prompt_filter_results: if filters {
                (0..self.echo.len() as u32)
                    .map(|i| PromptFilterResult { prompt_index: i, content_filter_results: BTreeMap::new() })
                    .collect()
            } else {
                vec![]
            },
            choices,
            usage,
        }
    }

    fn chunk(&self, index: u32, text: String, finish: Option<FinishReason>) -> String {
        let choice = CompletionChoice {
            index,
            text,
            finish_reason: finish.map(|f| f.as_str().into()),
            logprobs: None,
            content_filter_results: BTreeMap::new(),
        };
        serde_json::to_string(&self.completion(vec![choice], None, false)).unwrap_or_default()
    }
}

impl ChunkFormat for CompletionFormat {
    fn opening(&self, indices: &[u32]) -> Vec<String> {
        indices
            .iter()
            .filter_map(|&i| {
                let echo = &self.echo[i as usize / self.n.max(1)];
                (!echo.is_empty()).then(|| self.chunk(i, echo.clone(), None))
            })
            .collect()
    }

    fn text(&mut self, index: u32, text: String, logprobs: Vec<berth_engine::TokenLogprob>) -> Option<String> {
        if !self.logprobs {
            return Some(self.chunk(index, text, None));
        }
        let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        let at = offsets.entry(index).or_default();
        let scored = generation::completion_logprobs(&self.text, &logprobs, *at);
        *at += text.chars().count();
        drop(offsets);
        let choice = CompletionChoice {
            index,
            text,
            finish_reason: None,
            logprobs: Some(scored),
            content_filter_results: BTreeMap::new(),
        };
        Some(serde_json::to_string(&self.completion(vec![choice], None, false)).unwrap_or_default())
    }

    fn finish(&mut self, index: u32, reason: FinishReason) -> Vec<String> {
        vec![self.chunk(index, String::new(), Some(reason))]
    }

    fn usage(&self, usage: Usage) -> String {
        serde_json::to_string(&self.completion(vec![], Some(usage), false)).unwrap_or_default()
    }
}
