#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open database at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the database was written by a newer Berth (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("stored JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
