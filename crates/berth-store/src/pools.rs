//! Engine pools: the inference servers base models can be placed on. The servers themselves say
//! what they hold and how busy they are; the store keeps only what an operator registered.

use crate::error::Result;
use crate::p;
use crate::sql::SqlRow;
use crate::{EnginePoolRow, Store, StoredKey};

const POOL_SELECT: &str =
    "SELECT name, kind, endpoints, api_key_digest, api_key_sealed, store_path, created_at FROM engine_pools";

fn pool_from_row(r: &SqlRow) -> Result<EnginePoolRow> {
    let endpoints: String = r.get(2)?;
    let digest: Option<String> = r.get(3)?;
    let sealed: Option<String> = r.get(4)?;
    Ok(EnginePoolRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        endpoints: serde_json::from_str(&endpoints).unwrap_or_default(),
        api_key: digest.zip(sealed).map(|(digest, sealed)| StoredKey { digest, sealed }),
        store_path: r.get(5)?,
        created_at: r.get(6)?,
    })
}

impl Store {
    /// Records a new pool; false when one of that name exists.
    pub fn insert_engine_pool(&self, row: &EnginePoolRow) -> Result<bool> {
        let endpoints = serde_json::to_string(&row.endpoints).unwrap_or_else(|_| "[]".into());
        let (digest, sealed) = match &row.api_key {
            Some(k) => (Some(k.digest.clone()), Some(k.sealed.clone())),
            None => (None, None),
        };
        let n = self.db(|c| {
            c.execute(
                "INSERT INTO engine_pools (name, kind, endpoints, api_key_digest, api_key_sealed, store_path, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                p![row.name, row.kind, endpoints, digest, sealed, row.store_path, row.created_at],
            )
        })?;
        Ok(n == 1)
    }

    pub fn engine_pool(&self, name: &str) -> Result<Option<EnginePoolRow>> {
        self.db(|c| c.query_opt(&format!("{POOL_SELECT} WHERE name = ?1"), p![name], pool_from_row))
    }

    pub fn engine_pools(&self) -> Result<Vec<EnginePoolRow>> {
        self.db(|c| c.query(&format!("{POOL_SELECT} ORDER BY name"), p![], pool_from_row))
    }

    /// Removes a pool no base model is placed on. `Ok(Err(models))` names the base models in the way;
    /// `Ok(Ok(false))` means there was no such pool.
    pub fn delete_engine_pool(&self, name: &str) -> Result<std::result::Result<bool, Vec<String>>> {
        self.tx(|c| {
            let users: Vec<String> =
                c.query("SELECT name FROM base_models WHERE engine_pool = ?1 ORDER BY name", p![name], |r| r.get(0))?;
            if !users.is_empty() {
                return Ok(Err(users));
            }
            Ok(Ok(c.execute("DELETE FROM engine_pools WHERE name = ?1", p![name])? == 1))
        })
    }
}
