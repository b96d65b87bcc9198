//! What the replicas of a fleet share through the database: settings they must agree on, leases on
//! the work that runs once across the fleet, and the admission state of rate limits. On SQLite (one
//! process) the same calls work and always agree with themselves.

use crate::error::Result;
use crate::p;
use crate::Store;

impl Store {
    /// The database's clock, in unix seconds: one clock for every replica, whatever theirs say.
    pub fn clock(&self) -> Result<f64> {
        if self.is_postgres() {
            self.db(|c| {
                c.query_one("SELECT CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)", p![], |r| {
                    r.get(0)
                })
            })
        } else {
            Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))
        }
    }

    /// The fleet's value of a setting: `value` if none was recorded yet (it is recorded), else the
    /// recorded one.
    pub fn agree_on(&self, name: &str, value: &str) -> Result<String> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO fleet_settings (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                p![name, value],
            )?;
            c.query_one("SELECT value FROM fleet_settings WHERE name = ?1", p![name], |r| r.get(0))
        })
    }

    /// Replaces a setting (after an operator changed it on every replica).
    pub fn set_fleet_setting(&self, name: &str, value: &str) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO fleet_settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                p![name, value],
            )
        })?;
        Ok(())
    }

    /// Takes or renews the lease `name` for `holder` until `ttl` seconds from now, if nobody else holds
    /// it unexpired. One statement each way, so two replicas never both hold it.
    pub fn hold_lease(&self, name: &str, holder: &str, ttl: f64) -> Result<bool> {
        let now = self.clock()?;
        self.db(|c| {
            let renewed = c.execute(
                "UPDATE leases SET holder = ?2, expires_at = ?4 WHERE name = ?1 AND (holder = ?2 OR expires_at < ?3)",
                p![name, holder, now, now + ttl],
            )?;
            if renewed == 1 {
                return Ok(true);
            }
            let taken = c.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                p![name, holder, now + ttl],
            )?;
            Ok(taken == 1)
        })
    }

    /// Gives a lease up (on an orderly shutdown), so that another replica takes it at once.
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.db(|c| c.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", p![name, holder]))?;
        Ok(())
    }

    /// Who holds a lease now, if anyone.
    pub fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let now = self.clock()?;
        self.db(|c| {
            c.query_opt("SELECT holder FROM leases WHERE name = ?1 AND expires_at >= ?2", p![name, now], |r| r.get(0))
        })
    }

    /// Runs `f` on the admission state of `key` (empty the first time) with the database's clock,
    /// and stores what it returns, with the row locked throughout: replicas admitting to one deployment
    /// take turns, and each sees what the one before it charged. On PostgreSQL: two round trips
    /// (begin with lock and read, then write with commit, each pair pipelined), and the commit does not
    /// wait for the disk: a crash of the database loses at most the last moments of admissions, never
    /// a resource.
    pub fn with_admission<T>(&self, key: &str, mut f: impl FnMut(&str, f64) -> (String, T)) -> Result<T> {
        if !self.is_postgres() {
            let now = self.clock()?;
            return self.tx(|c| {
                let state: Option<String> =
                    c.query_opt("SELECT state FROM admission_state WHERE key = ?1", p![key], |r| r.get(0))?;
                let (next, out) = f(state.as_deref().unwrap_or(""), now);
                c.execute(
                    "INSERT INTO admission_state (key, state) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                    p![key, next],
                )?;
                Ok(out)
            });
        }
        let pool = self.pg_pool().ok_or(crate::StoreError::NoRow)?;
        for _ in 0..3 {
            if let Some(out) = pool.locked_state(key, &mut f)? {
                return Ok(out);
            }
            self.db(|c| {
                c.execute("INSERT INTO admission_state (key, state) VALUES (?1, '') ON CONFLICT DO NOTHING", p![key])
            })?;
        }
        Err(crate::StoreError::NoRow)
    }

    /// Forgets a deployment's admission state (deleted).
    pub fn forget_admission(&self, key: &str) -> Result<()> {
        self.db(|c| c.execute("DELETE FROM admission_state WHERE key = ?1", p![key]))?;
        Ok(())
    }
}
