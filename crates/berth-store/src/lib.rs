//! Berth's persistent state: one SQLite database in the data directory, or a PostgreSQL database that
//! several replicas share.
//!
//! Principal types: [`Store`] (a connection, migrated on open) and the row types in [`rows`]. Every
//! write is a single statement or a transaction, so a crash never leaves half a resource behind.
//! This crate knows nothing of HTTP, models or the engine.

mod accounts;
mod copy;
mod error;
mod fine_tuning;
mod fleet;
mod identity;
mod metering;
mod migrations;
mod minutes;
mod pools;
mod postgres;
pub mod rows;
pub mod sql;
mod store;

pub use accounts::{DeleteRefusal, DeletedAccount};
pub use error::StoreError;
pub use fine_tuning::JobEnd;
pub use minutes::{MinuteRow, MinuteSample, TTFT_BUCKETS_MS};
pub use postgres::{create_database, with_database};
pub use rows::*;
pub use store::Store;

#[cfg(test)]
mod tests;
