//! The engine thread of one loaded base model. It owns the paged KV pool and the sequences of every
//! deployment on that model ([`crate::scheduler`] decides what each step computes). Commands arrive
//! over a bounded channel; events leave over each request's own bounded channel. A full queue is
//! refused at `submit`, so a caller can answer "busy" at once instead of running out of memory.

use crate::error::Result;
use crate::scheduler::Worker;
use crate::{
    AdapterId, EngineError, GenerateEvent, GenerateRequest, KvPool, LoraAdapter, Model, Progress, BLOCK_TOKENS,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc::Sender;

/// Sizes of the engine's queues and batch.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Name of the OS thread (shows in `top -H` and panics).
    pub name: String,
    /// Sequences stepped together.
    pub max_batch: usize,
    /// Tokens one step computes at most: every decoding sequence's next token, then chunks of the
    /// prompts being prefilled, so that a long prompt never stalls the streams already running.
    pub max_batch_tokens: usize,
    /// Requests waiting for a slot before new ones are refused.
    pub queue_depth: usize,
    /// Memory for the paged KV cache; sequences that outgrow it are preempted and recomputed later.
    pub kv_cache_bytes: usize,
    /// Keep computed prompt blocks for reuse by later requests of the same scope.
    pub prefix_cache: bool,
    /// Memory for loaded adapters; beyond it the least recently used adapter that can be reloaded from
    /// its directory is dropped (requests running with it keep their reference until they finish).
    pub adapter_cache_bytes: usize,
    /// Batch slots ordinary requests cannot take while reserved (provisioned) requests have arrived in
    /// the last minute; reserved requests may use every slot.
    pub reserved_batch: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            name: "berth-engine".into(),
            max_batch: 16,
            max_batch_tokens: 256,
            queue_depth: 64,
            kv_cache_bytes: 512 << 20,
            prefix_cache: true,
            adapter_cache_bytes: 1 << 30,
            reserved_batch: 4,
        }
    }
}

/// What the engine thread is told.
pub enum Command {
    Generate {
        request: GenerateRequest,
        events: Sender<GenerateEvent>,
        progress: Arc<Progress>,
    },
    /// An adapter requests may name: already loaded, or loaded from `dir` on first use (and again
    /// after the adapter pool evicted it), or both.
    AddAdapter {
        id: AdapterId,
        adapter: Option<Arc<LoraAdapter>>,
        dir: Option<PathBuf>,
    },
    RemoveAdapter {
        id: AdapterId,
    },
    Shutdown,
}

pub struct Engine;

/// Counters the engine thread publishes (for metrics and tests); read without stopping it.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub(crate) queued: AtomicUsize,
    pub(crate) running: AtomicUsize,
    pub(crate) waiting: AtomicUsize,
    pub(crate) steps: AtomicU64,
    pub(crate) generated_tokens: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) cached_prompt_tokens: AtomicU64,
    pub(crate) preemptions: AtomicU64,
    pub(crate) kv_blocks: AtomicUsize,
    pub(crate) kv_blocks_available: AtomicUsize,
    pub(crate) kv_blocks_cached: AtomicUsize,
    pub(crate) adapters_loaded: AtomicUsize,
    pub(crate) adapter_bytes: AtomicUsize,
    pub(crate) adapter_loads: AtomicU64,
    pub(crate) adapter_evictions: AtomicU64,
}

impl EngineStats {
    /// Requests submitted and not yet in the batch (what counts against the queue depth).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Loaded adapters dropped from the pool to stay within its budget, so far.
    pub fn adapter_evictions(&self) -> u64 {
        self.adapter_evictions.load(Ordering::Relaxed)
    }

    /// Sequences in the running batch.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Requests waiting for a slot in the batch.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Forward passes run so far.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    /// Tokens sampled so far, over all requests.
    pub fn generated_tokens(&self) -> u64 {
        self.generated_tokens.load(Ordering::Relaxed)
    }

    /// Prompt tokens of admitted requests, and how many of them came from the prefix cache.
    pub fn prompt_tokens(&self) -> (u64, u64) {
        (self.prompt_tokens.load(Ordering::Relaxed), self.cached_prompt_tokens.load(Ordering::Relaxed))
    }

    /// Sequences sent back to the queue to free KV blocks.
    pub fn preemptions(&self) -> u64 {
        self.preemptions.load(Ordering::Relaxed)
    }

    /// Adapters loaded in the pool now, their bytes, and how many loads from disk happened so far.
    pub fn adapters(&self) -> (usize, usize, u64) {
        (
            self.adapters_loaded.load(Ordering::Relaxed),
            self.adapter_bytes.load(Ordering::Relaxed),
            self.adapter_loads.load(Ordering::Relaxed),
        )
    }

    /// KV blocks in the pool, blocks a new sequence could take now, and blocks holding cached prefixes.
    pub fn kv_blocks(&self) -> (usize, usize, usize) {
        (
            self.kv_blocks.load(Ordering::Relaxed),
            self.kv_blocks_available.load(Ordering::Relaxed),
            self.kv_blocks_cached.load(Ordering::Relaxed),
        )
    }
}

impl Engine {
    /// Starts the engine thread for `model`.
    pub fn start(model: Arc<Model>, mut options: EngineOptions) -> Result<EngineHandle> {
        // Kernels chosen and AMX requested once per process, before any compute thread exists.
        crate::isa::cpu();
        options.max_batch = options.max_batch.max(1);
        options.max_batch_tokens = options.max_batch_tokens.max(options.max_batch);
        let block_bytes = model.kv_bytes_per_token() * BLOCK_TOKENS;
        let blocks = (options.kv_cache_bytes / block_bytes).max(1);
        if blocks > u32::MAX as usize {
            return Err(EngineError::Tensor(format!(
                "a KV cache of {} bytes has too many blocks",
                options.kv_cache_bytes
            )));
        }
        let pool: KvPool = model.new_kv_pool(blocks);
        // Commands other than requests (adapters, shutdown) must always find room.
        let (tx, rx) = sync_channel(options.queue_depth.max(1) + 16);
        let stats = Arc::new(EngineStats::default());
        let worker = Worker::new(model.clone(), pool, stats.clone(), rx, options.clone());
        let thread = std::thread::Builder::new()
            .name(options.name.clone())
            .spawn(move || worker.run())
            .map_err(|e| EngineError::Tensor(format!("cannot start engine thread: {e}")))?;
        Ok(EngineHandle {
            tx,
            thread: Some(thread),
            model,
            stats,
            queue_depth: options.queue_depth.max(1),
            kv_capacity_tokens: blocks * BLOCK_TOKENS,
        })
    }
}

/// The owner of an engine thread. Dropping it stops the thread and joins it.
pub struct EngineHandle {
    tx: SyncSender<Command>,
    thread: Option<JoinHandle<()>>,
    model: Arc<Model>,
    stats: Arc<EngineStats>,
    queue_depth: usize,
    kv_capacity_tokens: usize,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").field("model", &self.model).finish_non_exhaustive()
    }
}

impl EngineHandle {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The most tokens one sequence (prompt and answer) can ever hold: the whole KV pool. A request
    /// longer than this can never run, however idle the engine.
    pub fn kv_capacity_tokens(&self) -> usize {
        self.kv_capacity_tokens
    }

    /// Queues a request. Events arrive on `events`, which should hold `max_tokens + 2` events so that the
    /// engine never waits for a slow client. Fails at once when the queue is full.
    /// The returned [`Progress`] counts what is computed for the request, also after its channel closes.
    pub fn submit(&self, request: GenerateRequest, events: Sender<GenerateEvent>) -> Result<Arc<Progress>> {
        let queued = self.stats.queued.fetch_add(1, Ordering::AcqRel);
        // Reserved requests are admitted by utilisation before they get here, so they never wait on
        // the ordinary queue's depth.
        if queued >= self.queue_depth && !request.reserved {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Busy(format!("{queued} requests are already waiting for this model")));
        }
        let progress = Arc::new(Progress::default());
        match self.tx.try_send(Command::Generate { request, events, progress: progress.clone() }) {
            Ok(()) => Ok(progress),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => EngineError::Busy("the request queue is full".into()),
                    TrySendError::Disconnected(_) => EngineError::Stopped,
                })
            }
        }
    }

    /// Registers a loaded adapter that stays loaded; requests sent after this call may use it.
    pub fn add_adapter(&self, id: AdapterId, adapter: Arc<LoraAdapter>) -> Result<()> {
        self.tx.send(Command::AddAdapter { id, adapter: Some(adapter), dir: None }).map_err(|_| EngineError::Stopped)
    }

    /// Registers an adapter the engine loads from `dir` when a request first needs it, and may evict
    /// and reload later. `loaded` (already checked against the model, e.g. when it was deployed) saves
    /// the first load.
    pub fn register_adapter(&self, id: AdapterId, dir: PathBuf, loaded: Option<Arc<LoraAdapter>>) -> Result<()> {
        self.tx.send(Command::AddAdapter { id, adapter: loaded, dir: Some(dir) }).map_err(|_| EngineError::Stopped)
    }

    pub fn remove_adapter(&self, id: AdapterId) -> Result<()> {
        self.tx.send(Command::RemoveAdapter { id }).map_err(|_| EngineError::Stopped)
    }

    /// Stops the thread after failing what is still running, and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
