//! Berth's time. Everything that stamps or compares wall-clock times reads [`now`], which a test build
//! of the server (`berth serve --test-clock`) can move forward, so that rules spanning days (idle
//! deletion, Developer deployments' end, hosting hours) are tested in seconds.

use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::atomic::{AtomicI64, Ordering};

static OFFSET_SECONDS: AtomicI64 = AtomicI64::new(0);

/// The current time, moved by [`advance_clock`].
pub fn now() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(OFFSET_SECONDS.load(Ordering::Acquire))
}

/// Moves Berth's clock forward (tests only: the server exposes it behind `--test-clock`).
pub fn advance_clock(seconds: i64) -> DateTime<Utc> {
    OFFSET_SECONDS.fetch_add(seconds.max(0), Ordering::AcqRel);
    now()
}

/// Current time as RFC 3339 UTC with a `Z` (what ARM and our rows use).
pub fn now_rfc3339() -> String {
    now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn unix_now() -> i64 {
    now().timestamp()
}

pub(crate) fn rfc3339_in(seconds: i64) -> String {
    (now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn unix_of(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok().map(|t| t.timestamp())
}

pub fn rfc3339_of(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}
