//! The loaded engines and the routes of deployments to them. Engines are keyed by the path of the
//! weights they run (a base model, or a full-weights fine-tune); adapter fine-tunes share their base's
//! engine. Counting users lets the last deployment's deletion unload an engine or adapter. A
//! deployment whose base model lives on an engine pool routes to the pool instead (`berth-pool`).

use berth_engine::{
    load_model, AdapterId, Engine, EngineError, EngineHandle, EngineOptions, Failure, GenerateEvent, GenerateRequest,
    Progress, TextModel,
};
use berth_pool::{Pool, PoolAdapter, PoolTarget};
use berth_store::AccountKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// A deployment, by account and lower-cased name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeploymentKey {
    pub account: AccountKey,
    pub name: String,
}

impl DeploymentKey {
    pub fn new(account: &AccountKey, name: &str) -> Self {
        DeploymentKey {
            account: AccountKey {
                subscription_id: account.subscription_id.to_ascii_lowercase(),
                resource_group: account.resource_group.to_ascii_lowercase(),
                account: account.account.to_ascii_lowercase(),
            },
            name: name.to_ascii_lowercase(),
        }
    }
}

/// What generates a deployment's answers.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Berth's own engine, in this process.
    Local(Arc<EngineHandle>),
    /// A pool of vLLM servers.
    Pool(PoolTarget),
}

/// Where a deployment's requests go.
#[derive(Clone, Debug)]
pub struct Route {
    pub backend: Backend,
    pub engine_key: String,
    pub adapter: Option<AdapterId>,
    /// The model id the deployment serves (reported as `model` in responses).
    pub model_name: String,
}

impl Route {
    /// The tokenizer and chat template prompts are validated and counted with.
    pub fn text(&self) -> &Arc<TextModel> {
        match &self.backend {
            Backend::Local(e) => e.model().text(),
            Backend::Pool(t) => &t.text,
        }
    }

    pub fn context_length(&self) -> usize {
        match &self.backend {
            Backend::Local(e) => e.model().config().context_length,
            Backend::Pool(t) => t.context_length,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Local(e) => e.model().config().vocab_size,
            Backend::Pool(t) => t.vocab_size,
        }
    }

    /// The most tokens one sequence can hold; a pool's servers each hold at least a context.
    pub fn kv_capacity_tokens(&self) -> usize {
        match &self.backend {
            Backend::Local(e) => e.kv_capacity_tokens(),
            Backend::Pool(t) => t.context_length.saturating_add(1),
        }
    }

    /// Starts generating; events arrive on `events`.
    pub fn submit(
        &self,
        request: GenerateRequest,
        events: tokio::sync::mpsc::Sender<GenerateEvent>,
    ) -> Result<Arc<Progress>, Failure> {
        match &self.backend {
            Backend::Local(e) => e.submit(request, events).map_err(|e| match e {
                EngineError::Busy(why) => Failure::QueueFull(why),
                EngineError::Stopped => Failure::ShuttingDown,
                other => Failure::Internal(other.to_string()),
            }),
            Backend::Pool(t) => t.submit(request, events),
        }
    }

    /// `system_fingerprint`: which engine and architecture answered.
    pub fn fingerprint(&self) -> String {
        match &self.backend {
            Backend::Local(e) => format!("fp_berth_{}", e.model().config().architecture.name()),
            Backend::Pool(t) => format!("fp_berth_vllm_{}", t.architecture),
        }
    }

    /// The engine pool serving it, if not Berth's own engine.
    pub fn engine_pool(&self) -> Option<&str> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Pool(t) => Some(t.pool.name()),
        }
    }
}

struct EngineEntry {
    handle: Arc<EngineHandle>,
    /// What the engine was counted as taking against the memory budget.
    bytes: u64,
    users: usize,
    adapters: HashMap<AdapterId, usize>,
}

#[derive(Default)]
struct HostState {
    engines: HashMap<String, EngineEntry>,
    routes: HashMap<DeploymentKey, Route>,
}

/// What to load for a deployment.
pub(crate) struct LoadPlan {
    /// Weights to run: a GGUF file or a Hugging Face directory.
    pub weights: String,
    /// For full-weights fine-tunes without a tokenizer: the base whose tokenizer to use.
    pub text_from: Option<String>,
    pub adapter_dir: Option<String>,
    /// Adapter id in the engine (the model id, so deployments of one model share it).
    pub adapter_id: Option<AdapterId>,
    pub model_name: String,
    /// Set when the base model is served by an engine pool.
    pub pool: Option<PoolPlan>,
}

/// A deployment on an engine pool: the pool, the base's name there, and the adapter as the pool's
/// servers read it.
pub(crate) struct PoolPlan {
    pub pool: Arc<Pool>,
    pub served_model: String,
    pub context_length: usize,
    pub adapter: Option<PoolAdapter>,
    /// A new deployment needs its pool to serve it now; one that was `Succeeded` (restored at start,
    /// or loaded by another replica of a fleet) is routed even while the pool is down, and its calls
    /// are answered 503 until an endpoint is back.
    pub strict: bool,
}

pub struct ModelHost {
    state: Mutex<HostState>,
    /// Serialises model loads: they are memory- and CPU-heavy, and two deployments of one base must
    /// not load it twice.
    loading: Mutex<()>,
    options: EngineOptions,
    /// Memory all engines together may take; a load past it is refused with the reason.
    memory_budget: Option<u64>,
}

impl ModelHost {
    pub fn new(options: EngineOptions) -> Self {
        ModelHost { state: Mutex::default(), loading: Mutex::new(()), options, memory_budget: None }
    }

    pub fn with_memory_budget(mut self, bytes: Option<u64>) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Memory the loaded engines were counted as taking.
    pub fn engine_bytes(&self) -> u64 {
        self.state().engines.values().map(|e| e.bytes).sum()
    }

    fn state(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn route(&self, key: &DeploymentKey) -> Option<Route> {
        self.state().routes.get(key).cloned()
    }

    /// Every routed deployment.
    pub fn routed(&self) -> Vec<DeploymentKey> {
        self.state().routes.keys().cloned().collect()
    }

    pub fn loaded_engines(&self) -> usize {
        self.state().engines.len()
    }

    /// Loads what the plan needs and routes the deployment: into an engine here (on a blocking thread),
    /// or onto its engine pool.
    pub(crate) async fn provision_async(
        self: &Arc<Self>,
        key: DeploymentKey,
        mut plan: LoadPlan,
    ) -> Result<(), String> {
        match plan.pool.take() {
            Some(pool) => self.provision_on_pool(key, plan, pool).await,
            None => {
                let host = self.clone();
                tokio::task::spawn_blocking(move || host.provision(key, plan))
                    .await
                    .unwrap_or_else(|e| Err(format!("provisioning crashed: {e}")))
            }
        }
    }

    /// A pool deployment: Berth keeps the base's tokenizer; the adapter is placed on an endpoint (or
    /// the base needs one endpoint up). The route before it is dropped only after, so that a
    /// deployment that keeps its adapter never unloads it.
    async fn provision_on_pool(&self, key: DeploymentKey, plan: LoadPlan, p: PoolPlan) -> Result<(), String> {
        let base = plan.weights.clone();
        let (text, config) = tokio::task::spawn_blocking(move || {
            let text = load_text(Path::new(&base))?;
            let config = berth_engine::probe_config(Path::new(&base)).map_err(|e| e.to_string())?;
            Ok::<_, String>((text, config))
        })
        .await
        .map_err(|e| format!("provisioning crashed: {e}"))??;
        if !p.pool.any_healthy() {
            p.pool.refresh().await;
        }
        match &p.adapter {
            Some(a) if p.strict || p.pool.any_healthy() => p.pool.place(a).await?,
            Some(a) => p.pool.want(a),
            None if p.strict && !p.pool.any_healthy() => {
                return Err(format!("no endpoint of engine pool '{}' is up", p.pool.name()))
            }
            None => {}
        }
        let target = PoolTarget {
            text,
            context_length: p.context_length.min(config.context_length),
            vocab_size: config.vocab_size,
            architecture: config.architecture.name().into(),
            served_model: p.served_model.clone(),
            adapter: p.adapter,
            pool: p.pool,
        };
        let engine_key = format!("pool:{}/{}", target.pool.name(), target.served_model);
        let route =
            Route { backend: Backend::Pool(target), engine_key, adapter: plan.adapter_id, model_name: plan.model_name };
        let previous = self.state().routes.insert(key, route);
        if let Some(previous) = previous {
            self.release(previous);
        }
        Ok(())
    }

    /// Loads what the plan needs (blocking: call from a blocking thread) and routes the deployment.
    fn provision(&self, key: DeploymentKey, plan: LoadPlan) -> Result<(), String> {
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        self.unprovision(&key);
        let existing = self.state().engines.get(&plan.weights).map(|e| e.handle.clone());
        let handle = match existing {
            Some(h) => h,
            None => {
                let need = weights_bytes(Path::new(&plan.weights)).saturating_add(self.options.kv_cache_bytes as u64);
                if let Some(budget) = self.memory_budget {
                    let used = self.engine_bytes();
                    if used.saturating_add(need) > budget {
                        let mib = |b: u64| b >> 20;
                        return Err(format!(
                            "Loading '{}' needs about {} MiB (weights and a KV cache of {} MiB), but the engines already loaded take {} MiB of the {} MiB engine memory budget (--engine-memory-mib). Delete a deployment of another model, or raise the budget.",
                            plan.model_name,
                            mib(need),
                            self.options.kv_cache_bytes >> 20,
                            mib(used),
                            mib(budget)
                        ));
                    }
                }
                let text_fallback = match &plan.text_from {
                    Some(base) => Some(load_text(Path::new(base))?),
                    None => None,
                };
                let started = std::time::Instant::now();
                let model = load_model(Path::new(&plan.weights), text_fallback).map_err(|e| e.to_string())?;
                tracing::info!(weights = %plan.weights, ms = started.elapsed().as_millis() as u64, "model loaded");
                let mut options = self.options.clone();
                options.name = format!("engine-{}", self.state().engines.len());
                let handle = Arc::new(Engine::start(Arc::new(model), options).map_err(|e| e.to_string())?);
                self.state().engines.insert(
                    plan.weights.clone(),
                    EngineEntry { handle: handle.clone(), bytes: need, users: 0, adapters: HashMap::new() },
                );
                handle
            }
        };
        if let (Some(dir), Some(id)) = (&plan.adapter_dir, &plan.adapter_id) {
            let loaded = self.state().engines.get(&plan.weights).is_some_and(|e| e.adapters.contains_key(id));
            if !loaded {
                let adapter = handle.model().load_adapter(Path::new(dir)).map_err(|e| e.to_string());
                let adapter = match adapter {
                    Ok(a) => a,
                    Err(e) => {
                        self.release_engine_if_unused(&plan.weights);
                        return Err(e);
                    }
                };
                // Checked against the model now; the engine's adapter pool may drop it later and
                // reload it from `dir` when a request needs it again.
                handle.register_adapter(id.clone(), dir.into(), Some(Arc::new(adapter))).map_err(|e| e.to_string())?;
            }
        }
        let mut state = self.state();
        // A deletion of the engine's last other deployment may have unloaded it while the adapter
        // loaded (the state lock is not held across loads): fail this provisioning, never panic.
        let Some(entry) = state.engines.get_mut(&plan.weights) else {
            return Err(
                "the model was unloaded while this deployment was being provisioned; update the deployment to retry"
                    .into(),
            );
        };
        entry.users += 1;
        if let Some(id) = &plan.adapter_id {
            *entry.adapters.entry(id.clone()).or_default() += 1;
        }
        state.routes.insert(
            key,
            Route {
                backend: Backend::Local(handle),
                engine_key: plan.weights,
                adapter: plan.adapter_id,
                model_name: plan.model_name,
            },
        );
        Ok(())
    }

    /// Removes the deployment's route, and the adapter or engine nobody else uses.
    pub(crate) fn unprovision(&self, key: &DeploymentKey) {
        let route = self.state().routes.remove(key);
        if let Some(route) = route {
            self.release(route);
        }
    }

    /// What a dropped route alone used: its adapter on its pool, or its adapter and engine here.
    fn release(&self, route: Route) {
        if let Backend::Pool(t) = &route.backend {
            if let Some(a) = &t.adapter {
                t.pool.release(&a.name);
            }
            return;
        }
        let mut state = self.state();
        let Some(entry) = state.engines.get_mut(&route.engine_key) else { return };
        entry.users = entry.users.saturating_sub(1);
        if let Some(id) = &route.adapter {
            if let Some(n) = entry.adapters.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    entry.adapters.remove(id);
                    let _ = entry.handle.remove_adapter(id.clone());
                }
            }
        }
        drop(state);
        self.release_engine_if_unused(&route.engine_key);
    }

    fn release_engine_if_unused(&self, weights: &str) {
        let removed = {
            let mut state = self.state();
            match state.engines.get(weights) {
                Some(e) if e.users == 0 => state.engines.remove(weights),
                _ => None,
            }
        };
        // Dropped outside the lock: dropping the last handle stops and joins the engine thread (for up
        // to one step), and route lookups must not wait for that.
        if let Some(entry) = removed {
            drop(entry);
            tracing::info!(%weights, "engine unloaded");
        }
    }

    /// Each loaded engine's state, for metrics; engines are named by their weights' file name.
    pub fn engine_samples(&self) -> Vec<crate::metrics::EngineSample> {
        let state = self.state();
        let mut out: Vec<_> = state
            .engines
            .iter()
            .map(|(weights, e)| {
                let s = e.handle.stats();
                let (total, free, cached) = s.kv_blocks();
                let (_, prompt_cached) = s.prompt_tokens();
                let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                crate::metrics::EngineSample {
                    name: Path::new(weights).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    queued: as_i64(s.queued()),
                    running: as_i64(s.running()),
                    kv_used: as_i64(total.saturating_sub(free)),
                    kv_free: as_i64(free),
                    kv_cached: as_i64(cached),
                    cached_prompt_tokens: prompt_cached,
                    adapter_loads: s.adapters().2,
                    adapter_evictions: s.adapter_evictions(),
                    preemptions: s.preemptions(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Drops every route and engine; engine threads stop once in-flight requests let go of them.
    pub fn shutdown(&self) {
        let mut state = self.state();
        state.routes.clear();
        state.engines.clear();
    }
}

/// What a model's weights take once loaded: a GGUF file is held as it is (quantised blocks stay
/// quantised); safetensors weights are held as f32, so 4 bytes per element, read from their headers.
fn weights_bytes(path: &Path) -> u64 {
    if !path.is_dir() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .map(|e| safetensors_f32_bytes(&e.path()).unwrap_or_else(|| e.metadata().map(|m| m.len()).unwrap_or(0)))
        .fold(0u64, u64::saturating_add)
}

fn safetensors_f32_bytes(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let elements = header
        .as_object()?
        .values()
        .filter_map(|t| t.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).fold(1u64, u64::saturating_mul));
    Some(elements.fold(0u64, u64::saturating_add).saturating_mul(4))
}

fn load_text(base: &Path) -> Result<Arc<TextModel>, String> {
    if base.is_dir() {
        TextModel::from_hf_dir(base).map(Arc::new).map_err(|e| e.to_string())
    } else {
        // The tokenizer of a GGUF base lives in its metadata: load the model header only.
        berth_engine::text_model_of_gguf(base).map(Arc::new).map_err(|e| e.to_string())
    }
}
