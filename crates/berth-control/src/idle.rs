//! Deployments Berth deletes itself: one deployed more than `idle_days` ago that has had no completions
//! or chat completions call for `idle_days` in a row, and a Developer deployment `developer_hours` after
//! it was deployed. The model stays and can be deployed again; the deletion is recorded with its reason.
//! A sweeper runs every `idle_sweep_seconds`, and after every move of the test clock.

use crate::clock::{now_rfc3339, rfc3339_of, unix_now, unix_of};
use crate::error::Result;
use crate::host::DeploymentKey;
use crate::Control;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Periods of the deletion rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub idle_days: i64,
    pub developer_hours: i64,
    pub sweep_seconds: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { idle_days: 15, developer_hours: 24, sweep_seconds: 300 }
    }
}

impl Control {
    /// Deletes what the rules say is due; returns the deleted deployments' names.
    pub async fn sweep_idle(&self) -> Result<Vec<String>> {
        let r = self.config.retention;
        let now = unix_now();
        let mut deleted = Vec::new();
        for d in self.store.all_deployments()? {
            let Some(created) = unix_of(&d.created_at) else { continue };
            let reason = if d.sku_name == "Developer" {
                (now - created >= r.developer_hours * 3600)
                    .then(|| format!("Developer deployments end {} hours after they are deployed.", r.developer_hours))
            } else {
                // A call in an hour counts as made at that hour's end.
                let last_call = self.store.last_call_hour(&d.account, &d.name)?.map(|h| h + 3600).unwrap_or(created);
                let idle_since = last_call.max(created);
                let period = r.idle_days * 86_400;
                (now - created > period && now - idle_since >= period)
                    .then(|| format!("No completions or chat completions call for {} consecutive days.", r.idle_days))
            };
            let Some(reason) = reason else { continue };
            if self.store.delete_deployment(&d.account, &d.name, &now_rfc3339(), Some(&reason))?.is_some() {
                tracing::info!(deployment = %d.name, model = %d.model_name, %reason, "deployment deleted");
                let key = DeploymentKey::new(&d.account, &d.name);
                self.limiter.forget(&key);
                let host = self.host.clone();
                let _ = tokio::task::spawn_blocking(move || host.unprovision(&key)).await;
                deleted.push(d.name);
            }
        }
        Ok(deleted)
    }

    /// When the sweeper will delete a deployment if nothing changes (no call comes): its creation
    /// plus the Developer lifetime, or the later of its creation and last call plus the idle period.
    pub fn scheduled_deletion(&self, d: &berth_store::DeploymentRow) -> Result<Option<String>> {
        let r = self.config.retention;
        let Some(created) = unix_of(&d.created_at) else { return Ok(None) };
        let at = if d.sku_name == "Developer" {
            created + r.developer_hours * 3600
        } else {
            let last_call = self.store.last_call_hour(&d.account, &d.name)?.map(|h| h + 3600).unwrap_or(created);
            last_call.max(created) + r.idle_days * 86_400
        };
        Ok(Some(rfc3339_of(at)))
    }

    /// Deployments of an account Berth deleted itself, oldest first.
    pub fn deletions(&self, account: &berth_store::AccountKey) -> Result<Vec<berth_store::DeletionRow>> {
        let account = self.account(account)?.key;
        Ok(self.store.deletions(&account)?)
    }

    pub(crate) fn start_idle_sweeper(self: &Arc<Self>) {
        let control = self.clone();
        self.spawn(async move {
            let period = std::time::Duration::from_secs(control.config.retention.sweep_seconds.max(1));
            loop {
                let wake = control.fine_tuning.wake.notified();
                let _ = tokio::time::timeout(period, wake).await;
                if control.fine_tuning.stopping.load(Ordering::Acquire) {
                    return;
                }
                // One sweeper across the fleet: the holder of its lease.
                let c = control.clone();
                let mine =
                    tokio::task::spawn_blocking(move || c.hold(crate::fleet::SWEEPER_LEASE)).await.unwrap_or(false);
                if !mine {
                    continue;
                }
                if let Err(e) = control.sweep_idle().await {
                    tracing::error!(error = %e, "idle sweep failed");
                }
            }
        });
    }
}
