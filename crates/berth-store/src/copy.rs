//! `berth db migrate-to`: every row of one store copied into another (SQLite into PostgreSQL), in
//! one transaction on the target, which must be empty.

use crate::error::{Result, StoreError};
use crate::p;
use crate::sql::{ToValue, Value};
use crate::Store;

/// Every table, parents before children (foreign keys hold at each insert).
const TABLES: &[&str] = &[
    "tenants",
    "subscriptions",
    "resource_groups",
    "accounts",
    "access_tokens",
    "engine_pools",
    "base_models",
    "models",
    "deployments",
    "operations",
    "files",
    "fine_tuning_jobs",
    "fine_tuning_events",
    "fine_tuning_checkpoints",
    "fine_tuning_metrics",
    "hosting",
    "usage_hourly",
    "deployment_deletions",
    "principals",
    "role_assignments",
    "identity_secrets",
    "fleet_settings",
    "leases",
    "admission_state",
    "deployment_minutes",
];

impl Store {
    fn columns(&self, table: &str) -> Result<Vec<String>> {
        let sql = if self.is_postgres() {
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position"
        } else {
            "SELECT name FROM pragma_table_info(?1) ORDER BY cid"
        };
        self.db(|c| c.query(sql, p![table], |r| r.get(0)))
    }

    /// Copies every row into `target` (which must hold no rows) in one transaction; returns how many
    /// rows each table had. Both stores are at the same schema version (both were migrated on open).
    pub fn copy_into(&self, target: &Store) -> Result<Vec<(String, usize)>> {
        let mut plan = Vec::new();
        for table in TABLES {
            let columns = self.columns(table)?;
            let theirs = target.columns(table)?;
            if columns.iter().any(|c| !theirs.contains(c)) {
                return Err(StoreError::Open {
                    path: (*table).into(),
                    reason: format!("the target's table {table} has columns {theirs:?}, the source's {columns:?}"),
                });
            }
            let list = columns.join(", ");
            let rows = self.db(|c| c.rows(&format!("SELECT {list} FROM {table}"), p![]))?;
            plan.push((*table, list, columns.len(), rows));
        }
        target.tx(|c| {
            for (table, _, _, _) in &plan {
                let n: i64 = c.query_one(&format!("SELECT COUNT(*) FROM {table}"), p![], |r| r.get(0))?;
                if n > 0 && !matches!(*table, "leases" | "admission_state") {
                    return Err(StoreError::Open {
                        path: (*table).into(),
                        reason: format!("the target database is not empty: {table} has {n} rows"),
                    });
                }
            }
            c.execute("DELETE FROM leases", p![])?;
            c.execute("DELETE FROM admission_state", p![])?;
            for (table, list, width, rows) in &plan {
                let marks = (1..=*width).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                let sql = format!("INSERT INTO {table} ({list}) VALUES ({marks})");
                for row in rows {
                    let params: Vec<&dyn ToValue> = row.values.iter().map(|v| v as &dyn ToValue).collect();
                    c.execute(&sql, &params)?;
                }
            }
            Ok(())
        })?;
        if target.is_postgres() {
            // Identity columns continue after the copied ids.
            target.db(|c| {
                c.query_one(
                    "SELECT setval(pg_get_serial_sequence('hosting', 'id'), COALESCE((SELECT MAX(id) FROM hosting), 0) + 1, false)",
                    p![],
                    |r| r.get::<Value>(0),
                )
            })?;
        }
        Ok(plan.into_iter().map(|(t, _, _, rows)| (t.to_owned(), rows.len())).collect())
    }
}
