//! Data-plane admission per deployment.
//!
//! - Standard types: capacity x 6 requests per minute, at most capacity requests in any 10 seconds;
//!   capacity x 1,000 tokens in any 60 seconds. Both are sliding windows over a log of admissions. A
//!   request is charged its estimate (prompt tokens + `max_tokens`) when admitted and corrected to what
//!   it used when it finishes. Check and charge happen under one lock, so concurrent requests never
//!   overshoot: the tokens charged in any minute stay within the limit, and what a minute serves exceeds
//!   it only by what finished calls used beyond their estimates.
//! - Provisioned types: a utilisation meter that drains at the PTU's tokens per minute. A request is
//!   admitted while utilisation (tokens in the meter / one minute of throughput) is under 100 %, charged
//!   its estimate, and corrected when it finishes.
//!
//! The state of a deployment lives in this process (one machine) or, for replicas on one PostgreSQL
//! database, in its `admission_state` row: each admission locks the row, runs the same arithmetic on
//! the database's clock, and writes it back in one transaction, so replicas together admit exactly
//! what one process would.

use crate::host::DeploymentKey;
use berth_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const MINUTE: Duration = Duration::from_secs(60);
const WINDOWS_PER_MINUTE: u64 = 6;

/// What a deployment allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    Standard { requests_per_window: u64, tokens_per_minute: u64 },
    Provisioned { tokens_per_minute: u64 },
}

impl Limits {
    pub fn standard(capacity: i64) -> Self {
        let c = u64::try_from(capacity).unwrap_or(0);
        Limits::Standard { requests_per_window: c, tokens_per_minute: c.saturating_mul(1000) }
    }
}

/// What is left after an answer, for `x-ratelimit-remaining-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub requests: u64,
    pub tokens: u64,
    /// Provisioned only: utilisation in percent.
    pub utilization_percent: Option<u64>,
}

/// A refusal: which limit, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub retry_after: Duration,
    pub remaining: Remaining,
}

/// One deployment's admissions. Times are whole microseconds on one clock (since this process's limiter
/// was made, or the database's unix time for a fleet), so window arithmetic is exact.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Standard: (admitted at, tokens charged, ticket id) of the last minute's admissions, oldest first.
    log: std::collections::VecDeque<(i64, u64, u64)>,
    next_id: u64,
    /// Provisioned: tokens in the meter as of `drained_at`.
    level: f64,
    drained_at: Option<i64>,
}

/// The admission state of every deployment.
#[derive(Debug)]
pub struct RateLimiter {
    states: Mutex<HashMap<DeploymentKey, State>>,
    /// Where this process's clock starts.
    origin: Instant,
    /// The fleet's database, when the state is shared there.
    shared: Option<Arc<Store>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { states: Mutex::default(), origin: Instant::now(), shared: None }
    }
}

/// An admitted request's charge; [`Ticket::settle`] corrects it to the tokens used. Dropped
/// unsettled (a client that went away), the estimate stands.
#[derive(Debug)]
pub struct Ticket {
    limiter: Arc<RateLimiter>,
    key: DeploymentKey,
    /// Standard: the admission's id in the log.
    entry: Option<u64>,
    estimate: u64,
    pub remaining: Remaining,
}

impl Ticket {
    pub fn settle(self, used: u64, now: Instant) {
        if used == self.estimate {
            return;
        }
        if let Err(e) = self.limiter.correct(&self.key, self.entry, self.estimate, used, now) {
            tracing::warn!(error = %e, "cannot correct a call's charge to what it used");
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl RateLimiter {
    /// A limiter whose state is kept in the fleet's database.
    pub fn shared(store: Arc<Store>) -> Self {
        RateLimiter { shared: Some(store), ..RateLimiter::default() }
    }

    /// Runs `f` on the deployment's state at `now` (this process's clock), or, shared, on the state in
    /// the database at the database's clock, with the row locked.
    fn with_state<T>(
        &self,
        key: &DeploymentKey,
        now: Instant,
        mut f: impl FnMut(&mut State, i64) -> T,
    ) -> Result<T, StoreError> {
        match &self.shared {
            None => {
                let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
                Ok(f(states.entry(key.clone()).or_default(), micros(now.saturating_duration_since(self.origin))))
            }
            Some(store) => store.with_admission(&shared_key(key), |text, now| {
                let mut st: State = serde_json::from_str(text).unwrap_or_default();
                let out = f(&mut st, (now * 1e6).round() as i64);
                (serde_json::to_string(&st).unwrap_or_default(), out)
            }),
        }
    }

    /// Admits and charges `estimate` tokens, or refuses.
    pub fn admit(
        self: &Arc<Self>,
        key: &DeploymentKey,
        limits: Limits,
        estimate: u64,
        now: Instant,
    ) -> Result<Result<Ticket, Refusal>, StoreError> {
        match limits {
            Limits::Standard { requests_per_window, tokens_per_minute } => self.with_state(key, now, |st, now| {
                prune(st, now);
                let window_start = now - micros(WINDOW);
                let recent: Vec<i64> = st.log.iter().map(|e| e.0).filter(|t| *t > window_start).collect();
                let tokens_minute: u64 = st.log.iter().map(|e| e.1).sum();
                let remaining = |extra_req: u64, extra_tok: u64| Remaining {
                    requests: requests_per_window.saturating_sub(recent.len() as u64 + extra_req),
                    tokens: tokens_per_minute.saturating_sub(tokens_minute + extra_tok),
                    utilization_percent: None,
                };
                if recent.len() as u64 >= requests_per_window {
                    // The oldest of the last 10 seconds' requests leaves the window first.
                    let retry = recent.first().map_or(WINDOW, |t| until(t + micros(WINDOW), now));
                    return Err(Refusal {
                        message: format!(
                            "Requests to this deployment have exceeded the request rate limit of {} requests per 10 seconds ({} per minute).",
                            requests_per_window,
                            requests_per_window * WINDOWS_PER_MINUTE
                        ),
                        retry_after: retry.max(Duration::from_millis(1)),
                        remaining: remaining(0, 0),
                    });
                }
                if tokens_minute + estimate > tokens_per_minute {
                    // The earliest time enough admissions have left the minute.
                    let mut freed = 0;
                    let mut retry = None;
                    for (t, tokens, _) in &st.log {
                        freed += tokens;
                        if tokens_minute - freed + estimate <= tokens_per_minute {
                            retry = Some(until(t + micros(MINUTE), now));
                            break;
                        }
                    }
                    let fits_ever = estimate <= tokens_per_minute;
                    return Err(Refusal {
                        message: if fits_ever {
                            format!("Requests to this deployment have exceeded the token rate limit of {tokens_per_minute} tokens per minute; this request is estimated at {estimate} tokens (prompt + max_tokens).")
                        } else {
                            format!("This request is estimated at {estimate} tokens (prompt + max_tokens), more than the deployment's limit of {tokens_per_minute} tokens per minute: lower max_tokens or raise the deployment's capacity.")
                        },
                        retry_after: retry.unwrap_or(MINUTE).max(Duration::from_millis(1)),
                        remaining: remaining(0, 0),
                    });
                }
                st.next_id += 1;
                let id = st.next_id;
                st.log.push_back((now, estimate, id));
                Ok(Ticket { limiter: self.clone(), key: key.clone(), entry: Some(id), estimate, remaining: remaining(1, estimate) })
            }),
            Limits::Provisioned { tokens_per_minute } => self.with_state(key, now, |st, now| {
                let rate = tokens_per_minute as f64 / 60.0;
                drain(st, rate, now);
                let full = tokens_per_minute as f64;
                let utilization = |level: f64| ((level / full.max(1.0)) * 100.0).round() as u64;
                if st.level >= full {
                    let retry = Duration::from_secs_f64(((st.level - full) / rate.max(1e-9)).max(0.001));
                    return Err(Refusal {
                        message: format!(
                            "This provisioned deployment is at {}% utilisation of its {tokens_per_minute} tokens per minute.",
                            utilization(st.level)
                        ),
                        retry_after: retry,
                        remaining: Remaining { requests: 0, tokens: 0, utilization_percent: Some(utilization(st.level)) },
                    });
                }
                st.level += estimate as f64;
                let left = (full - st.level).max(0.0) as u64;
                Ok(Ticket {
                    limiter: self.clone(),
                    key: key.clone(),
                    entry: None,
                    estimate,
                    remaining: Remaining { requests: left / estimate.max(1), tokens: left, utilization_percent: Some(utilization(st.level)) },
                })
            }),
        }
    }

    fn correct(
        &self,
        key: &DeploymentKey,
        entry: Option<u64>,
        estimate: u64,
        used: u64,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.with_state(key, now, |st, now| match entry {
            Some(id) => {
                if let Some(e) = st.log.iter_mut().find(|e| e.2 == id) {
                    e.1 = (e.1 + used).saturating_sub(estimate);
                }
            }
            None => {
                st.level = (st.level + used as f64 - estimate as f64).max(0.0);
                st.drained_at.get_or_insert(now);
            }
        })
    }

    /// What is left without charging anything (for answers refused before admission).
    pub fn remaining(&self, key: &DeploymentKey, limits: Limits, now: Instant) -> Result<Remaining, StoreError> {
        match limits {
            Limits::Standard { requests_per_window, tokens_per_minute } => self.with_state(key, now, |st, now| {
                prune(st, now);
                let window_start = now - micros(WINDOW);
                let recent = st.log.iter().filter(|e| e.0 > window_start).count() as u64;
                let tokens: u64 = st.log.iter().map(|e| e.1).sum();
                Remaining {
                    requests: requests_per_window.saturating_sub(recent),
                    tokens: tokens_per_minute.saturating_sub(tokens),
                    utilization_percent: None,
                }
            }),
            Limits::Provisioned { tokens_per_minute } => self.with_state(key, now, |st, now| {
                drain(st, tokens_per_minute as f64 / 60.0, now);
                let left = (tokens_per_minute as f64 - st.level).max(0.0) as u64;
                Remaining {
                    requests: u64::from(left > 0),
                    tokens: left,
                    utilization_percent: Some((st.level / (tokens_per_minute.max(1) as f64) * 100.0).round() as u64),
                }
            }),
        }
    }

    /// Forgets a deployment (deleted).
    pub fn forget(&self, key: &DeploymentKey) {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        if let Some(store) = &self.shared {
            if let Err(e) = store.forget_admission(&shared_key(key)) {
                tracing::warn!(error = %e, "cannot forget a deleted deployment's admissions");
            }
        }
    }
}

/// A deployment's row in `admission_state`.
fn shared_key(key: &DeploymentKey) -> String {
    format!("{}/{}/{}/{}", key.account.subscription_id, key.account.resource_group, key.account.account, key.name)
}

/// The time from `now` until `at` (zero if past).
fn until(at: i64, now: i64) -> Duration {
    Duration::from_micros(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// Drops admissions older than a minute.
fn prune(st: &mut State, now: i64) {
    let cutoff = now - micros(MINUTE);
    while st.log.front().is_some_and(|e| e.0 <= cutoff) {
        st.log.pop_front();
    }
}

fn drain(st: &mut State, rate: f64, now: i64) {
    if let Some(t) = st.drained_at {
        let dt = now.saturating_sub(t).max(0) as f64 / 1e6;
        st.level = (st.level - dt * rate).max(0.0);
    }
    st.drained_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DeploymentKey {
        DeploymentKey::new(
            &berth_store::AccountKey { subscription_id: "s".into(), resource_group: "g".into(), account: "a".into() },
            "d",
        )
    }

    #[test]
    fn standard_windows_limit_requests_and_tokens() {
        let rl = Arc::new(RateLimiter::default());
        let t0 = Instant::now();
        let limits = Limits::standard(2); // 2 requests per 10 s, 2,000 tokens per minute
        let a = rl.admit(&key(), limits, 600, t0).unwrap().unwrap();
        assert_eq!(a.remaining, Remaining { requests: 1, tokens: 1400, utilization_percent: None });
        rl.admit(&key(), limits, 600, t0 + Duration::from_secs(1)).unwrap().unwrap();
        let r = rl.admit(&key(), limits, 10, t0 + Duration::from_secs(2)).unwrap().unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(8));
        assert!(r.message.contains("request rate limit of 2 requests per 10 seconds"));
        // Ten seconds after the first: one request slot free again, tokens still counted over the minute.
        rl.admit(&key(), limits, 600, t0 + Duration::from_secs(10)).unwrap().unwrap();
        let r = rl.admit(&key(), limits, 600, t0 + Duration::from_secs(11)).unwrap().unwrap_err();
        assert!(r.message.contains("token rate limit of 2000 tokens per minute"), "{}", r.message);
        assert_eq!(r.retry_after, Duration::from_secs(49)); // the first admission leaves the minute at 60 s
                                                            // Correcting the first request to what it used frees its tokens at once.
        a.settle(100, t0 + Duration::from_secs(12));
        rl.admit(&key(), limits, 600, t0 + Duration::from_secs(12)).unwrap().unwrap();
        // An estimate over the whole minute's budget can never pass.
        let r = rl.admit(&key(), limits, 5000, t0 + Duration::from_secs(70)).unwrap().unwrap_err();
        assert!(r.message.contains("lower max_tokens"));
    }

    #[test]
    fn provisioned_utilisation_drains_at_the_ptu_rate() {
        let rl = Arc::new(RateLimiter::default());
        let t0 = Instant::now();
        let limits = Limits::Provisioned { tokens_per_minute: 6000 }; // 100 tokens/s
        rl.admit(&key(), limits, 5000, t0).unwrap().unwrap();
        let t = rl.admit(&key(), limits, 2000, t0).unwrap().unwrap(); // under 100 % before it: admitted, now 117 %
        assert_eq!(t.remaining.utilization_percent, Some(117));
        let r = rl.admit(&key(), limits, 10, t0 + Duration::from_secs(1)).unwrap().unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(9)); // 900 tokens over at 100 tokens/s
        rl.admit(&key(), limits, 10, t0 + Duration::from_secs(11)).unwrap().unwrap();
    }
}
