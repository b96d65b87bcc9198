//! Prometheus metrics of one replica, named `berth_*`. Label values are bounded: accounts, deployments
//! and models that exist, engines by model file name, fixed outcome and kind words; never a request
//! id, a key or anything a client wrote.
//!
//! Request outcomes, tokens, latencies, refusals and provisioning times are counted as they happen;
//! engine state (queue, batch, KV blocks, prefix-cache hits, adapter loads and evictions) and
//! fine-tuning job states are read when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A deployment's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub account: String,
    pub deployment: String,
    /// The model it serves: a base model, or a fine-tune (an adapter) of one.
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    account: String,
    deployment: String,
    model: String,
    /// `ok`, `4xx`, `429` or `5xx`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    account: String,
    deployment: String,
    model: String,
    /// `prompt`, `cached` (prompt tokens served from the prefix cache) or `completion`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    /// The route's template (`/openai/deployments/{deployment}/chat/completions`), or `unmatched`.
    route: String,
    /// `2xx` .. `5xx`.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KvLabels {
    engine: String,
    /// `used`, `free` or `cached` (free but holding a reusable prefix).
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolEndpointLabels {
    pool: String,
    /// The endpoint's base URL as the operator registered it (a bounded set).
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `Succeeded` or `Failed`.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// What one engine reports, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct EngineSample {
    pub name: String,
    pub queued: i64,
    pub running: i64,
    pub kv_used: i64,
    pub kv_free: i64,
    pub kv_cached: i64,
    /// Cumulative over the engine's life.
    pub cached_prompt_tokens: u64,
    pub adapter_loads: u64,
    pub adapter_evictions: u64,
    pub preemptions: u64,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    http_requests: Family<RouteLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    time_to_first_token: Histograms<DeploymentLabels>,
    time_per_output_token: Histograms<DeploymentLabels>,
    rate_limited: Family<DeploymentLabels, Counter>,
    provisioning: Histograms<ResultLabels>,
    queue_depth: Family<EngineLabels, Gauge>,
    running: Family<EngineLabels, Gauge>,
    kv_blocks: Family<KvLabels, Gauge>,
    prefix_cache_hits: Family<EngineLabels, Counter>,
    adapter_loads: Family<EngineLabels, Counter>,
    adapter_evictions: Family<EngineLabels, Counter>,
    preemptions: Family<EngineLabels, Counter>,
    jobs: Family<StatusLabels, Gauge>,
    pool_up: Family<PoolEndpointLabels, Gauge>,
    pool_in_flight: Family<PoolEndpointLabels, Gauge>,
    pool_adapters: Family<PoolEndpointLabels, Gauge>,
    /// The engines' cumulative counters as last scraped, to add only what grew.
    engine_seen: Mutex<HashMap<String, [u64; 4]>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn token_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

fn provisioning_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let m = Metrics {
            requests: Family::default(),
            http_requests: Family::default(),
            tokens: Family::default(),
            time_to_first_token: Family::new_with_constructor(latency_seconds as fn() -> Histogram),
            time_per_output_token: Family::new_with_constructor(token_seconds as fn() -> Histogram),
            rate_limited: Family::default(),
            provisioning: Family::new_with_constructor(provisioning_seconds as fn() -> Histogram),
            queue_depth: Family::default(),
            running: Family::default(),
            kv_blocks: Family::default(),
            prefix_cache_hits: Family::default(),
            adapter_loads: Family::default(),
            adapter_evictions: Family::default(),
            preemptions: Family::default(),
            jobs: Family::default(),
            pool_up: Family::default(),
            pool_in_flight: Family::default(),
            pool_adapters: Family::default(),
            engine_seen: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Completion and chat calls that reached a deployment, by outcome",
            m.requests.clone(),
        );
        registry.register("http_requests", "HTTP requests by route template and status class", m.http_requests.clone());
        registry.register("tokens", "Tokens of finished, failed and abandoned calls, by kind", m.tokens.clone());
        registry.register(
            "time_to_first_token_seconds",
            "From admission to the first generated text",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Mean time per generated token after the first",
            m.time_per_output_token.clone(),
        );
        registry.register(
            "rate_limit_refusals",
            "Calls refused with 429 by the deployment's limits",
            m.rate_limited.clone(),
        );
        registry.register(
            "provisioning_duration_seconds",
            "From a deployment's PUT to its final state",
            m.provisioning.clone(),
        );
        registry.register("engine_queue_depth", "Requests waiting for a batch slot", m.queue_depth.clone());
        registry.register("engine_running_sequences", "Sequences in the running batch", m.running.clone());
        registry.register("kv_blocks", "KV-cache blocks of 16 positions, by state", m.kv_blocks.clone());
        registry.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache",
            m.prefix_cache_hits.clone(),
        );
        registry.register("adapter_loads", "LoRA adapters loaded into an engine's pool", m.adapter_loads.clone());
        registry.register(
            "adapter_evictions",
            "LoRA adapters dropped from an engine's pool to stay in budget",
            m.adapter_evictions.clone(),
        );
        registry.register(
            "engine_preemptions",
            "Sequences sent back to the queue to free KV blocks",
            m.preemptions.clone(),
        );
        registry.register("fine_tuning_jobs", "Fine-tuning jobs by status", m.jobs.clone());
        registry.register(
            "engine_pool_endpoint_up",
            "1 when an engine pool's endpoint answered its last probe, else 0",
            m.pool_up.clone(),
        );
        registry.register(
            "engine_pool_endpoint_in_flight",
            "Calls this replica has in flight on an engine pool's endpoint",
            m.pool_in_flight.clone(),
        );
        registry.register(
            "engine_pool_endpoint_adapters",
            "LoRA adapters an engine pool's endpoint holds",
            m.pool_adapters.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn outcome(status: u16) -> &'static str {
    match status {
        429 => "429",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "ok",
    }
}

impl Metrics {
    /// A call that reached a deployment, by its answer's status.
    pub fn request(&self, d: &DeploymentLabels, status: u16) {
        let labels = OutcomeLabels {
            account: d.account.clone(),
            deployment: d.deployment.clone(),
            model: d.model.clone(),
            outcome: outcome(status).into(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Every HTTP request, by route template (bounded) and status class.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        let labels =
            RouteLabels { method: method.to_owned(), route: route.to_owned(), status: format!("{}xx", status / 100) };
        self.http_requests.get_or_create(&labels).inc();
    }

    pub fn tokens(&self, d: &DeploymentLabels, prompt: u64, cached: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("cached", cached), ("completion", completion)] {
            let labels = TokenLabels {
                account: d.account.clone(),
                deployment: d.deployment.clone(),
                model: d.model.clone(),
                kind: kind.into(),
            };
            self.tokens.get_or_create(&labels).inc_by(n);
        }
    }

    /// A finished answer's time to its first text and mean time per later token.
    pub fn latency(&self, d: &DeploymentLabels, first_token: Option<Duration>, per_token: Option<Duration>) {
        if let Some(t) = first_token {
            self.time_to_first_token.get_or_create(d).observe(t.as_secs_f64());
        }
        if let Some(t) = per_token {
            self.time_per_output_token.get_or_create(d).observe(t.as_secs_f64());
        }
    }

    pub fn rate_limited(&self, d: &DeploymentLabels) {
        self.rate_limited.get_or_create(d).inc();
    }

    pub fn provisioned(&self, succeeded: bool, took: Duration) {
        let result = if succeeded { "Succeeded" } else { "Failed" };
        self.provisioning.get_or_create(&ResultLabels { result: result.into() }).observe(took.as_secs_f64());
    }

    /// The text exposition, with the engines' and jobs' state as of now.
    pub fn render(&self, engines: &[EngineSample], pools: &[berth_pool::PoolStatus], jobs: &[(String, i64)]) -> String {
        self.pool_up.clear();
        self.pool_in_flight.clear();
        self.pool_adapters.clear();
        for p in pools {
            for e in &p.endpoints {
                let labels = PoolEndpointLabels { pool: p.name.clone(), endpoint: e.url.clone() };
                self.pool_up.get_or_create(&labels).set(i64::from(e.health == "up"));
                self.pool_in_flight.get_or_create(&labels).set(i64::try_from(e.in_flight).unwrap_or(i64::MAX));
                self.pool_adapters.get_or_create(&labels).set(i64::try_from(e.adapters.len()).unwrap_or(i64::MAX));
            }
        }
        self.queue_depth.clear();
        self.running.clear();
        self.kv_blocks.clear();
        let mut seen = self.engine_seen.lock().unwrap_or_else(|p| p.into_inner());
        for e in engines {
            let labels = EngineLabels { engine: e.name.clone() };
            self.queue_depth.get_or_create(&labels).set(e.queued);
            self.running.get_or_create(&labels).set(e.running);
            for (state, n) in [("used", e.kv_used), ("free", e.kv_free), ("cached", e.kv_cached)] {
                self.kv_blocks.get_or_create(&KvLabels { engine: e.name.clone(), state: state.into() }).set(n);
            }
            // Engine counters restart with a reloaded engine: add what grew since the last scrape.
            let now = [e.cached_prompt_tokens, e.adapter_loads, e.adapter_evictions, e.preemptions];
            let before = seen.insert(e.name.clone(), now).unwrap_or_default();
            let grew = |i: usize| if now[i] >= before[i] { now[i] - before[i] } else { now[i] };
            self.prefix_cache_hits.get_or_create(&labels).inc_by(grew(0));
            self.adapter_loads.get_or_create(&labels).inc_by(grew(1));
            self.adapter_evictions.get_or_create(&labels).inc_by(grew(2));
            self.preemptions.get_or_create(&labels).inc_by(grew(3));
        }
        drop(seen);
        self.jobs.clear();
        for status in ["pending", "running", "paused", "succeeded", "failed", "cancelled"] {
            let n = jobs.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            self.jobs.get_or_create(&StatusLabels { status: status.into() }).set(n);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
