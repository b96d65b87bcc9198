//! The engine thread. It owns the running sequences (their KV caches, samplers and detokenisers) and
//! steps them together: each step feeds every running sequence its pending tokens (the whole prompt
//! when it joins, then one token) in one batched forward pass, so requests join and leave the batch at
//! token granularity. Commands arrive over a bounded channel; events leave over each request's own
//! bounded channel.

use crate::error::Result;
use crate::sampling::Sampler;
use crate::{AdapterId, BatchContext, EngineError, FinishReason, GenerateEvent, GenerateRequest, LoraAdapter, Model, Segment, SeqKvCache};
use berth_text::{IncrementalDecoder, StopMatcher, StopOutcome};
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc::error::TrySendError as EventSendError;
use tokio::sync::mpsc::Sender;

/// Sizes of the engine's queues and batch.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Name of the OS thread (shows in `top -H` and panics).
    pub name: String,
    /// Sequences stepped together.
    pub max_batch: usize,
    /// Requests waiting for a slot before new ones are refused.
    pub queue_depth: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { name: "berth-engine".into(), max_batch: 8, queue_depth: 64 }
    }
}

/// What the engine thread is told.
pub enum Command {
    Generate { request: GenerateRequest, events: Sender<GenerateEvent> },
    AddAdapter { id: AdapterId, adapter: Arc<LoraAdapter> },
    RemoveAdapter { id: AdapterId },
    Shutdown,
}

pub struct Engine;

/// Counters the engine thread publishes (for metrics and tests); read without stopping it.
#[derive(Debug, Default)]
pub struct EngineStats {
    running: AtomicUsize,
    waiting: AtomicUsize,
    steps: AtomicU64,
    generated_tokens: AtomicU64,
}

impl EngineStats {
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
}

impl Engine {
    /// Starts the engine thread for `model`.
    pub fn start(model: Arc<Model>, options: EngineOptions) -> Result<EngineHandle> {
        let (tx, rx) = sync_channel(options.queue_depth.max(1));
        let stats = Arc::new(EngineStats::default());
        let worker = Worker {
            model: model.clone(),
            stats: stats.clone(),
            rx,
            adapters: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            options: options.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(options.name.clone())
            .spawn(move || worker.run())
            .map_err(|e| EngineError::Tensor(format!("cannot start engine thread: {e}")))?;
        Ok(EngineHandle { tx, thread: Some(thread), model, stats })
    }
}

/// The owner of an engine thread. Dropping it stops the thread and joins it.
pub struct EngineHandle {
    tx: SyncSender<Command>,
    thread: Option<JoinHandle<()>>,
    model: Arc<Model>,
    stats: Arc<EngineStats>,
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

    /// Queues a request. Events arrive on `events`, which should hold `max_tokens + 2` events so that the
    /// engine never waits for a slow client. Fails at once when the queue is full.
    pub fn submit(&self, request: GenerateRequest, events: Sender<GenerateEvent>) -> Result<()> {
        match self.tx.try_send(Command::Generate { request, events }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(EngineError::Busy("the request queue is full".into())),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::Stopped),
        }
    }

    /// Registers an adapter; requests sent after this call may use it. Blocks while the queue is full.
    pub fn add_adapter(&self, id: AdapterId, adapter: Arc<LoraAdapter>) -> Result<()> {
        self.tx.send(Command::AddAdapter { id, adapter }).map_err(|_| EngineError::Stopped)
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

struct Running {
    request: GenerateRequest,
    adapter: Option<Arc<LoraAdapter>>,
    events: Sender<GenerateEvent>,
    pending: Vec<u32>,
    cache: SeqKvCache,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    generated: usize,
    done: bool,
}

struct Worker {
    model: Arc<Model>,
    stats: Arc<EngineStats>,
    rx: Receiver<Command>,
    adapters: HashMap<AdapterId, Arc<LoraAdapter>>,
    waiting: VecDeque<(GenerateRequest, Sender<GenerateEvent>)>,
    running: Vec<Running>,
    options: EngineOptions,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut alive = true;
            while let Ok(cmd) = self.rx.try_recv() {
                if !self.handle(cmd) {
                    alive = false;
                    break;
                }
            }
            if !alive {
                break;
            }
            self.admit();
            self.publish();
            if self.running.is_empty() {
                continue;
            }
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.step()));
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(panic_message(&panic)),
            };
            if let Some(reason) = failure {
                tracing::error!(engine = %self.options.name, %reason, "engine step failed; failing its sequences");
                for r in self.running.drain(..) {
                    let _ = r.events.try_send(GenerateEvent::Failed(format!("inference failed: {reason}")));
                }
            }
            self.running.retain(|r| !r.done);
            self.publish();
        }
        for r in self.running.drain(..) {
            let _ = r.events.try_send(GenerateEvent::Failed("the engine is shutting down".into()));
        }
        for (_, events) in self.waiting.drain(..) {
            let _ = events.try_send(GenerateEvent::Failed("the engine is shutting down".into()));
        }
    }

    fn publish(&self) {
        self.stats.running.store(self.running.len(), Ordering::Relaxed);
        self.stats.waiting.store(self.waiting.len(), Ordering::Relaxed);
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate { request, events } => {
                if self.waiting.len() >= self.options.queue_depth {
                    let _ = events.try_send(GenerateEvent::Failed("the request queue is full".into()));
                } else {
                    self.waiting.push_back((request, events));
                }
            }
            Command::AddAdapter { id, adapter } => {
                self.adapters.insert(id, adapter);
            }
            Command::RemoveAdapter { id } => {
                self.adapters.remove(&id);
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn admit(&mut self) {
        while self.running.len() < self.options.max_batch {
            let Some((request, events)) = self.waiting.pop_front() else { break };
            if events.is_closed() {
                continue;
            }
            let adapter = match &request.adapter {
                None => None,
                Some(id) => match self.adapters.get(id) {
                    Some(a) => Some(a.clone()),
                    None => {
                        let _ = events.try_send(GenerateEvent::Failed(format!("adapter {} is not loaded", id.0)));
                        continue;
                    }
                },
            };
            if request.prompt.is_empty() {
                let _ = events.try_send(GenerateEvent::Failed("the prompt is empty".into()));
                continue;
            }
            self.running.push(Running {
                pending: request.prompt.clone(),
                cache: self.model.new_cache(),
                sampler: Sampler::new(request.sampling.clone()),
                decoder: IncrementalDecoder::new(),
                stop: StopMatcher::new(request.stop.clone()),
                adapter,
                events,
                request,
                generated: 0,
                done: false,
            });
        }
    }

    fn step(&mut self) -> Result<()> {
        let mut tokens = Vec::new();
        let mut segments = Vec::with_capacity(self.running.len());
        for r in self.running.iter_mut() {
            tokens.extend_from_slice(&r.pending);
            segments.push(Segment { len: r.pending.len(), cache: &mut r.cache, adapter: r.adapter.as_deref() });
        }
        let logits = self.model.forward(&tokens, &mut BatchContext { segments, all_logits: false })?.to_vec2::<f32>()?;
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.generated_tokens.fetch_add(logits.len() as u64, Ordering::Relaxed);
        let text = self.model.text().clone();
        let context_length = self.model.config().context_length;
        for (r, row) in self.running.iter_mut().zip(logits) {
            let token = r.sampler.sample(&row);
            r.generated += 1;
            if text.end_of_generation().contains(&token) {
                let tail = r.decoder.flush(&text);
                finish_with(r, &tail, FinishReason::Stop);
                continue;
            }
            let delta = r.decoder.push(&text, token);
            match r.stop.push(&delta) {
                StopOutcome::Stopped(before) => {
                    send(r, GenerateEvent::Text(before));
                    r.finish(FinishReason::Stop);
                    continue;
                }
                StopOutcome::Continue(out) => send(r, GenerateEvent::Text(out)),
            }
            if r.generated >= r.request.max_tokens || r.cache.len() + 1 >= context_length {
                let tail = r.decoder.flush(&text);
                finish_with(r, &tail, FinishReason::Length);
                continue;
            }
            r.pending = vec![token];
        }
        Ok(())
    }
}

/// Emits what the decoder and stop matcher still hold, then finishes (unless a stop sequence shows up
/// in that tail, which finishes with `stop`).
fn finish_with(r: &mut Running, tail: &str, reason: FinishReason) {
    match r.stop.push(tail) {
        StopOutcome::Stopped(before) => {
            send(r, GenerateEvent::Text(before));
            r.finish(FinishReason::Stop);
        }
        StopOutcome::Continue(out) => {
            let rest = r.stop.finish();
            send(r, GenerateEvent::Text(out + &rest));
            r.finish(reason);
        }
    }
}

fn send(r: &mut Running, event: GenerateEvent) {
    if matches!(&event, GenerateEvent::Text(t) if t.is_empty()) || r.done {
        return;
    }
    match r.events.try_send(event) {
        Ok(()) => {}
        // The client went away (or stopped reading): free the sequence at this step.
        Err(EventSendError::Closed(_)) | Err(EventSendError::Full(_)) => r.done = true,
    }
}

impl Running {
    fn finish(&mut self, reason: FinishReason) {
        if self.done {
            return;
        }
        let _ = self.events.try_send(GenerateEvent::Finished {
            reason,
            prompt_tokens: self.request.prompt.len(),
            completion_tokens: self.generated,
        });
        self.done = true;
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}
