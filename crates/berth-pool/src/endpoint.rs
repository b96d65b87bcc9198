//! One vLLM server of a pool: what Berth last learnt about it (health, served model, loaded adapters,
//! load), and the parsing of what it answers on `/v1/models` and `/metrics`.

use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What one probe of an endpoint found.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Probe {
    /// Models the server serves from its weights (`--served-model-name`).
    pub bases: Vec<String>,
    /// LoRA adapters it holds, by name.
    pub adapters: BTreeSet<String>,
    pub max_model_len: Option<u64>,
    pub load: Load,
}

/// vLLM's own view of its work.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Load {
    pub running: f64,
    pub waiting: f64,
    /// Fraction of the KV cache in use, 0 to 1.
    pub kv_usage: f64,
}

#[derive(Debug, Default)]
pub(crate) struct EndpointState {
    pub healthy: bool,
    /// Set once the first probe has answered, either way.
    pub probed: bool,
    pub error: Option<String>,
    pub probe: Probe,
    /// Consecutive failed probes.
    pub failures: u32,
}

/// An endpoint as the operator sees it (`berth engine-pool show`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointStatus {
    pub url: String,
    /// `up`, `down`, or `unknown` before the first probe.
    pub health: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub models: Vec<String>,
    pub adapters: Vec<String>,
    pub running: f64,
    pub waiting: f64,
    pub kv_cache_usage: f64,
    /// Calls this replica has in flight on it.
    pub in_flight: usize,
    /// Calls this replica sent to it since it started.
    pub served: u64,
}

pub(crate) struct Endpoint {
    /// Base URL without a trailing slash, e.g. `http://10.0.0.5:8000`.
    pub url: String,
    state: Mutex<EndpointState>,
    pub in_flight: AtomicUsize,
    pub served: AtomicU64,
}

impl Endpoint {
    pub fn new(url: &str) -> Self {
        Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            state: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, EndpointState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn healthy(&self) -> bool {
        self.state().healthy
    }

    pub fn has_adapter(&self, name: &str) -> bool {
        self.state().probe.adapters.contains(name)
    }

    /// How busy it is, counting this replica's calls at once and other replicas' through vLLM's
    /// figures (which lag by up to a probe).
    pub fn score(&self) -> f64 {
        let s = self.state();
        let mine = self.in_flight.load(Ordering::Acquire) as f64;
        mine.max(s.probe.load.running) + 2.0 * s.probe.load.waiting
    }

    /// vLLM queues requests it cannot start, or is close to running out of KV cache.
    pub fn saturated(&self) -> bool {
        let s = self.state();
        s.probe.load.waiting > 0.0 || s.probe.load.kv_usage >= 0.9
    }

    pub fn record_probe(&self, result: Result<Probe, String>) -> Transition {
        let mut s = self.state();
        let was = (s.probed, s.healthy);
        s.probed = true;
        match result {
            Ok(p) => {
                s.healthy = true;
                s.error = None;
                s.failures = 0;
                s.probe = p;
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                s.healthy = false;
                s.error = Some(e);
                // A server that comes back has lost its adapters; until it answers, assume nothing.
                s.probe = Probe::default();
            }
        }
        match (was, s.healthy) {
            ((true, true), false) | ((false, _), false) => Transition::Down,
            ((true, false), true) | ((false, _), true) => Transition::Up,
            _ => Transition::Same,
        }
    }

    /// A call found the endpoint unreachable: out of routing until a probe says otherwise.
    pub fn mark_down(&self, why: &str) {
        let mut s = self.state();
        s.healthy = false;
        s.probed = true;
        s.error = Some(why.to_owned());
        s.probe = Probe::default();
    }

    pub fn note_adapter(&self, name: &str, loaded: bool) {
        let mut s = self.state();
        if loaded {
            s.probe.adapters.insert(name.to_owned());
        } else {
            s.probe.adapters.remove(name);
        }
    }

    pub fn status(&self) -> EndpointStatus {
        let s = self.state();
        EndpointStatus {
            url: self.url.clone(),
            health: match (s.probed, s.healthy) {
                (false, _) => "unknown",
                (true, true) => "up",
                (true, false) => "down",
            }
            .into(),
            error: s.error.clone(),
            models: s.probe.bases.clone(),
            adapters: s.probe.adapters.iter().cloned().collect(),
            running: s.probe.load.running,
            waiting: s.probe.load.waiting,
            kv_cache_usage: s.probe.load.kv_usage,
            in_flight: self.in_flight.load(Ordering::Acquire),
            served: self.served.load(Ordering::Acquire),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Up,
    Down,
    Same,
}

/// Counts a call against an endpoint while it lives.
pub(crate) struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    pub fn new(endpoint: &'a Endpoint) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::AcqRel);
        endpoint.served.fetch_add(1, Ordering::AcqRel);
        InFlight(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /v1/models`: base models have no `parent`; LoRA adapters name theirs. (The load is left empty.)
pub(crate) fn parse_models(body: &serde_json::Value) -> Result<Probe, String> {
    let data = body.get("data").and_then(|d| d.as_array()).ok_or("its /v1/models answer has no 'data' list")?;
    let (mut bases, mut adapters, mut max_len) = (Vec::new(), BTreeSet::new(), None);
    for m in data {
        let Some(id) = m.get("id").and_then(|i| i.as_str()) else { continue };
        match m.get("parent").and_then(|p| p.as_str()) {
            Some(_) => {
                adapters.insert(id.to_owned());
            }
            None => {
                bases.push(id.to_owned());
                if let Some(n) = m.get("max_model_len").and_then(|n| n.as_u64()) {
                    max_len = Some(max_len.map_or(n, |m: u64| m.min(n)));
                }
            }
        }
    }
    Ok(Probe { bases, adapters, max_model_len: max_len, load: Load::default() })
}

/// The figures Berth routes by, from vLLM's Prometheus text: samples of one metric are summed over
/// their labels (one per model or engine).
pub(crate) fn parse_metrics(text: &str) -> Load {
    let mut load = Load::default();
    let mut kv_samples = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        if !value.is_finite() {
            continue;
        }
        let name = name_labels.split('{').next().unwrap_or("").trim();
        match name {
            "vllm:num_requests_running" => load.running += value,
            "vllm:num_requests_waiting" => load.waiting += value,
            // Older servers call it gpu_cache_usage_perc; both are fractions despite the name.
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => {
                load.kv_usage += value;
                kv_samples += 1.0;
            }
            _ => {}
        }
    }
    if kv_samples > 1.0 {
        load.kv_usage /= kv_samples;
    }
    load
}
