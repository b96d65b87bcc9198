//! One SQL surface over both databases. The store's queries are written once, in the dialect both
//! SQLite and PostgreSQL accept, with numbered parameters (`?1`); [`Db`] runs them on either.
//! Values cross it as [`Value`]s, so no query knows which database answers it.

use crate::error::{Result, StoreError};

/// A value bound to a parameter or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What can be bound to a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            // SQLite stores a REAL that happens to be whole as an integer.
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub struct SqlRow {
    pub(crate) values: Vec<Value>,
}

impl SqlRow {
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T> {
        let value = self.values.get(index).ok_or(StoreError::Column { index, reason: "no such column".into() })?;
        T::from_value(value).map_err(|reason| StoreError::Column { index, reason })
    }

    /// A column holding JSON text.
    pub fn json<T: serde::de::DeserializeOwned>(&self, index: usize) -> Result<T> {
        Ok(serde_json::from_str(&self.get::<String>(index)?)?)
    }
}

/// A connection (or a transaction on one) of either database.
pub trait Db {
    /// Runs one statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize>;
    /// Runs one query; returns every row.
    fn rows(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<SqlRow>>;
    /// Runs statements without parameters, separated by `;`.
    fn batch(&mut self, sql: &str) -> Result<()>;
}

impl dyn Db + '_ {
    pub fn query<T>(&mut self, sql: &str, params: &[&dyn ToValue], f: impl Fn(&SqlRow) -> Result<T>) -> Result<Vec<T>> {
        self.rows(sql, params)?.iter().map(f).collect()
    }

    pub fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl Fn(&SqlRow) -> Result<T>,
    ) -> Result<Option<T>> {
        self.rows(sql, params)?.first().map(f).transpose()
    }

    pub fn query_one<T>(&mut self, sql: &str, params: &[&dyn ToValue], f: impl Fn(&SqlRow) -> Result<T>) -> Result<T> {
        self.query_opt(sql, params, f)?.ok_or(StoreError::NoRow)
    }
}

/// Parameters of a statement: `p![a, b.c, Some(1)]`.
#[macro_export]
#[doc(hidden)]
macro_rules! p {
    ($($x:expr),* $(,)?) => { &[$(&$x as &dyn $crate::sql::ToValue),*] as &[&dyn $crate::sql::ToValue] };
}

pub(crate) struct Lite<'a>(pub(crate) &'a rusqlite::Connection);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// The parameters as values. Text with a NUL character is refused on both databases alike
/// (PostgreSQL's text cannot hold one), as [`StoreError::Nul`], a client's mistake to its callers.
pub(crate) fn values(params: &[&dyn ToValue]) -> Result<Vec<Value>> {
    params
        .iter()
        .map(|p| match p.to_value() {
            Value::Text(t) if t.contains('\0') => Err(StoreError::Nul),
            v => Ok(v),
        })
        .collect()
}

impl Db for Lite<'_> {
    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(values(params)?))?)
    }

    fn rows(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<SqlRow>> {
        use rusqlite::types::ValueRef;
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(values(params)?))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(SqlRow { values });
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }
}

/// The store's SQL for PostgreSQL: `?N` becomes `$N` (no query has a `?` inside a string literal).
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A migration written for SQLite, in PostgreSQL's types: integers are 64-bit, reals double, and
/// names compare without case as SQLite's `NOCASE` does.
pub(crate) fn migration_to_postgres(sql: &str) -> String {
    sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        .replace(" INTEGER", " BIGINT")
        .replace(" REAL", " DOUBLE PRECISION")
        .replace("COLLATE NOCASE", "COLLATE berth_nocase")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollars_and_nothing_else_moves() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND (CAST(?12 AS TEXT) IS NULL OR c = ?12) -- ?"),
            "SELECT a FROM t WHERE b = $1 AND (CAST($12 AS TEXT) IS NULL OR c = $12) -- ?"
        );
    }

    #[test]
    fn migrations_take_postgres_types() {
        let pg = migration_to_postgres(
            "CREATE TABLE h (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, x REAL, s TEXT COLLATE NOCASE);",
        );
        assert_eq!(
            pg,
            "CREATE TABLE h (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, x DOUBLE PRECISION, s TEXT COLLATE berth_nocase);"
        );
    }
}
