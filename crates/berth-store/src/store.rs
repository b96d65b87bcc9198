use crate::error::{Result, StoreError};
use crate::migrations::MIGRATIONS;
use crate::p;
use crate::postgres::PgPool;
use crate::rows::*;
use crate::sql::{Db, Lite, SqlRow};
use rusqlite::Connection;
use std::path::Path;
use std::sync::Mutex;

/// The database: SQLite (one file, the default) or PostgreSQL (shared by replicas). Calls are short,
/// synchronous statements or transactions; callers never hold one across an `.await`.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("postgres", &self.is_postgres()).finish_non_exhaustive()
    }
}

/// Serialises migrations of replicas that start together on one PostgreSQL database.
const MIGRATION_LOCK: i64 = 0x6265_7274_6801;

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")?;
        Self::migrate_sqlite(conn)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        Self::migrate_sqlite(conn)
    }

    /// Connects to PostgreSQL (`postgres://user:password@host/db`) and applies pending migrations,
    /// one replica at a time.
    pub fn open_postgres(url: &str) -> Result<Self> {
        let store = Store { backend: Backend::Postgres(PgPool::connect(url)?) };
        store.tx(|c| {
            c.query_one("SELECT pg_advisory_xact_lock(?1)", p![MIGRATION_LOCK], |_| Ok(()))?;
            c.batch(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'berth_nocase') THEN
                         CREATE COLLATION berth_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
                     END IF;
                 END $$;
                 CREATE TABLE IF NOT EXISTS berth_schema (version BIGINT NOT NULL);",
            )?;
            let version: Option<i64> = c.query_opt("SELECT version FROM berth_schema", p![], |r| r.get(0))?;
            let version = version.unwrap_or(0);
            let known = MIGRATIONS.len() as i64;
            if version > known {
                return Err(StoreError::TooNew { found: version, known });
            }
            for sql in MIGRATIONS.iter().skip(version as usize) {
                c.batch(&crate::sql::migration_to_postgres(sql))?;
            }
            c.execute("DELETE FROM berth_schema", p![])?;
            c.execute("INSERT INTO berth_schema (version) VALUES (?1)", p![known])?;
            Ok(())
        })?;
        Ok(store)
    }

    pub(crate) fn migrate_sqlite(mut conn: Connection) -> Result<Self> {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store { backend: Backend::Sqlite(Mutex::new(conn)) })
    }

    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Runs `f` on a connection, each statement on its own.
    pub(crate) fn db<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            // A panic while holding the lock cannot leave SQLite inconsistent: keep going.
            Backend::Sqlite(conn) => f(&mut Lite(&conn.lock().unwrap_or_else(|p| p.into_inner()))),
            Backend::Postgres(pool) => pool.with(|c| f(c)),
        }
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`, rolled back otherwise. On PostgreSQL
    /// the transaction is serializable and run again (a few times) when it lost a race with another
    /// replica, so `f` must only touch the database.
    pub(crate) fn tx<T>(&self, f: impl FnMut(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.tx_at("SERIALIZABLE", f)
    }

    fn tx_at<T>(&self, isolation: &str, mut f: impl FnMut(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let tx = conn.transaction()?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(pool) => pool.with(|c| {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    c.batch(&format!("BEGIN ISOLATION LEVEL {isolation}"))?;
                    let out = f(c).and_then(|out| c.batch("COMMIT").map(|()| out));
                    match out {
                        Ok(out) => return Ok(out),
                        Err(e) => {
                            let _ = c.batch("ROLLBACK");
                            if !(e.is_retryable() && attempt < 10) {
                                return Err(e);
                            }
                            std::thread::sleep(std::time::Duration::from_millis(2 * attempt));
                        }
                    }
                }
            }),
        }
    }

    // ---- tenants, subscriptions, resource groups, accounts -------------------------------------

    /// Creates the first tenant, subscription, resource group and account in one transaction.
    pub fn bootstrap(
        &self,
        tenant: &TenantRow,
        sub: &SubscriptionRow,
        rg: &ResourceGroupRow,
        account: &AccountRow,
    ) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO tenants (id, display_name, created_at) VALUES (?1, ?2, ?3)",
                p![tenant.id, tenant.display_name, tenant.created_at],
            )?;
            c.execute(
                "INSERT INTO subscriptions (id, tenant_id, display_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                p![sub.id, sub.tenant_id, sub.display_name, sub.created_at],
            )?;
            c.execute(
                "INSERT INTO resource_groups (subscription_id, name, location, created_at) VALUES (?1, ?2, ?3, ?4)",
                p![rg.subscription_id, rg.name, rg.location, rg.created_at],
            )?;
            insert_account(c, account)
        })
    }

    pub fn tenants(&self) -> Result<Vec<TenantRow>> {
        self.db(|c| {
            c.query("SELECT id, display_name, created_at FROM tenants ORDER BY created_at, id", p![], |r| {
                Ok(TenantRow { id: r.get(0)?, display_name: r.get(1)?, created_at: r.get(2)? })
            })
        })
    }

    pub fn subscriptions(&self) -> Result<Vec<SubscriptionRow>> {
        self.db(|c| {
            c.query(
                "SELECT id, tenant_id, display_name, created_at FROM subscriptions ORDER BY created_at, id",
                p![],
                |r| {
                    Ok(SubscriptionRow {
                        id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        display_name: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
        })
    }

    pub fn account(&self, key: &AccountKey) -> Result<Option<AccountRow>> {
        self.db(|c| {
            c.query_opt(
                &format!("{ACCOUNT_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND name = ?3"),
                p![key.subscription_id, key.resource_group, key.account],
                account_from_row,
            )
        })
    }

    pub fn accounts_in_subscription(&self, subscription_id: &str) -> Result<Vec<AccountRow>> {
        self.db(|c| {
            c.query(
                &format!("{ACCOUNT_SELECT} WHERE subscription_id = ?1 ORDER BY created_at, name"),
                p![subscription_id],
                account_from_row,
            )
        })
    }

    pub fn all_accounts(&self) -> Result<Vec<AccountRow>> {
        self.db(|c| c.query(&format!("{ACCOUNT_SELECT} ORDER BY created_at, name"), p![], account_from_row))
    }

    /// The account with a key whose digest is `digest`.
    pub fn account_by_key_digest(&self, digest: &str) -> Result<Option<AccountRow>> {
        self.db(|c| {
            c.query_opt(
                &format!("{ACCOUNT_SELECT} WHERE key1_digest = ?1 OR key2_digest = ?1"),
                p![digest],
                account_from_row,
            )
        })
    }

    // ---- access tokens ----------------------------------------------------------------------

    pub fn insert_access_token(&self, row: &AccessTokenRow) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO access_tokens (token, tenant_id, principal, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                p![row.token, row.tenant_id, row.principal, row.expires_at, row.created_at],
            )
        })?;
        Ok(())
    }

    /// The token recorded under `token` (a digest, for the tokens Berth mints).
    pub fn access_token(&self, token: &str) -> Result<Option<AccessTokenRow>> {
        self.db(|c| {
            c.query_opt(
                "SELECT token, tenant_id, principal, expires_at, created_at FROM access_tokens WHERE token = ?1",
                p![token],
                |r| {
                    Ok(AccessTokenRow {
                        token: r.get(0)?,
                        tenant_id: r.get(1)?,
                        principal: r.get(2)?,
                        expires_at: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Replaces the recorded value of a token (to move from the token to its digest).
    pub fn rename_access_token(&self, old: &str, new: &str) -> Result<()> {
        self.db(|c| c.execute("UPDATE access_tokens SET token = ?2 WHERE token = ?1", p![old, new]))?;
        Ok(())
    }

    pub fn access_token_values(&self) -> Result<Vec<String>> {
        self.db(|c| c.query("SELECT token FROM access_tokens", p![], |r| r.get(0)))
    }

    /// Forgets tokens that expired before `now`.
    pub fn purge_access_tokens(&self, now: &str) -> Result<usize> {
        self.db(|c| c.execute("DELETE FROM access_tokens WHERE expires_at < ?1", p![now]))
    }

    // ---- base models and models --------------------------------------------------------------

    pub fn upsert_base_model(&self, row: &BaseModelRow) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO base_models (name, path, format, architecture, context_length, created_at, engine_pool, served_model)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(name) DO UPDATE SET path = excluded.path, format = excluded.format,
                     architecture = excluded.architecture, context_length = excluded.context_length,
                     engine_pool = excluded.engine_pool, served_model = excluded.served_model",
                p![
                    row.name,
                    row.path,
                    row.format,
                    row.architecture,
                    row.context_length,
                    row.created_at,
                    row.engine_pool,
                    row.served_model
                ],
            )
        })?;
        Ok(())
    }

    pub fn base_model(&self, name: &str) -> Result<Option<BaseModelRow>> {
        self.db(|c| c.query_opt(&format!("{BASE_SELECT} WHERE name = ?1"), p![name], base_from_row))
    }

    pub fn base_models(&self) -> Result<Vec<BaseModelRow>> {
        self.db(|c| c.query(&format!("{BASE_SELECT} ORDER BY name"), p![], base_from_row))
    }

    pub fn insert_model(&self, row: &ModelRow) -> Result<()> {
        self.db(|c| insert_model(c, row))
    }

    pub fn model(&self, account: &AccountKey, id: &str) -> Result<Option<ModelRow>> {
        self.db(|c| {
            c.query_opt(
                &format!(
                    "{MODEL_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4"
                ),
                p![account.subscription_id, account.resource_group, account.account, id],
                model_from_row,
            )
        })
    }

    pub fn models(&self, account: &AccountKey) -> Result<Vec<ModelRow>> {
        self.db(|c| {
            c.query(
                &format!("{MODEL_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 ORDER BY created_at, id"),
                p![account.subscription_id, account.resource_group, account.account],
                model_from_row,
            )
        })
    }

    // ---- deployments and operations ----------------------------------------------------------

    /// Writes the deployment and its new operation together.
    pub fn put_deployment(&self, row: &DeploymentRow, op: &OperationRow) -> Result<()> {
        let tags = serde_json::to_string(&row.tags)?;
        self.tx(|c| {
            c.execute(
                "INSERT INTO deployments (subscription_id, resource_group, account, name, sku_name, sku_capacity, model_format,
                     model_name, model_version, provisioning_state, error_code, error_message, etag, tags, created_by,
                     created_at, modified_by, modified_at, operation_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
                 ON CONFLICT(subscription_id, resource_group, account, name) DO UPDATE SET
                     sku_name = excluded.sku_name, sku_capacity = excluded.sku_capacity, model_format = excluded.model_format,
                     model_name = excluded.model_name, model_version = excluded.model_version,
                     provisioning_state = excluded.provisioning_state, error_code = excluded.error_code,
                     error_message = excluded.error_message, etag = excluded.etag, tags = excluded.tags,
                     modified_by = excluded.modified_by, modified_at = excluded.modified_at, operation_id = excluded.operation_id",
                p![
                    row.account.subscription_id, row.account.resource_group, row.account.account, row.name, row.sku_name,
                    row.sku_capacity, row.model_format, row.model_name, row.model_version, row.provisioning_state,
                    row.error_code, row.error_message, row.etag, tags, row.created_by,
                    row.created_at, row.modified_by, row.modified_at, row.operation_id
                ],
            )?;
            insert_operation(c, op)?;
            crate::metering::track_hosting(c, row)
        })
    }

    pub fn deployment(&self, account: &AccountKey, name: &str) -> Result<Option<DeploymentRow>> {
        self.db(|c| deployment_in(c, account, name))
    }

    pub fn deployments(&self, account: &AccountKey) -> Result<Vec<DeploymentRow>> {
        self.db(|c| {
            c.query(
                &format!("{DEPLOYMENT_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 ORDER BY created_at, name"),
                p![account.subscription_id, account.resource_group, account.account],
                deployment_from_row,
            )
        })
    }

    pub fn all_deployments(&self) -> Result<Vec<DeploymentRow>> {
        self.db(|c| c.query(&format!("{DEPLOYMENT_SELECT} ORDER BY created_at, name"), p![], deployment_from_row))
    }

    /// Ends provisioning: sets the deployment's state and closes its operation, only if the deployment
    /// is still on that operation (a later PUT or DELETE wins). Returns whether it applied.
    pub fn finish_provisioning(
        &self,
        account: &AccountKey,
        name: &str,
        operation_id: &str,
        state: &str,
        error: Option<(&str, &str)>,
        now: &str,
    ) -> Result<bool> {
        let (code, message) = error.map(|(c, m)| (Some(c), Some(m))).unwrap_or((None, None));
        let op_status = if state == "Succeeded" { "Succeeded" } else { "Failed" };
        self.tx(|c| {
            let n = c.execute(
                "UPDATE deployments SET provisioning_state = ?1, error_code = ?2, error_message = ?3
                 WHERE subscription_id = ?4 AND resource_group = ?5 AND account = ?6 AND name = ?7 AND operation_id = ?8",
                p![state, code, message, account.subscription_id, account.resource_group, account.account, name, operation_id],
            )?;
            c.execute(
                "UPDATE operations SET status = ?1, end_time = ?2, error_code = ?3, error_message = ?4 WHERE id = ?5 AND status = 'InProgress'",
                p![op_status, now, code, message, operation_id],
            )?;
            Ok(n == 1)
        })
    }

    /// Deletes a deployment and closes its hosting at `now` (RFC 3339); with `reason`, records that
    /// Berth deleted it itself. One transaction; returns the removed row.
    pub fn delete_deployment(
        &self,
        account: &AccountKey,
        name: &str,
        now: &str,
        reason: Option<&str>,
    ) -> Result<Option<DeploymentRow>> {
        self.tx(|c| {
            let row = deployment_in(c, account, name)?;
            if let Some(row) = &row {
                c.execute(
                    "DELETE FROM deployments WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND name = ?4",
                    p![account.subscription_id, account.resource_group, account.account, name],
                )?;
                crate::metering::close_hosting(c, account, name, now)?;
                if let Some(reason) = reason {
                    c.execute(
                        "INSERT INTO deployment_deletions (subscription_id, resource_group, account, deployment, model, reason, deleted_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        p![account.subscription_id, account.resource_group, account.account, row.name, row.model_name, reason, now],
                    )?;
                }
            }
            Ok(row)
        })
    }

    pub fn operation(&self, id: &str) -> Result<Option<OperationRow>> {
        self.db(|c| {
            c.query_opt(
                "SELECT id, subscription_id, location, resource_id, status, start_time, end_time, error_code, error_message
                 FROM operations WHERE id = ?1",
                p![id],
                |r| {
                    Ok(OperationRow {
                        id: r.get(0)?,
                        subscription_id: r.get(1)?,
                        location: r.get(2)?,
                        resource_id: r.get(3)?,
                        status: r.get(4)?,
                        start_time: r.get(5)?,
                        end_time: r.get(6)?,
                        error_code: r.get(7)?,
                        error_message: r.get(8)?,
                    })
                },
            )
        })
    }

    pub fn insert_operation(&self, op: &OperationRow) -> Result<()> {
        self.db(|c| insert_operation(c, op))
    }
}

fn deployment_in(c: &mut dyn Db, account: &AccountKey, name: &str) -> Result<Option<DeploymentRow>> {
    c.query_opt(
        &format!(
            "{DEPLOYMENT_SELECT} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND name = ?4"
        ),
        p![account.subscription_id, account.resource_group, account.account, name],
        deployment_from_row,
    )
}

pub(crate) fn insert_account(c: &mut dyn Db, a: &AccountRow) -> Result<()> {
    c.execute(
        "INSERT INTO accounts (subscription_id, resource_group, name, location, kind, sku, key1_digest, key1_sealed,
         key2_digest, key2_sealed, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        p![
            a.key.subscription_id,
            a.key.resource_group,
            a.key.account,
            a.location,
            a.kind,
            a.sku,
            a.key1.digest,
            a.key1.sealed,
            a.key2.digest,
            a.key2.sealed,
            a.created_at
        ],
    )?;
    Ok(())
}

pub(crate) fn insert_model(c: &mut dyn Db, row: &ModelRow) -> Result<()> {
    c.execute(
        "INSERT INTO models (subscription_id, resource_group, account, id, base_model, kind, path, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        p![
            row.account.subscription_id,
            row.account.resource_group,
            row.account.account,
            row.id,
            row.base_model,
            row.kind,
            row.path,
            row.created_at
        ],
    )?;
    Ok(())
}

fn insert_operation(c: &mut dyn Db, op: &OperationRow) -> Result<()> {
    c.execute(
        "INSERT INTO operations (id, subscription_id, location, resource_id, status, start_time, end_time, error_code, error_message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        p![op.id, op.subscription_id, op.location, op.resource_id, op.status, op.start_time, op.end_time, op.error_code, op.error_message],
    )?;
    Ok(())
}

const ACCOUNT_SELECT: &str =
    "SELECT subscription_id, resource_group, name, location, kind, sku, key1_digest, key1_sealed, key2_digest, key2_sealed, created_at FROM accounts";
const BASE_SELECT: &str =
    "SELECT name, path, format, architecture, context_length, created_at, engine_pool, served_model FROM base_models";
const MODEL_SELECT: &str =
    "SELECT subscription_id, resource_group, account, id, base_model, kind, path, created_at FROM models";
const DEPLOYMENT_SELECT: &str =
    "SELECT subscription_id, resource_group, account, name, sku_name, sku_capacity, model_format,
    model_name, model_version, provisioning_state, error_code, error_message, etag, tags, created_by, created_at,
    modified_by, modified_at, operation_id FROM deployments";

pub(crate) fn account_key(r: &SqlRow) -> Result<AccountKey> {
    Ok(AccountKey { subscription_id: r.get(0)?, resource_group: r.get(1)?, account: r.get(2)? })
}

fn account_from_row(r: &SqlRow) -> Result<AccountRow> {
    Ok(AccountRow {
        key: account_key(r)?,
        location: r.get(3)?,
        kind: r.get(4)?,
        sku: r.get(5)?,
        key1: StoredKey { digest: r.get(6)?, sealed: r.get(7)? },
        key2: StoredKey { digest: r.get(8)?, sealed: r.get(9)? },
        created_at: r.get(10)?,
    })
}

fn base_from_row(r: &SqlRow) -> Result<BaseModelRow> {
    Ok(BaseModelRow {
        name: r.get(0)?,
        path: r.get(1)?,
        format: r.get(2)?,
        architecture: r.get(3)?,
        context_length: r.get(4)?,
        created_at: r.get(5)?,
        engine_pool: r.get(6)?,
        served_model: r.get(7)?,
    })
}

fn model_from_row(r: &SqlRow) -> Result<ModelRow> {
    Ok(ModelRow {
        account: account_key(r)?,
        id: r.get(3)?,
        base_model: r.get(4)?,
        kind: r.get(5)?,
        path: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn deployment_from_row(r: &SqlRow) -> Result<DeploymentRow> {
    Ok(DeploymentRow {
        account: account_key(r)?,
        name: r.get(3)?,
        sku_name: r.get(4)?,
        sku_capacity: r.get(5)?,
        model_format: r.get(6)?,
        model_name: r.get(7)?,
        model_version: r.get(8)?,
        provisioning_state: r.get(9)?,
        error_code: r.get(10)?,
        error_message: r.get(11)?,
        etag: r.get(12)?,
        tags: r.json(13)?,
        created_by: r.get(14)?,
        created_at: r.get(15)?,
        modified_by: r.get(16)?,
        modified_at: r.get(17)?,
        operation_id: r.get(18)?,
    })
}
