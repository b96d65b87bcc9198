//! What the cost report is made of: hosting intervals (opened and closed in the same transactions as
//! the deployment changes that cause them), hourly token usage, and deletions Berth made itself.

use crate::error::Result;
use crate::p;
use crate::rows::*;
use crate::sql::{Db, SqlRow};
use crate::store::account_key;
use crate::Store;

/// After a deployment is written: if it now hosts another model or SKU than its open interval says (or
/// has none), closes that interval and opens a new one at the row's modification time.
pub(crate) fn track_hosting(c: &mut dyn Db, d: &DeploymentRow) -> Result<()> {
    let a = &d.account;
    let open: Option<(String, String)> = c.query_opt(
        "SELECT model, sku FROM hosting WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND deployment = ?4 AND ended_at IS NULL",
        p![a.subscription_id, a.resource_group, a.account, d.name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if open.as_ref().is_some_and(|(m, s)| *m == d.model_name && *s == d.sku_name) {
        return Ok(());
    }
    close_hosting(c, a, &d.name, &d.modified_at)?;
    let base: Option<String> = c.query_opt(
        "SELECT base_model FROM models WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND id = ?4",
        p![a.subscription_id, a.resource_group, a.account, d.model_name],
        |r| r.get(0),
    )?;
    c.execute(
        "INSERT INTO hosting (subscription_id, resource_group, account, deployment, model, base_model, fine_tuned, sku, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        p![
            a.subscription_id,
            a.resource_group,
            a.account,
            d.name,
            d.model_name,
            base.clone().unwrap_or_else(|| d.model_name.clone()),
            base.is_some(),
            d.sku_name,
            d.modified_at
        ],
    )?;
    Ok(())
}

pub(crate) fn close_hosting(c: &mut dyn Db, a: &AccountKey, deployment: &str, now: &str) -> Result<()> {
    c.execute(
        "UPDATE hosting SET ended_at = ?5 WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND deployment = ?4 AND ended_at IS NULL",
        p![a.subscription_id, a.resource_group, a.account, deployment, now],
    )?;
    Ok(())
}

fn hosting_from_row(r: &SqlRow) -> Result<HostingRow> {
    Ok(HostingRow {
        account: account_key(r)?,
        deployment: r.get(3)?,
        model: r.get(4)?,
        base_model: r.get(5)?,
        fine_tuned: r.get(6)?,
        sku: r.get(7)?,
        started_at: r.get(8)?,
        ended_at: r.get(9)?,
    })
}

impl Store {
    /// Adds one call's tokens to its deployment's hour.
    pub fn add_usage(&self, u: &UsageRow) -> Result<()> {
        self.db(|c| c.execute(
            "INSERT INTO usage_hourly (subscription_id, resource_group, account, deployment, hour, model, base_model, requests,
                 input_tokens, cached_tokens, output_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (subscription_id, resource_group, account, deployment, hour, model) DO UPDATE SET
                 requests = usage_hourly.requests + excluded.requests,
                 input_tokens = usage_hourly.input_tokens + excluded.input_tokens,
                 cached_tokens = usage_hourly.cached_tokens + excluded.cached_tokens,
                 output_tokens = usage_hourly.output_tokens + excluded.output_tokens",
            p![
                u.account.subscription_id, u.account.resource_group, u.account.account, u.deployment, u.hour, u.model, u.base_model,
                u.requests, u.input_tokens, u.cached_tokens, u.output_tokens
            ],
        ))?;
        Ok(())
    }

    /// Hosting intervals of a subscription (optionally one resource group / account) that overlap
    /// `[from, to)` (RFC 3339; compared as text, which orders them since all are UTC with `Z`).
    pub fn hosting(&self, subscription: &str, from: &str, to: &str) -> Result<Vec<HostingRow>> {
        self.db(|c| c.query(
            "SELECT subscription_id, resource_group, account, deployment, model, base_model, fine_tuned, sku, started_at, ended_at
             FROM hosting WHERE subscription_id = ?1 AND started_at < ?3 AND (ended_at IS NULL OR ended_at > ?2) ORDER BY id",
            p![subscription, from, to],
            hosting_from_row,
        ))
    }

    /// Usage rows of a subscription with `from <= hour < to` (unix seconds).
    pub fn usage(&self, subscription: &str, from: i64, to: i64) -> Result<Vec<UsageRow>> {
        self.db(|c| c.query(
            "SELECT subscription_id, resource_group, account, deployment, hour, model, base_model, requests, input_tokens,
                 cached_tokens, output_tokens FROM usage_hourly WHERE subscription_id = ?1 AND hour >= ?2 AND hour < ?3
             ORDER BY hour",
            p![subscription, from, to],
            |r| {
            Ok(UsageRow {
                account: account_key(r)?,
                deployment: r.get(3)?,
                hour: r.get(4)?,
                model: r.get(5)?,
                base_model: r.get(6)?,
                requests: r.get(7)?,
                input_tokens: r.get(8)?,
                cached_tokens: r.get(9)?,
                output_tokens: r.get(10)?,
            })
        }))
    }

    /// The start of the last hour a deployment was called in (any model), if ever.
    pub fn last_call_hour(&self, account: &AccountKey, deployment: &str) -> Result<Option<i64>> {
        self.db(|c| c.query_one(
            "SELECT MAX(hour) FROM usage_hourly WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 AND deployment = ?4",
            p![account.subscription_id, account.resource_group, account.account, deployment],
            |r| r.get(0),
        ))
    }

    pub fn deletions(&self, account: &AccountKey) -> Result<Vec<DeletionRow>> {
        self.db(|c| c.query(
            "SELECT subscription_id, resource_group, account, deployment, model, reason, deleted_at FROM deployment_deletions
             WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3 ORDER BY deleted_at",
            p![account.subscription_id, account.resource_group, account.account],
            |r| {
            Ok(DeletionRow {
                account: account_key(r)?,
                deployment: r.get(3)?,
                model: r.get(4)?,
                reason: r.get(5)?,
                deleted_at: r.get(6)?,
            })
        }))
    }
}
