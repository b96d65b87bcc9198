use crate::lora::AdapterId;
use berth_text::Constraint;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit for each time it was already generated.
    pub frequency_penalty: f32,
    /// Added to the logits of these tokens before sampling.
    pub logit_bias: Vec<(u32, f32)>,
    /// Report each sampled token's log-probability and this many most likely alternatives (`None`:
    /// report nothing). Taken from the logits the sampler used: after the bias and penalties,
    /// before temperature and top-p, as OpenAI defines them.
    pub logprobs: Option<usize>,
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

/// A validated generation request: prompt already tokenised and within the context length.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub adapter: Option<AdapterId>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Requests share cached prompt prefixes only within one scope (with the same adapter): the
    /// caller puts there whatever must never see another's cache entries, e.g. a tenant's subscription.
    pub cache_scope: String,
    /// Keep generating past end-of-sequence tokens until `max_tokens` (benchmarks; vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// Served from the batch share reserved for provisioned traffic: admitted ahead of ordinary
    /// requests, into slots they cannot take, never refused for a full queue, preempted last.
    pub reserved: bool,
    /// A grammar every sampled token must keep the answer within (structured outputs, required tool
    /// calls), compiled by the caller so that the engine thread only masks and advances it.
    pub constraint: Option<Constraint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence or a stop sequence.
    Stop,
    /// `max_tokens` or the context length.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A sampled token's log-probability, and the most likely tokens at its position with theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What the engine says about one request, in order: text pieces (each sampled token's `Logprob`
/// before the text it adds, when asked for), then exactly one `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateEvent {
    Text(String),
    Logprob(TokenLogprob),
    Finished { reason: FinishReason, prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize },
    Failed(Failure),
}

/// What the engine has computed for one request so far, readable while it runs and after the
/// request's channel is gone (a client that disconnected, a failure): what was computed is billed.
#[derive(Debug, Default)]
pub struct Progress {
    prompt_tokens: AtomicUsize,
    cached_tokens: AtomicUsize,
    completion_tokens: AtomicUsize,
}

impl Progress {
    /// Prompt tokens of a request admitted into the batch (0 while it waits), and how many of them
    /// came from the prefix cache.
    pub fn prompt_tokens(&self) -> (usize, usize) {
        (self.prompt_tokens.load(Ordering::Acquire), self.cached_tokens.load(Ordering::Acquire))
    }

    /// Tokens sampled so far.
    pub fn completion_tokens(&self) -> usize {
        self.completion_tokens.load(Ordering::Acquire)
    }

    /// Records a request's admission (also for engines outside this crate, such as a remote pool).
    pub fn admitted(&self, prompt: usize, cached: usize) {
        self.cached_tokens.store(cached, Ordering::Release);
        self.prompt_tokens.store(prompt, Ordering::Release);
    }

    pub fn sampled(&self, completion: usize) {
        self.completion_tokens.store(completion, Ordering::Release);
    }
}

/// Why the engine gave up on a request. The servers map each kind to their plane's error once
/// (a client's mistake is never answered as an internal error), so nothing is matched by its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The engine's queue is full; come back later.
    #[error("the request queue is full: {0}")]
    QueueFull(String),
    /// The prompt can never fit in the KV cache, whatever else is running.
    #[error("the prompt needs {needed_tokens} tokens of KV cache; the cache holds {capacity_tokens}")]
    PromptExceedsCache { needed_tokens: usize, capacity_tokens: usize },
    /// Prompt and answer together outgrew the whole KV cache while generating.
    #[error("the sequence outgrew the KV cache of {capacity_tokens} tokens")]
    OutgrewCache { capacity_tokens: usize },
    /// The request's adapter was removed, or cannot be loaded.
    #[error("adapter {id} is unavailable: {reason}")]
    AdapterUnavailable { id: String, reason: String },
    /// The request is malformed in a way validation should have caught (an empty prompt).
    #[error("{0}")]
    InvalidRequest(String),
    /// The engine is stopping (a deployment deleted or changed, or the server shutting down).
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// No engine can take the request now (every server of a remote pool is down); come back later.
    #[error("no engine is available: {0}")]
    Unavailable(String),
    /// A fault of the engine itself (an error or panic inside a step).
    #[error("inference failed: {0}")]
    Internal(String),
}
