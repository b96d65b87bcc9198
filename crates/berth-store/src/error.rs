#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {}", crate::postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot open database at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the database was written by a newer Berth (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("stored JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("column {index} of a stored row cannot be read: {reason}")]
    Column { index: usize, reason: String },
    #[error("a query that always answers one row answered none")]
    NoRow,
    #[error("a value contains a NUL character, which no stored text may hold")]
    Nul,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
