//! What each step of the engine thread computes (continuous batching):
//!
//! - Every running sequence that is decoding contributes its next token; sequences still prefilling
//!   their prompt contribute chunks from what is left of the step's token budget. Requests join the
//!   batch as soon as a slot and KV blocks are free, and leave it the step they finish.
//! - A joining request first takes the blocks of its prompt that are already in the prefix cache
//!   (same scope, same adapter, same tokens before and in the block), and only computes the rest.
//! - When the KV pool runs out, the newest sequence is preempted: its blocks are released and it goes
//!   back to the front of the queue with its prompt and the tokens it generated, to be recomputed
//!   (mostly from the prefix cache) when blocks are free again. Its sampler state travels with it, so
//!   its output is the same as if it had never been interrupted.

use crate::block_manager::{chain_key, scope_key, BlockManager};
use crate::engine::{Command, EngineOptions, EngineStats};
use crate::error::Result;
use crate::kv_cache::BLOCK_TOKENS;
use crate::sampling::Sampler;
use crate::{
    AdapterId, BatchContext, Failure, FinishReason, GenerateEvent, GenerateRequest, KvPool, LoraAdapter, Model,
    Progress, Segment,
};
use berth_text::{Constraint, IncrementalDecoder, StopMatcher, StopOutcome};
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

struct Sequence {
    request: GenerateRequest,
    adapter: Option<Arc<LoraAdapter>>,
    events: Sender<GenerateEvent>,
    /// The prompt, then every generated token; the last one is not computed yet while decoding.
    tokens: Vec<u32>,
    /// Positions whose keys and values are in the pool.
    computed: usize,
    /// The block table.
    blocks: Vec<u32>,
    /// Prefix-cache keys of the full blocks computed so far.
    keys: Vec<u64>,
    scope: u64,
    /// Prompt tokens found in the prefix cache when the request was first admitted.
    cached_tokens: Option<usize>,
    sampler: Sampler,
    /// Where the answer is in its grammar; like the sampler, it travels with a preempted sequence.
    constraint: Option<Constraint>,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    generated: usize,
    /// What has been computed, for billing (shared with the submitter).
    progress: Arc<Progress>,
    done: bool,
}

/// An adapter requests may name. `dir` makes it reloadable, and so evictable.
struct AdapterSlot {
    loaded: Option<Arc<LoraAdapter>>,
    dir: Option<PathBuf>,
    last_use: u64,
}

pub(crate) struct Worker {
    model: Arc<Model>,
    pool: KvPool,
    blocks: BlockManager,
    stats: Arc<EngineStats>,
    rx: Receiver<Command>,
    adapters: HashMap<AdapterId, AdapterSlot>,
    adapter_clock: u64,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    options: EngineOptions,
    /// When a reserved request last arrived.
    reserved_seen: Option<std::time::Instant>,
}

impl Worker {
    pub(crate) fn new(
        model: Arc<Model>,
        pool: KvPool,
        stats: Arc<EngineStats>,
        rx: Receiver<Command>,
        options: EngineOptions,
    ) -> Self {
        let blocks = BlockManager::new(pool.blocks());
        Worker {
            model,
            pool,
            blocks,
            stats,
            rx,
            adapters: HashMap::new(),
            adapter_clock: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            options,
            reserved_seen: None,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                self.publish();
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
            self.drop_abandoned();
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
                for r in self.running.iter_mut() {
                    let _ = r.events.try_send(GenerateEvent::Failed(Failure::Internal(reason.clone())));
                    r.done = true;
                }
            }
            self.retire();
        }
        for r in self.running.iter_mut().chain(self.waiting.iter_mut()) {
            let _ = r.events.try_send(GenerateEvent::Failed(Failure::ShuttingDown));
        }
    }

    fn publish(&self) {
        let s = &self.stats;
        s.running.store(self.running.len(), Ordering::Relaxed);
        s.waiting.store(self.waiting.len(), Ordering::Relaxed);
        s.kv_blocks.store(self.blocks.total(), Ordering::Relaxed);
        s.kv_blocks_available.store(self.blocks.available(), Ordering::Relaxed);
        s.kv_blocks_cached.store(self.blocks.cached(), Ordering::Relaxed);
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate { request, events, progress } => self.enqueue(request, events, progress),
            Command::AddAdapter { id, adapter, dir } => {
                self.adapter_clock += 1;
                self.adapters.insert(id.clone(), AdapterSlot { loaded: adapter, dir, last_use: self.adapter_clock });
                self.evict_adapters(&id);
            }
            Command::RemoveAdapter { id } => {
                self.adapters.remove(&id);
                self.publish_adapters();
            }
            Command::Shutdown => return false,
        }
        true
    }

    /// A request counts against the queue depth from `submit` until it first joins the batch.
    fn enqueue(&mut self, request: GenerateRequest, events: Sender<GenerateEvent>, progress: Arc<Progress>) {
        let refuse = |events: &Sender<GenerateEvent>, stats: &EngineStats, why: Failure| {
            stats.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = events.try_send(GenerateEvent::Failed(why));
        };
        if let Some(id) = request.adapter.as_ref().filter(|id| !self.adapters.contains_key(*id)) {
            let failure = Failure::AdapterUnavailable {
                id: id.0.clone(),
                reason: "it is not registered with this engine".into(),
            };
            return refuse(&events, &self.stats, failure);
        }
        if request.prompt.is_empty() {
            return refuse(&events, &self.stats, Failure::InvalidRequest("the prompt is empty".into()));
        }
        let need = request.prompt.len().div_ceil(BLOCK_TOKENS);
        if need > self.blocks.total() {
            let failure = Failure::PromptExceedsCache {
                needed_tokens: request.prompt.len(),
                capacity_tokens: self.blocks.total() * BLOCK_TOKENS,
            };
            return refuse(&events, &self.stats, failure);
        }
        if request.reserved {
            self.reserved_seen = Some(std::time::Instant::now());
        }
        let scope = scope_key(request.adapter.as_ref().map(|a| a.0.as_str()), &request.cache_scope);
        let mut request = request;
        let constraint = request.constraint.take();
        self.waiting.push_back(Sequence {
            constraint,
            tokens: request.prompt.clone(),
            computed: 0,
            blocks: Vec::new(),
            keys: Vec::new(),
            scope,
            cached_tokens: None,
            sampler: Sampler::new(request.sampling.clone()),
            decoder: IncrementalDecoder::new(),
            stop: StopMatcher::new(request.stop.clone()),
            adapter: None,
            events,
            request,
            generated: 0,
            progress,
            done: false,
        });
    }

    /// Clients that went away free their sequence before the next step.
    fn drop_abandoned(&mut self) {
        for r in self.running.iter_mut() {
            if r.events.is_closed() {
                r.done = true;
            }
        }
        self.retire();
        let stats = &self.stats;
        self.waiting.retain(|r| {
            let keep = !r.events.is_closed();
            if !keep && r.cached_tokens.is_none() {
                stats.queued.fetch_sub(1, Ordering::AcqRel);
            }
            keep
        });
    }

    /// Whether ordinary requests are kept out of the reserved slots: while reserved requests have
    /// arrived in the last minute.
    fn reservation_active(&self) -> bool {
        self.options.reserved_batch > 0
            && self.reserved_seen.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
    }

    /// The next waiting sequence to admit: the oldest reserved one, else the oldest, unless ordinary
    /// sequences already fill the slots left to them.
    fn next_waiting(&self) -> Option<usize> {
        if let Some(i) = self.waiting.iter().position(|s| s.request.reserved) {
            return Some(i);
        }
        if self.waiting.is_empty() {
            return None;
        }
        let ordinary = self.running.iter().filter(|s| !s.request.reserved).count();
        let cap = if self.reservation_active() {
            self.options.max_batch.saturating_sub(self.options.reserved_batch)
        } else {
            self.options.max_batch
        };
        (ordinary < cap).then_some(0)
    }

    /// Moves waiting sequences into the batch while there are slots and blocks for their prompts (with
    /// a block of headroom per running sequence, so that admitting does not force a preemption).
    fn admit(&mut self) {
        while self.running.len() < self.options.max_batch {
            let Some(index) = self.next_waiting() else { break };
            let Some(mut seq) = self.waiting.remove(index) else { break };
            if let (None, Some(id)) = (&seq.adapter, seq.request.adapter.clone()) {
                match self.adapter(&id) {
                    Ok(a) => seq.adapter = Some(a),
                    Err(why) => {
                        if seq.cached_tokens.is_none() {
                            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
                        }
                        let _ = seq.events.try_send(GenerateEvent::Failed(why));
                        continue;
                    }
                }
            }
            if self.options.prefix_cache {
                self.take_cached_prefix(&mut seq);
            }
            let need = seq.tokens.len().div_ceil(BLOCK_TOKENS) - seq.blocks.len();
            if self.blocks.available() < need + self.running.len() && !self.running.is_empty() {
                self.release(&mut seq);
                self.waiting.insert(index, seq);
                break;
            }
            if seq.cached_tokens.is_none() {
                self.stats.queued.fetch_sub(1, Ordering::AcqRel);
                seq.cached_tokens = Some(seq.computed);
                seq.progress.admitted(seq.tokens.len(), seq.computed);
                self.stats.prompt_tokens.fetch_add(seq.tokens.len() as u64, Ordering::Relaxed);
                self.stats.cached_prompt_tokens.fetch_add(seq.computed as u64, Ordering::Relaxed);
            }
            self.running.push(seq);
        }
    }

    /// The adapter `id`, loaded from its directory if the pool does not hold it (this step waits for
    /// the load: milliseconds for a typical adapter).
    fn adapter(&mut self, id: &AdapterId) -> std::result::Result<Arc<LoraAdapter>, Failure> {
        self.adapter_clock += 1;
        let clock = self.adapter_clock;
        let unavailable = |reason: String| Failure::AdapterUnavailable { id: id.0.clone(), reason };
        let slot = self.adapters.get_mut(id).ok_or_else(|| unavailable("it was removed".into()))?;
        slot.last_use = clock;
        if let Some(a) = &slot.loaded {
            return Ok(a.clone());
        }
        let dir = slot.dir.clone().ok_or_else(|| unavailable("it is not loaded".into()))?;
        let started = std::time::Instant::now();
        let adapter =
            Arc::new(self.model.load_adapter(&dir).map_err(|e| unavailable(format!("it cannot be loaded: {e}")))?);
        tracing::info!(adapter = %id.0, ms = started.elapsed().as_millis() as u64, bytes = adapter.bytes(), "adapter loaded");
        self.stats.adapter_loads.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.adapters.get_mut(id) {
            slot.loaded = Some(adapter.clone());
        }
        self.evict_adapters(id);
        Ok(adapter)
    }

    /// Drops least recently used reloadable adapters (never `keep`) while the pool is over budget.
    fn evict_adapters(&mut self, keep: &AdapterId) {
        loop {
            let total: usize = self.adapters.values().filter_map(|s| s.loaded.as_ref()).map(|a| a.bytes()).sum();
            if total <= self.options.adapter_cache_bytes {
                break;
            }
            let victim = self
                .adapters
                .iter()
                .filter(|(id, s)| *id != keep && s.loaded.is_some() && s.dir.is_some())
                .min_by_key(|(_, s)| s.last_use)
                .map(|(id, _)| id.clone());
            let Some(victim) = victim else { break };
            if let Some(slot) = self.adapters.get_mut(&victim) {
                slot.loaded = None;
                self.stats.adapter_evictions.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(adapter = %victim.0, "adapter evicted from the pool");
        }
        self.publish_adapters();
    }

    fn publish_adapters(&self) {
        let loaded: Vec<&Arc<LoraAdapter>> = self.adapters.values().filter_map(|s| s.loaded.as_ref()).collect();
        self.stats.adapters_loaded.store(loaded.len(), Ordering::Relaxed);
        self.stats.adapter_bytes.store(loaded.iter().map(|a| a.bytes()).sum(), Ordering::Relaxed);
    }

    /// Takes the cached blocks of the sequence's longest cached prefix, leaving at least one token to
    /// compute (its logits give the next token).
    fn take_cached_prefix(&mut self, seq: &mut Sequence) {
        let full = (seq.tokens.len() - 1) / BLOCK_TOKENS;
        let mut key = seq.scope;
        for b in 0..full {
            key = chain_key(key, &seq.tokens[b * BLOCK_TOKENS..(b + 1) * BLOCK_TOKENS]);
            match self.blocks.lookup(key) {
                Some(block) => {
                    seq.blocks.push(block);
                    seq.keys.push(key);
                }
                None => break,
            }
        }
        seq.computed = seq.blocks.len() * BLOCK_TOKENS;
    }

    fn release(&mut self, seq: &mut Sequence) {
        for b in seq.blocks.drain(..) {
            self.blocks.release(b);
        }
        seq.keys.clear();
        seq.computed = 0;
    }

    /// Finished sequences leave the batch and give their blocks back.
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].done {
                let mut seq = self.running.remove(i);
                self.release(&mut seq);
            } else {
                i += 1;
            }
        }
    }

    /// Which sequences compute how many tokens this step: decodes first, then prefill chunks.
    fn plan(&self) -> Vec<(usize, usize)> {
        let mut budget = self.options.max_batch_tokens;
        let mut plan = Vec::with_capacity(self.running.len());
        for (i, r) in self.running.iter().enumerate() {
            if r.tokens.len() - r.computed == 1 && budget > 0 {
                plan.push((i, 1));
                budget -= 1;
            }
        }
        // Reserved sequences' prompts first.
        for reserved in [true, false] {
            for (i, r) in self.running.iter().enumerate() {
                let pending = r.tokens.len() - r.computed;
                if r.request.reserved == reserved && pending > 1 && budget > 0 {
                    let n = pending.min(budget);
                    plan.push((i, n));
                    budget -= n;
                }
            }
        }
        plan
    }

    /// Gives every planned sequence the blocks its new tokens need, preempting the newest sequences
    /// when the pool is empty. Returns the plan without the preempted sequences, and which were.
    fn reserve(&mut self, plan: Vec<(usize, usize)>) -> (Vec<(usize, usize)>, Vec<bool>) {
        let mut out = vec![false; self.running.len()];
        for &(i, n) in &plan {
            while !out[i] && self.running[i].blocks.len() * BLOCK_TOKENS < self.running[i].computed + n {
                if let Some(b) = self.blocks.allocate() {
                    self.running[i].blocks.push(b);
                    continue;
                }
                // The newest ordinary sequence goes first; reserved ones only when nothing else is left.
                let victim = (0..self.running.len())
                    .rev()
                    .find(|&j| !out[j] && !self.running[j].request.reserved)
                    .or_else(|| (0..self.running.len()).rev().find(|&j| !out[j]))
                    .expect("sequence i is still in");
                out[victim] = true;
                if victim == i && (0..self.running.len()).all(|j| j == i || out[j]) {
                    // Alone in the batch and still out of blocks: the pool cannot hold this sequence.
                    let r = &mut self.running[i];
                    let capacity_tokens = self.blocks.total() * BLOCK_TOKENS;
                    let _ = r.events.try_send(GenerateEvent::Failed(Failure::OutgrewCache { capacity_tokens }));
                    r.done = true;
                } else {
                    self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
                }
                let mut seq = std::mem::take(&mut self.running[victim].blocks);
                for b in seq.drain(..) {
                    self.blocks.release(b);
                }
                let r = &mut self.running[victim];
                r.keys.clear();
                r.computed = 0;
            }
        }
        (plan.into_iter().filter(|&(i, _)| !out[i]).collect(), out)
    }

    /// Preempted sequences go back to the front of the queue, oldest first.
    fn requeue(&mut self, preempted: &[bool]) {
        for j in (0..preempted.len()).rev() {
            if preempted[j] && !self.running[j].done {
                let seq = self.running.remove(j);
                self.waiting.push_front(seq);
            }
        }
    }

    fn step(&mut self) -> Result<()> {
        let plan = self.plan();
        let (plan, preempted) = self.reserve(plan);
        if plan.is_empty() {
            self.requeue(&preempted);
            return Ok(());
        }
        let mut tokens = Vec::new();
        let mut segments = Vec::with_capacity(plan.len());
        for &(i, n) in &plan {
            let r = &self.running[i];
            tokens.extend_from_slice(&r.tokens[r.computed..r.computed + n]);
            segments.push(Segment { len: n, past: r.computed, table: &r.blocks, adapter: r.adapter.as_deref() });
        }
        let logits =
            self.model.forward(&tokens, &mut BatchContext { kv: &mut self.pool, segments, all_logits: false })?;
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        let text = self.model.text().clone();
        let context_length = self.model.config().context_length;
        for (&(i, n), mut row) in plan.iter().zip(logits) {
            self.running[i].computed += n;
            self.register_full_blocks(i);
            let r = &mut self.running[i];
            if r.computed < r.tokens.len() {
                continue; // mid-prompt chunk: nothing to sample yet
            }
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if let Some(Err(e)) = r.constraint.as_mut().map(|c| c.mask(&mut row)) {
                fail(r, Failure::Internal(format!("constrained decoding failed: {e}")));
                continue;
            }
            let (token, scored) = r.sampler.sample_scored(&row);
            r.generated += 1;
            r.progress.sampled(r.generated);
            let end = !r.request.ignore_eos && text.end_of_generation().contains(&token);
            // The end-of-turn token is not part of the answer, so neither is its log-probability.
            if let (Some(scored), false) = (scored, end) {
                send(r, GenerateEvent::Logprob(scored));
            }
            if end {
                let tail = r.decoder.flush(&text);
                finish_with(r, &tail, FinishReason::Stop);
                continue;
            }
            if let Some(Err(e)) = r.constraint.as_mut().map(|c| c.commit(token)) {
                fail(r, Failure::Internal(format!("constrained decoding failed: {e}")));
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
            if r.generated >= r.request.max_tokens || r.tokens.len() + 1 >= context_length {
                let tail = r.decoder.flush(&text);
                finish_with(r, &tail, FinishReason::Length);
                continue;
            }
            r.tokens.push(token);
        }
        self.requeue(&preempted);
        Ok(())
    }

    /// Offers the sequence's newly completed blocks to the prefix cache.
    fn register_full_blocks(&mut self, i: usize) {
        if !self.options.prefix_cache {
            return;
        }
        let r = &mut self.running[i];
        while r.keys.len() < r.computed / BLOCK_TOKENS {
            let b = r.keys.len();
            let previous = r.keys.last().copied().unwrap_or(r.scope);
            let key = chain_key(previous, &r.tokens[b * BLOCK_TOKENS..(b + 1) * BLOCK_TOKENS]);
            r.keys.push(key);
            self.blocks.register(r.blocks[b], key);
        }
    }
}

/// Emits what the decoder and stop matcher still hold, then finishes (unless a stop sequence shows up
/// in that tail, which finishes with `stop`).
fn finish_with(r: &mut Sequence, tail: &str, reason: FinishReason) {
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

fn fail(r: &mut Sequence, why: Failure) {
    if !r.done {
        let _ = r.events.try_send(GenerateEvent::Failed(why));
        r.done = true;
    }
}

fn send(r: &mut Sequence, event: GenerateEvent) {
    if matches!(&event, GenerateEvent::Text(t) if t.is_empty()) || r.done {
        return;
    }
    match r.events.try_send(event) {
        Ok(()) => {}
        // The client went away (or stopped reading): free the sequence at this step.
        Err(TrySendError::Closed(_)) | Err(TrySendError::Full(_)) => r.done = true,
    }
}

impl Sequence {
    fn finish(&mut self, reason: FinishReason) {
        if self.done {
            return;
        }
        let _ = self.events.try_send(GenerateEvent::Finished {
            reason,
            prompt_tokens: self.request.prompt.len(),
            completion_tokens: self.generated,
            cached_tokens: self.cached_tokens.unwrap_or(0),
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
