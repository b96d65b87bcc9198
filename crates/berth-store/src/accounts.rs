//! Resource groups and accounts beyond the bootstrap ones.

use crate::error::Result;
use crate::p;
use crate::rows::*;
use crate::store::insert_account;
use crate::Store;

/// Why an account or resource group could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteRefusal {
    /// The account still has these deployments.
    HasDeployments(Vec<String>),
    /// The account has a fine-tuning job that has not finished.
    HasRunningJob(String),
    /// The resource group still holds these accounts.
    HasAccounts(Vec<String>),
}

/// What deleting an account removed, for the caller to clean up on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedAccount {
    pub account: AccountRow,
    pub models: Vec<ModelRow>,
    pub files: Vec<FileRow>,
}

impl Store {
    pub fn resource_group(&self, subscription: &str, name: &str) -> Result<Option<ResourceGroupRow>> {
        self.db(|c| {
            c.query_opt(
                "SELECT subscription_id, name, location, created_at FROM resource_groups WHERE subscription_id = ?1 AND name = ?2",
                p![subscription, name],
                |r| {
                    Ok(ResourceGroupRow {
                        subscription_id: r.get(0)?,
                        name: r.get(1)?,
                        location: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
        })
    }

    /// Creates a resource group; returns false if it existed (left as it was).
    pub fn insert_resource_group(&self, rg: &ResourceGroupRow) -> Result<bool> {
        let n = self.db(|c| {
            c.execute(
                "INSERT INTO resource_groups (subscription_id, name, location, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                p![rg.subscription_id, rg.name, rg.location, rg.created_at],
            )
        })?;
        Ok(n == 1)
    }

    /// Deletes an empty resource group; `Ok(None)` if it did not exist.
    pub fn delete_resource_group(&self, subscription: &str, name: &str) -> Result<Option<Result<(), DeleteRefusal>>> {
        self.tx(|c| {
            let exists: Option<String> = c.query_opt(
                "SELECT name FROM resource_groups WHERE subscription_id = ?1 AND name = ?2",
                p![subscription, name],
                |r| r.get(0),
            )?;
            if exists.is_none() {
                return Ok(None);
            }
            let accounts: Vec<String> = c.query(
                "SELECT name FROM accounts WHERE subscription_id = ?1 AND resource_group = ?2 ORDER BY name",
                p![subscription, name],
                |r| r.get(0),
            )?;
            if !accounts.is_empty() {
                return Ok(Some(Err(DeleteRefusal::HasAccounts(accounts))));
            }
            c.execute("DELETE FROM resource_groups WHERE subscription_id = ?1 AND name = ?2", p![subscription, name])?;
            Ok(Some(Ok(())))
        })
    }

    pub fn insert_account(&self, a: &AccountRow) -> Result<()> {
        self.db(|c| insert_account(c, a))
    }

    pub fn update_account_sku(&self, key: &AccountKey, kind: &str, sku: &str) -> Result<()> {
        self.db(|c| {
            c.execute(
                "UPDATE accounts SET kind = ?4, sku = ?5 WHERE subscription_id = ?1 AND resource_group = ?2 AND name = ?3",
                p![key.subscription_id, key.resource_group, key.account, kind, sku],
            )
        })?;
        Ok(())
    }

    /// Replaces key1 (`which` = 1) or key2.
    pub fn set_account_key(&self, key: &AccountKey, which: u8, value: &StoredKey) -> Result<()> {
        let column = if which == 1 { "key1" } else { "key2" };
        self.db(|c| {
            c.execute(
                &format!(
                    "UPDATE accounts SET {column}_digest = ?4, {column}_sealed = ?5
                     WHERE subscription_id = ?1 AND resource_group = ?2 AND name = ?3"
                ),
                p![key.subscription_id, key.resource_group, key.account, value.digest, value.sealed],
            )
        })?;
        Ok(())
    }

    /// Deletes an account without deployments or unfinished jobs, with its models and files, in one
    /// transaction. `Ok(None)` if it did not exist.
    pub fn delete_account(&self, key: &AccountKey) -> Result<Option<Result<DeletedAccount, DeleteRefusal>>> {
        let Some(account) = self.account(key)? else { return Ok(None) };
        let deployments: Vec<String> = self.deployments(&account.key)?.into_iter().map(|d| d.name).collect();
        if !deployments.is_empty() {
            return Ok(Some(Err(DeleteRefusal::HasDeployments(deployments))));
        }
        if let Some(job) = self
            .jobs(&account.key, None, 10_000)?
            .into_iter()
            .find(|j| matches!(j.status.as_str(), "pending" | "running" | "paused"))
        {
            return Ok(Some(Err(DeleteRefusal::HasRunningJob(job.id))));
        }
        let models = self.models(&account.key)?;
        let files = self.files(&account.key)?;
        let k = &account.key;
        self.tx(|c| {
            for table in ["models", "files"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3"),
                    p![k.subscription_id, k.resource_group, k.account],
                )?;
            }
            let jobs: Vec<String> = c.query(
                "SELECT id FROM fine_tuning_jobs WHERE subscription_id = ?1 AND resource_group = ?2 AND account = ?3",
                p![k.subscription_id, k.resource_group, k.account],
                |r| r.get(0),
            )?;
            for job in &jobs {
                for table in ["fine_tuning_events", "fine_tuning_metrics", "fine_tuning_checkpoints"] {
                    c.execute(&format!("DELETE FROM {table} WHERE job_id = ?1"), p![job])?;
                }
                c.execute("DELETE FROM fine_tuning_jobs WHERE id = ?1", p![job])?;
            }
            c.execute(
                "DELETE FROM accounts WHERE subscription_id = ?1 AND resource_group = ?2 AND name = ?3",
                p![k.subscription_id, k.resource_group, k.account],
            )?;
            Ok(())
        })?;
        Ok(Some(Ok(DeletedAccount { account, models, files })))
    }
}
