//! Berth's persistent state: one SQLite database in the data directory.
//!
//! Principal types: [`Store`] (a connection, migrated on open) and the row types in [`rows`]. Every
//! write is a single statement or a transaction, so a crash never leaves half a resource behind.
//! This crate knows nothing of HTTP, models or the engine.

mod accounts;
mod error;
mod fine_tuning;
mod identity;
mod metering;
mod migrations;
pub mod rows;
mod store;

pub use accounts::{DeleteRefusal, DeletedAccount};
pub use error::StoreError;
pub use fine_tuning::JobEnd;
pub use rows::*;
pub use store::Store;

#[cfg(test)]
mod tests;
