//! Forwarding one generation to a pool: Berth has already rendered and tokenised the prompt, so vLLM
//! gets the token ids (the answer is the one Berth's engine computes from the same ids) and streams
//! back text, which becomes the engine's events.

use crate::endpoint::InFlight;
use crate::pool::{describe, error_message, Pool, PoolAdapter};
use berth_engine::{Failure, FinishReason, GenerateEvent, GenerateRequest, Progress, TextModel, TokenLogprob};
use futures_util::StreamExt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

/// Where a deployment on a pool sends its calls.
#[derive(Clone)]
pub struct PoolTarget {
    pub pool: Arc<Pool>,
    /// The base model's tokenizer and chat template, from its Hugging Face directory.
    pub text: Arc<TextModel>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub architecture: String,
    /// vLLM's name for the base model.
    pub served_model: String,
    pub adapter: Option<PoolAdapter>,
}

impl std::fmt::Debug for PoolTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTarget")
            .field("pool", &self.pool.name())
            .field("served_model", &self.served_model)
            .field("adapter", &self.adapter)
            .finish()
    }
}

/// How one attempt on one endpoint ended, short of an answer.
enum Attempt {
    /// Nothing was sent to the client yet: try again (elsewhere when `avoid`).
    Retry {
        why: String,
        avoid: bool,
    },
    Fail(Failure),
    ClientGone,
}

impl PoolTarget {
    /// vLLM's `model` for this deployment's calls.
    pub fn vllm_model(&self) -> &str {
        self.adapter.as_ref().map_or(&self.served_model, |a| &a.name)
    }

    /// Starts forwarding `request`; its events arrive on `events` as the engine's would. Refuses at
    /// once when no endpoint is up, so that the caller answers 503 before any stream begins.
    pub fn submit(&self, request: GenerateRequest, events: Sender<GenerateEvent>) -> Result<Arc<Progress>, Failure> {
        if request.prompt.is_empty() {
            return Err(Failure::InvalidRequest("the prompt is empty".into()));
        }
        if !self.pool.any_healthy() {
            return Err(Failure::Unavailable(format!("no endpoint of engine pool '{}' is up", self.pool.name())));
        }
        let progress = Arc::new(Progress::default());
        let target = self.clone();
        let p = progress.clone();
        self.pool.runtime.spawn(async move { target.forward(request, events, p).await });
        Ok(progress)
    }

    /// vLLM's completions body for a tokenised request.
    pub(crate) fn body(&self, r: &GenerateRequest) -> serde_json::Value {
        let s = &r.sampling;
        let mut body = serde_json::json!({
            "model": self.vllm_model(),
            "prompt": r.prompt,
            "max_tokens": r.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "stop": r.stop,
            // The chat template's end of turn ends an answer as it does in Berth's engine.
            "stop_token_ids": self.text.end_of_generation(),
            "ignore_eos": r.ignore_eos,
            "skip_special_tokens": true,
            "stream": true,
            "stream_options": { "include_usage": true },
            // vLLM's prefix cache is shared by every request it serves: the salt keeps one tenant's
            // cached prefixes from answering (or timing) another's, as Berth's engine scopes its own.
            "cache_salt": salt(&r.cache_scope),
        });
        if let Some(seed) = s.seed {
            // vLLM takes a signed 64-bit seed.
            body["seed"] = serde_json::json!(seed as i64);
        }
        if !s.logit_bias.is_empty() {
            let bias: serde_json::Map<String, serde_json::Value> =
                s.logit_bias.iter().map(|(id, b)| (id.to_string(), serde_json::json!(b))).collect();
            body["logit_bias"] = serde_json::Value::Object(bias);
        }
        if let Some(k) = s.logprobs {
            body["logprobs"] = serde_json::json!(k);
            body["return_tokens_as_token_ids"] = serde_json::json!(true);
        }
        if let Some(c) = &r.constraint {
            body["structured_outputs"] = structured_outputs(c.grammar());
        }
        body
    }

    async fn forward(self, request: GenerateRequest, events: Sender<GenerateEvent>, progress: Arc<Progress>) {
        let body = self.body(&request);
        let affinity = affinity_key(&request.prompt, self.vllm_model());
        let mut avoid: Vec<String> = Vec::new();
        let mut last = String::new();
        // One attempt, and one more when the first failed before any token was sent.
        for _ in 0..2 {
            let endpoint = match self.pool.pick(self.adapter.as_ref(), affinity, &avoid).await {
                Ok(e) => e,
                Err(f) => {
                    let f = match f {
                        Failure::Unavailable(why) if !last.is_empty() => Failure::Unavailable(format!("{why}; {last}")),
                        f => f,
                    };
                    let _ = events.send(GenerateEvent::Failed(f)).await;
                    return;
                }
            };
            let _counted = InFlight::new(&endpoint);
            match self.stream_once(&endpoint.url, &body, &request, &events, &progress).await {
                Ok(()) => return,
                Err(Attempt::ClientGone) => return,
                Err(Attempt::Fail(f)) => {
                    let _ = events.send(GenerateEvent::Failed(f)).await;
                    return;
                }
                Err(Attempt::Retry { why, avoid: leave }) => {
                    tracing::warn!(pool = %self.pool.name(), endpoint = %endpoint.url, reason = %why, "call to an engine pool endpoint failed before its first token");
                    if leave {
                        endpoint.mark_down(&why);
                        avoid.push(endpoint.url.clone());
                    } else if let Some(a) = &self.adapter {
                        endpoint.note_adapter(&a.name, false);
                    }
                    last = format!("endpoint {}: {why}", endpoint.url);
                }
            }
        }
        let _ = events.send(GenerateEvent::Failed(Failure::Unavailable(last))).await;
    }

    async fn stream_once(
        &self,
        url: &str,
        body: &serde_json::Value,
        request: &GenerateRequest,
        events: &Sender<GenerateEvent>,
        progress: &Progress,
    ) -> Result<(), Attempt> {
        let sent = self.pool.authorized(self.pool.client.post(format!("{url}/v1/completions"))).json(body).send().await;
        let resp = sent.map_err(|e| Attempt::Retry { why: describe(&e), avoid: true })?;
        let status = resp.status();
        if !status.is_success() {
            let message = error_message(&resp.text().await.unwrap_or_default());
            return Err(match status.as_u16() {
                // The adapter is gone from this endpoint (it restarted between two probes): load it again.
                404 if self.adapter.is_some() => Attempt::Retry { why: message, avoid: false },
                400 | 413 | 422 => {
                    Attempt::Fail(Failure::InvalidRequest(format!("The engine pool refused the request: {message}")))
                }
                _ => Attempt::Retry { why: format!("answered {status}: {message}"), avoid: true },
            });
        }
        let mut stream = resp.bytes_stream();
        let mut reader = Sse::default();
        let mut state = StreamState { prompt: request.prompt.len(), ..StreamState::default() };
        let want_logprobs = request.sampling.logprobs.is_some();
        loop {
            let chunk = match stream.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) if state.sent_text => {
                    return Err(Attempt::Fail(Failure::Internal(format!(
                        "the stream from {url} broke: {}",
                        describe(&e)
                    ))))
                }
                Some(Err(e)) => return Err(Attempt::Retry { why: describe(&e), avoid: true }),
                None => break,
            };
            for data in reader.push(&chunk) {
                if data == "[DONE]" {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(&data)
                    .map_err(|e| Attempt::Fail(Failure::Internal(format!("unreadable chunk from {url}: {e}"))))?;
                for event in state.apply(&value, want_logprobs).map_err(Attempt::Fail)? {
                    // The end-of-turn token that stopped the answer is not part of it (Berth's engine
                    // does not report it either).
                    if matches!(&event, GenerateEvent::Logprob(lp) if self.text.end_of_generation().contains(&lp.token))
                    {
                        continue;
                    }
                    let is_text = matches!(event, GenerateEvent::Text(_));
                    if events.send(event).await.is_err() {
                        return Err(Attempt::ClientGone);
                    }
                    state.sent_text |= is_text;
                }
                if state.started {
                    progress.admitted(state.prompt, state.cached);
                    progress.sampled(state.completion);
                }
            }
        }
        let Some(reason) = state.finish else {
            let why = format!("the stream from {url} ended before the answer did");
            return Err(if state.sent_text {
                Attempt::Fail(Failure::Internal(why))
            } else {
                Attempt::Retry { why, avoid: true }
            });
        };
        progress.admitted(state.prompt, state.cached);
        progress.sampled(state.completion);
        let finished = GenerateEvent::Finished {
            reason,
            prompt_tokens: state.prompt,
            completion_tokens: state.completion,
            cached_tokens: state.cached,
        };
        events.send(finished).await.map_err(|_| Attempt::ClientGone)
    }
}

/// What a stream has said so far.
#[derive(Default)]
pub(crate) struct StreamState {
    pub started: bool,
    pub sent_text: bool,
    pub prompt: usize,
    pub cached: usize,
    pub completion: usize,
    pub finish: Option<FinishReason>,
}

impl StreamState {
    /// One chunk of vLLM's completions stream, as engine events.
    pub(crate) fn apply(
        &mut self,
        chunk: &serde_json::Value,
        want_logprobs: bool,
    ) -> Result<Vec<GenerateEvent>, Failure> {
        if let Some(err) = chunk.get("error") {
            let message = err.get("message").and_then(|m| m.as_str()).unwrap_or("unknown error");
            return Err(Failure::Internal(format!("the engine pool failed the request: {message}")));
        }
        let mut out = Vec::new();
        for choice in chunk.get("choices").and_then(|c| c.as_array()).into_iter().flatten() {
            self.started = true;
            let logprobs = choice.get("logprobs").filter(|l| !l.is_null());
            match logprobs.and_then(|l| l.get("tokens")).and_then(|t| t.as_array()) {
                Some(tokens) => {
                    self.completion += tokens.len();
                    if want_logprobs {
                        out.extend(
                            token_logprobs(logprobs.unwrap_or(&serde_json::Value::Null))?
                                .into_iter()
                                .map(GenerateEvent::Logprob),
                        );
                    }
                }
                // Without log-probabilities a chunk is one step of one token; usage corrects it.
                None => self.completion += 1,
            }
            if let Some(text) = choice.get("text").and_then(|t| t.as_str()).filter(|t| !t.is_empty()) {
                out.push(GenerateEvent::Text(text.to_owned()));
            }
            match choice.get("finish_reason").and_then(|f| f.as_str()) {
                None => {}
                Some("stop") => self.finish = Some(FinishReason::Stop),
                Some("length") => self.finish = Some(FinishReason::Length),
                Some(other) => return Err(Failure::Internal(format!("the engine pool ended the request: {other}"))),
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let n = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_u64()).map(|x| x as usize);
            if let Some(p) = n(usage.get("prompt_tokens")) {
                self.prompt = p;
            }
            if let Some(c) = n(usage.get("completion_tokens")) {
                self.completion = c;
            }
            self.cached = n(usage.pointer("/prompt_tokens_details/cached_tokens")).unwrap_or(0);
            self.started = true;
        }
        Ok(out)
    }
}

/// Legacy completions' logprobs with `return_tokens_as_token_ids`: tokens read `token_id:N`.
fn token_logprobs(lp: &serde_json::Value) -> Result<Vec<TokenLogprob>, Failure> {
    let bad = || Failure::Internal("the engine pool's log-probabilities are not in the expected shape".into());
    let id = |s: &str| s.strip_prefix("token_id:").and_then(|n| n.parse::<u32>().ok());
    let tokens = lp.get("tokens").and_then(|t| t.as_array()).ok_or_else(bad)?;
    let lps = lp.get("token_logprobs").and_then(|t| t.as_array()).ok_or_else(bad)?;
    let tops = lp.get("top_logprobs").and_then(|t| t.as_array());
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let token = t.as_str().and_then(id).ok_or_else(bad)?;
        let logprob = lps.get(i).and_then(|l| l.as_f64()).unwrap_or(f64::NEG_INFINITY) as f32;
        let mut top: Vec<(u32, f32)> = tops
            .and_then(|t| t.get(i))
            .and_then(|m| m.as_object())
            .map(|m| m.iter().filter_map(|(k, v)| Some((id(k)?, v.as_f64()? as f32))).collect())
            .unwrap_or_default();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.push(TokenLogprob { token, logprob, top });
    }
    Ok(out)
}

/// Server-sent events: `data:` payloads, whole events only, across chunk boundaries.
#[derive(Default)]
pub(crate) struct Sse {
    buf: Vec<u8>,
}

impl Sse {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n");
            let Some(end) = end else { break };
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    out.push(data.trim().to_owned());
                }
            }
        }
        out
    }
}

/// The prompt's first tokens and the model: calls that share them share vLLM's prefix cache.
fn affinity_key(prompt: &[u32], model: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    prompt[..prompt.len().min(32)].hash(&mut h);
    model.hash(&mut h);
    h.finish()
}

fn salt(scope: &str) -> String {
    let mut h = std::hash::DefaultHasher::new();
    "berth-cache-scope".hash(&mut h);
    scope.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// vLLM's `structured_outputs` for a grammar Berth compiled itself. Always a Lark grammar, a JSON Schema
/// embedded with `%json`: xgrammar cannot read that, so vLLM hands it to its llguidance backend, which
/// honours the schema's layout options (no free whitespace) as Berth's engine does; vLLM's own
/// `disable_any_whitespace` is a server setting, not a request's.
fn structured_outputs(grammar: &berth_text::Grammar) -> serde_json::Value {
    let lark = match grammar {
        berth_text::Grammar::JsonSchema(schema) => {
            format!("start: %json {}\n", berth_text::with_compact_layout(schema))
        }
        berth_text::Grammar::Lark(lark) => lark.clone(),
    };
    serde_json::json!({ "grammar": lark })
}
