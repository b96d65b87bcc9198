//! Each deployment's recent minutes: calls, tokens, rate-limit refusals and time to first token, added
//! to by every replica in one statement, read back for the portal's last-hour charts.

use crate::error::Result;
use crate::p;
use crate::rows::AccountKey;
use crate::sql::ToValue;
use crate::Store;

/// Upper bounds (milliseconds) of the time-to-first-token buckets; the last is open.
pub const TTFT_BUCKETS_MS: [f64; 12] =
    [50.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, f64::INFINITY];

/// One minute of one deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MinuteRow {
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub requests: i64,
    pub tokens: i64,
    pub rate_limited: i64,
    /// Calls per time-to-first-token bucket.
    pub ttft: [i64; 12],
}

impl MinuteRow {
    /// The bucket bound under which `q` (0 to 1) of the calls got their first token, if any did.
    pub fn ttft_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: i64 = self.ttft.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as i64;
        let mut seen = 0;
        for (count, bound) in self.ttft.iter().zip(TTFT_BUCKETS_MS) {
            seen += count;
            if seen >= want {
                return Some(if bound.is_finite() { bound } else { TTFT_BUCKETS_MS[10] });
            }
        }
        None
    }
}

/// What one call adds to its minute.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MinuteSample {
    pub requests: i64,
    pub tokens: i64,
    pub rate_limited: i64,
    /// Its time to first token, when it produced one.
    pub ttft_ms: Option<f64>,
}

fn bucket(ttft_ms: f64) -> usize {
    TTFT_BUCKETS_MS.iter().position(|b| ttft_ms <= *b).unwrap_or(TTFT_BUCKETS_MS.len() - 1)
}

impl Store {
    /// Adds a finished call (`tokens`, and its time to first token when it produced one) or a refused
    /// one (`rate_limited`) to its deployment's minute.
    pub fn add_minute(&self, account: &AccountKey, deployment: &str, minute: i64, add: MinuteSample) -> Result<()> {
        let mut ttft = [0i64; 12];
        if let Some(ms) = add.ttft_ms {
            ttft[bucket(ms)] = 1;
        }
        let columns = (0..12).map(|i| format!("ttft_{i}")).collect::<Vec<_>>().join(", ");
        let marks = (9..=20).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let sums = (0..12)
            .map(|i| format!("ttft_{i} = deployment_minutes.ttft_{i} + excluded.ttft_{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO deployment_minutes (subscription_id, resource_group, account, deployment, minute, requests, tokens,
                 rate_limited, {columns})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {marks})
             ON CONFLICT (subscription_id, resource_group, account, deployment, minute) DO UPDATE SET
                 requests = deployment_minutes.requests + excluded.requests,
                 tokens = deployment_minutes.tokens + excluded.tokens,
                 rate_limited = deployment_minutes.rate_limited + excluded.rate_limited, {sums}"
        );
        let mut params: Vec<&dyn ToValue> = vec![
            &account.subscription_id,
            &account.resource_group,
            &account.account,
            &deployment,
            &minute,
            &add.requests,
            &add.tokens,
            &add.rate_limited,
        ];
        params.extend(ttft.iter().map(|n| n as &dyn ToValue));
        self.db(|c| c.execute(&sql, &params))?;
        Ok(())
    }

    /// A deployment's minutes from `from` (unix seconds, inclusive), oldest first.
    pub fn minutes(&self, account: &AccountKey, deployment: &str, from: i64) -> Result<Vec<MinuteRow>> {
        let columns = (0..12).map(|i| format!("ttft_{i}")).collect::<Vec<_>>().join(", ");
        self.db(|c| {
            c.query(
                &format!(
                    "SELECT minute, requests, tokens, rate_limited, {columns} FROM deployment_minutes
                     WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND deployment = ?4 AND minute >= ?5
                     ORDER BY minute"
                ),
                p![account.subscription_id, account.resource_group, account.account, deployment, from],
                |r| {
                    let mut ttft = [0i64; 12];
                    for (i, slot) in ttft.iter_mut().enumerate() {
                        *slot = r.get(4 + i)?;
                    }
                    Ok(MinuteRow { minute: r.get(0)?, requests: r.get(1)?, tokens: r.get(2)?, rate_limited: r.get(3)?, ttft })
                },
            )
        })
    }

    /// Forgets minutes before `before` (unix seconds).
    pub fn purge_minutes(&self, before: i64) -> Result<usize> {
        self.db(|c| c.execute("DELETE FROM deployment_minutes WHERE minute < ?1", p![before]))
    }
}
