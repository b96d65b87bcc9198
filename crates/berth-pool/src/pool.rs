//! A pool of vLLM servers: probing, adapter placement, and the choice of endpoint for a call.

use crate::endpoint::{parse_metrics, parse_models, Endpoint, EndpointStatus, Probe, Transition};
use berth_engine::Failure;
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often every endpoint is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Loading an adapter reads it from the shared store: allow for a slow disk.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The endpoint a prompt's prefix prefers takes the call unless it has this much more work than the
/// least busy one.
const AFFINITY_SLACK: f64 = 1.0;

/// What an operator registers.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    /// Base URLs of vLLM's OpenAI-compatible servers, e.g. `http://10.0.0.5:8000`.
    pub endpoints: Vec<String>,
    /// Sent as a bearer token when the servers were started with `--api-key`.
    pub api_key: Option<String>,
}

/// An adapter as vLLM knows it: its name in `model`, and where the servers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAdapter {
    pub name: String,
    pub path: String,
}

/// A pool as the operator sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub endpoints: Vec<EndpointStatus>,
    /// Adapters this replica's deployments need, each loaded on at least one endpoint that is up.
    pub adapters: Vec<String>,
}

struct Wanted {
    path: String,
    users: usize,
}

pub struct Pool {
    config: PoolConfig,
    name: String,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    api_key: Option<String>,
    pub(crate) client: reqwest::Client,
    wanted: Mutex<HashMap<String, Wanted>>,
    /// One placement at a time, so that a burst of calls for an adapter loads it once.
    placing: tokio::sync::Mutex<()>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Pool {
    /// Opens the pool and starts probing its endpoints every second, until the pool is dropped.
    pub fn start(config: PoolConfig, runtime: tokio::runtime::Handle) -> Arc<Pool> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // Between two chunks of a stream; a long answer may take minutes in all.
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let pool = Arc::new(Pool {
            name: config.name.clone(),
            endpoints: config.endpoints.iter().map(|u| Arc::new(Endpoint::new(u))).collect(),
            api_key: config.api_key.clone(),
            config,
            client,
            wanted: Mutex::default(),
            placing: tokio::sync::Mutex::new(()),
            runtime: runtime.clone(),
        });
        let weak = Arc::downgrade(&pool);
        runtime.spawn(async move {
            loop {
                let Some(pool) = weak.upgrade() else { break };
                pool.refresh().await;
                pool.replace_missing().await;
                drop(pool);
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
        pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the pool was opened with: a replica reopens it when the registration changed.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn endpoint_urls(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    fn wanted(&self) -> MutexGuard<'_, HashMap<String, Wanted>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> PoolStatus {
        let mut adapters: Vec<String> = self.wanted().keys().cloned().collect();
        adapters.sort();
        PoolStatus { name: self.name.clone(), endpoints: self.endpoints.iter().map(|e| e.status()).collect(), adapters }
    }

    pub fn any_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.healthy())
    }

    pub(crate) fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// Probes every endpoint once, at the same time.
    pub async fn refresh(&self) {
        let probes = self.endpoints.iter().map(|e| async move { (e, self.probe(e).await) });
        for (endpoint, result) in futures_util::future::join_all(probes).await {
            match endpoint.record_probe(result) {
                Transition::Down => {
                    tracing::warn!(pool = %self.name, endpoint = %endpoint.url, error = ?endpoint.state().error, "engine pool endpoint down")
                }
                Transition::Up => {
                    tracing::info!(pool = %self.name, endpoint = %endpoint.url, "engine pool endpoint up")
                }
                Transition::Same => {}
            }
        }
    }

    async fn probe(&self, endpoint: &Endpoint) -> Result<Probe, String> {
        let health = self
            .client
            .get(format!("{}/health", endpoint.url))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !health.status().is_success() {
            return Err(format!("/health answered {}", health.status()));
        }
        let models = self
            .authorized(self.client.get(format!("{}/v1/models", endpoint.url)))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !models.status().is_success() {
            return Err(format!("/v1/models answered {}", models.status()));
        }
        let models: serde_json::Value = models.json().await.map_err(|e| format!("/v1/models: {}", describe(&e)))?;
        let mut probe = parse_models(&models)?;
        // Load figures help routing but are not needed to serve: a server without them is still up.
        probe.load = match self.client.get(format!("{}/metrics", endpoint.url)).timeout(PROBE_TIMEOUT).send().await {
            Ok(r) if r.status().is_success() => parse_metrics(&r.text().await.unwrap_or_default()),
            _ => Default::default(),
        };
        Ok(probe)
    }

    /// At registration: every endpoint must be up and serve `model`. Returns the smallest context
    /// length the endpoints allow.
    pub async fn check_serves(&self, model: &str) -> Result<Option<u64>, String> {
        self.refresh().await;
        let mut max_len: Option<u64> = None;
        for e in &self.endpoints {
            let s = e.state();
            if !s.healthy {
                return Err(format!(
                    "endpoint {} of engine pool '{}' does not answer: {}",
                    e.url,
                    self.name,
                    s.error.as_deref().unwrap_or("unknown error")
                ));
            }
            if !s.probe.bases.iter().any(|b| b == model) {
                return Err(format!(
                    "endpoint {} of engine pool '{}' serves {:?}, not '{model}' (vLLM's --served-model-name; Berth's --served-model)",
                    e.url, self.name, s.probe.bases
                ));
            }
            if let Some(n) = s.probe.max_model_len {
                max_len = Some(max_len.map_or(n, |m| m.min(n)));
            }
        }
        Ok(max_len)
    }

    /// A deployment needs `adapter`: it counts as wanted until [`Pool::release`], and is loaded on an
    /// endpoint now unless one that is up has it already.
    pub async fn place(&self, adapter: &PoolAdapter) -> Result<(), String> {
        self.want(adapter);
        if self.endpoints.iter().any(|e| e.healthy() && e.has_adapter(&adapter.name)) {
            return Ok(());
        }
        match self.load_somewhere(adapter).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.release_count(&adapter.name);
                Err(e)
            }
        }
    }

    /// A deployment needs `adapter`, but it is not loaded now: the probe loop places it once an
    /// endpoint is up (a deployment restored while its pool is down), or a call does.
    pub fn want(&self, adapter: &PoolAdapter) {
        self.wanted()
            .entry(adapter.name.clone())
            .and_modify(|w| w.users += 1)
            .or_insert(Wanted { path: adapter.path.clone(), users: 1 });
    }

    fn release_count(&self, name: &str) -> bool {
        let mut wanted = self.wanted();
        let Some(w) = wanted.get_mut(name) else { return false };
        w.users = w.users.saturating_sub(1);
        if w.users == 0 {
            wanted.remove(name);
            return true;
        }
        false
    }

    /// A deployment no longer needs `name`; when none does, it is unloaded from every endpoint.
    pub fn release(self: &Arc<Self>, name: &str) {
        if self.release_count(name) {
            let pool = self.clone();
            let name = name.to_owned();
            self.runtime.spawn(async move { pool.unload_everywhere(&name).await });
        }
    }

    /// Unloads `name` from every endpoint that is up (one that is down has lost it anyway).
    pub async fn unload_everywhere(&self, name: &str) {
        for e in self.endpoints.iter().filter(|e| e.healthy()) {
            let sent = self
                .authorized(self.client.post(format!("{}/v1/unload_lora_adapter", e.url)))
                .timeout(LOAD_TIMEOUT)
                .json(&serde_json::json!({ "lora_name": name }))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(pool = %self.name, endpoint = %e.url, adapter = %name, "adapter unloaded")
                }
                // Not loaded there: nothing to do.
                Ok(r) if r.status().as_u16() == 404 || r.status().as_u16() == 400 => {}
                Ok(r) => {
                    tracing::warn!(pool = %self.name, endpoint = %e.url, adapter = %name, status = %r.status(), "adapter unload refused")
                }
                Err(err) => {
                    tracing::warn!(pool = %self.name, endpoint = %e.url, adapter = %name, error = %describe(&err), "adapter unload failed")
                }
            }
            e.note_adapter(name, false);
        }
    }

    async fn load_on(&self, endpoint: &Endpoint, adapter: &PoolAdapter) -> Result<(), String> {
        let started = std::time::Instant::now();
        let r = self
            .authorized(self.client.post(format!("{}/v1/load_lora_adapter", endpoint.url)))
            .timeout(LOAD_TIMEOUT)
            .json(&serde_json::json!({ "lora_name": adapter.name, "lora_path": adapter.path }))
            .send()
            .await
            .map_err(|e| {
                endpoint.mark_down(&describe(&e));
                format!("endpoint {}: {}", endpoint.url, describe(&e))
            })?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if !status.is_success() && !body.contains("already been loaded") {
            return Err(format!("endpoint {} could not load the adapter: {}", endpoint.url, error_message(&body)));
        }
        endpoint.note_adapter(&adapter.name, true);
        tracing::info!(pool = %self.name, endpoint = %endpoint.url, adapter = %adapter.name, ms = started.elapsed().as_millis() as u64, "adapter loaded");
        Ok(())
    }

    /// Loads `adapter` on the least busy endpoint that is up and does not hold it (trying the others
    /// in turn if one refuses), and returns that endpoint.
    async fn load_somewhere(&self, adapter: &PoolAdapter) -> Result<Arc<Endpoint>, String> {
        let before: Vec<Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.healthy() && e.has_adapter(&adapter.name)).cloned().collect();
        let _placing = self.placing.lock().await;
        // Another call may have placed it while this one waited: take that unless it is busy already.
        if let Some(e) = self.endpoints.iter().find(|e| {
            e.healthy() && e.has_adapter(&adapter.name) && !e.saturated() && !before.iter().any(|b| Arc::ptr_eq(b, e))
        }) {
            return Ok(e.clone());
        }
        let mut candidates: Vec<Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.healthy() && !e.has_adapter(&adapter.name)).cloned().collect();
        candidates.sort_by(|a, b| a.score().total_cmp(&b.score()));
        let mut last = format!("no endpoint of engine pool '{}' is up to load it on", self.name);
        for e in candidates {
            match self.load_on(&e, adapter).await {
                Ok(()) => return Ok(e),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Loads each wanted adapter that no endpoint that is up holds (its endpoint went down, or came
    /// back empty) on another.
    async fn replace_missing(&self) {
        let missing: Vec<PoolAdapter> = self
            .wanted()
            .iter()
            .filter(|(name, _)| !self.endpoints.iter().any(|e| e.healthy() && e.has_adapter(name)))
            .map(|(name, w)| PoolAdapter { name: name.clone(), path: w.path.clone() })
            .collect();
        if missing.is_empty() || !self.any_healthy() {
            return;
        }
        for a in missing {
            if let Err(e) = self.load_somewhere(&a).await {
                tracing::warn!(pool = %self.name, adapter = %a.name, error = %e, "cannot re-place adapter");
            }
        }
    }

    /// The endpoint for one call: among those up (less `avoid`) that hold the adapter, the one the
    /// prompt's prefix prefers unless it is clearly busier, else the least busy. The adapter is loaded
    /// on another endpoint when none holds it, or all that do are saturated.
    pub(crate) async fn pick(
        &self,
        adapter: Option<&PoolAdapter>,
        affinity: u64,
        avoid: &[String],
    ) -> Result<Arc<Endpoint>, Failure> {
        let up: Vec<Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.healthy() && !avoid.contains(&e.url)).cloned().collect();
        if up.is_empty() {
            return Err(Failure::Unavailable(format!("no endpoint of engine pool '{}' is up", self.name)));
        }
        let candidates = match adapter {
            None => up,
            Some(a) => {
                let with: Vec<Arc<Endpoint>> = up.iter().filter(|e| e.has_adapter(&a.name)).cloned().collect();
                let grow = with.is_empty() || (with.len() < up.len() && with.iter().all(|e| e.saturated()));
                if !grow {
                    with
                } else {
                    match self.load_somewhere(a).await {
                        Ok(e) if !avoid.contains(&e.url) => vec![e],
                        Ok(_) if !with.is_empty() => with,
                        Ok(_) => {
                            return Err(Failure::Unavailable(format!(
                                "no endpoint of engine pool '{}' holds adapter {}",
                                self.name, a.name
                            )))
                        }
                        Err(_) if !with.is_empty() => with,
                        Err(reason) => return Err(Failure::AdapterUnavailable { id: a.name.clone(), reason }),
                    }
                }
            }
        };
        Ok(choose(&candidates, affinity))
    }
}

/// Rendezvous hashing picks the prefix's endpoint; load decides when it is too busy.
pub(crate) fn choose(candidates: &[Arc<Endpoint>], affinity: u64) -> Arc<Endpoint> {
    let weight = |e: &Endpoint| {
        let mut h = std::hash::DefaultHasher::new();
        affinity.hash(&mut h);
        e.url.hash(&mut h);
        h.finish()
    };
    let least = candidates.iter().map(|e| e.score()).fold(f64::INFINITY, f64::min);
    let preferred = candidates.iter().max_by_key(|e| weight(e)).expect("candidates are never empty");
    if preferred.score() <= least + AFFINITY_SLACK {
        return preferred.clone();
    }
    candidates.iter().min_by(|a, b| a.score().total_cmp(&b.score())).expect("candidates are never empty").clone()
}

/// A transport error in words, without the URL (the caller names the endpoint).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_decode() {
        "unreadable answer"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The message of vLLM's error body (`{"error": {"message"}}`, or older `{"message"}`), else the body.
pub(crate) fn error_message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    v.pointer("/error/message")
        .or_else(|| v.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(300).collect())
}
