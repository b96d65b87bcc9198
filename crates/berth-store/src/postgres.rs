//! PostgreSQL behind the store's synchronous API.
//!
//! The store is called from request handlers and worker threads alike, synchronously, as SQLite is.
//! `tokio-postgres` connections are driven by a small runtime of this pool's own; a call sends its
//! statement to the connection and parks its thread until the answer comes (`futures::executor`), so it
//! works on any thread, inside an async runtime or not, exactly like a call into SQLite.

use crate::error::{Result, StoreError};
use crate::sql::{to_postgres, values, Db, SqlRow, ToValue, Value};
use futures_executor::block_on;
use postgres_types::{IsNull, Kind, ToSql, Type};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use tokio_postgres::{Client, NoTls, Statement};

/// The most connections one process opens.
const MAX_CONNECTIONS: usize = 8;

pub(crate) struct PgPool {
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
    idle: Mutex<(Vec<PgConn>, usize)>,
    returned: Condvar,
}

pub(crate) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgPool {
    pub(crate) fn connect(url: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open { path: redact(url), reason: e.to_string() })?;
        let pool = PgPool {
            url: url.to_owned(),
            runtime: Some(runtime),
            idle: Mutex::new((Vec::new(), 0)),
            returned: Condvar::new(),
        };
        // Fail at start, with the reason, rather than at the first request.
        let first = pool.open()?;
        pool.idle.lock().unwrap_or_else(|p| p.into_inner()).0.push(first);
        pool.idle.lock().unwrap_or_else(|p| p.into_inner()).1 = 1;
        Ok(pool)
    }

    fn open(&self) -> Result<PgConn> {
        let url = self.url.clone();
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the pool");
        let task = runtime.spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "a PostgreSQL connection closed");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = block_on(task)
            .map_err(|e| StoreError::Open { path: redact(&self.url), reason: e.to_string() })?
            .map_err(|e| StoreError::Open { path: redact(&self.url), reason: describe(&e) })?;
        Ok(PgConn { client, statements: HashMap::new() })
    }

    /// Runs `f` on a connection of the pool (opening one if all are busy and the pool is not full).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut PgConn) -> Result<T>) -> Result<T> {
        let mut conn = self.take()?;
        let out = f(&mut conn);
        self.give_back(conn);
        out
    }

    fn take(&self) -> Result<PgConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = idle.0.pop() {
                if !conn.client.is_closed() {
                    return Ok(conn);
                }
                idle.1 -= 1;
                continue;
            }
            if idle.1 < MAX_CONNECTIONS {
                idle.1 += 1;
                drop(idle);
                return self.open().inspect_err(|_| {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).1 -= 1;
                });
            }
            idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, conn: PgConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if std::thread::panicking() || conn.client.is_closed() {
            // A connection left mid-transaction by a panic is not reused.
            idle.1 -= 1;
        } else {
            idle.0.push(conn);
        }
        self.returned.notify_one();
    }
}

impl Drop for PgPool {
    fn drop(&mut self) {
        self.idle.get_mut().unwrap_or_else(|p| p.into_inner()).0.clear();
        if let Some(runtime) = self.runtime.take() {
            // Allowed inside an async context, where a plain drop would panic.
            runtime.shutdown_background();
        }
    }
}

impl PgPool {
    /// One admission on PostgreSQL in two round trips: `BEGIN` and `SELECT ... FOR UPDATE` of the
    /// row sent together, `f` on its state and the database's clock, then `UPDATE` and `COMMIT` sent
    /// together. `Ok(None)` when the row does not exist yet (nothing written; the caller makes it).
    pub(crate) fn locked_state<T>(&self, key: &str, f: &mut dyn FnMut(&str, f64) -> (String, T)) -> Result<Option<T>> {
        const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit TO OFF";
        const READ: &str = "SELECT state, CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)
                            FROM admission_state WHERE key = ?1 FOR UPDATE";
        const WRITE: &str = "UPDATE admission_state SET state = ?2 WHERE key = ?1";
        self.with(|c| {
            let (read, write) = (c.statement(READ)?, c.statement(WRITE)?);
            let key = Value::Text(key.to_owned());
            let client = &c.client;
            let (begun, rows) = block_on(async {
                futures_util::future::join(client.batch_execute(BEGIN), client.query(&read, &[&key])).await
            });
            let rows = match begun.and(rows) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = block_on(client.batch_execute("ROLLBACK"));
                    return Err(e.into());
                }
            };
            let Some(row) = rows.first() else {
                block_on(client.batch_execute("ROLLBACK"))?;
                return Ok(None);
            };
            let (state, now): (String, f64) = (row.try_get(0)?, row.try_get(1)?);
            let (next, out) = f(&state, now);
            let next = Value::Text(next);
            let (written, committed) = block_on(async {
                futures_util::future::join(client.execute(&write, &[&key, &next]), client.batch_execute("COMMIT")).await
            });
            // A failed UPDATE aborts the transaction, and the COMMIT after it rolls back.
            written?;
            committed?;
            Ok(Some(out))
        })
    }
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A PostgreSQL error with the server's message, which `Display` leaves out.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = block_on(self.client.prepare(&to_postgres(sql)))?;
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

impl Db for PgConn {
    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        let st = self.statement(sql)?;
        let values: Vec<Value> = values(params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(block_on(self.client.execute(&st, &refs))? as usize)
    }

    fn rows(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<SqlRow>> {
        let st = self.statement(sql)?;
        let values: Vec<Value> = values(params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = block_on(self.client.query(&st, &refs))?;
        rows.iter().map(read_row).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(block_on(self.client.batch_execute(sql))?)
    }
}

fn read_row(row: &tokio_postgres::Row) -> Result<SqlRow> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *ty == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(v.into()))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else if matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME) {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else if *ty == Type::VOID {
            None
        } else {
            return Err(StoreError::Column { index: i, reason: format!("unsupported PostgreSQL type {ty}") });
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(SqlRow { values })
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // The server says which type each parameter has; a value is written in that type.
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot be sent as {ty}").into()),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        !matches!(ty.kind(), Kind::Array(_) | Kind::Composite(_))
    }

    postgres_types::to_sql_checked!();
}

impl StoreError {
    /// Whether a transaction that failed this way may succeed when run again (a serialization
    /// failure or deadlock between replicas).
    pub(crate) fn is_retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Postgres(e) => {
                matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
            }
            _ => false,
        }
    }
}

/// Creates the database `name` through `admin_url` (a role that may create databases) and returns
/// the URL of the new database. For tests and `berth db migrate-to`'s own test.
pub fn create_database(admin_url: &str, name: &str) -> Result<String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(StoreError::Open {
            path: name.into(),
            reason: "a database name is lower-case letters, digits and _".into(),
        });
    }
    let pool = PgPool::connect(admin_url)?;
    pool.with(|c| c.batch(&format!("CREATE DATABASE {name}")))?;
    Ok(with_database(admin_url, name))
}

/// `url` naming the database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
