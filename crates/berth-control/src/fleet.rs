//! Replicas on one database. Each replica serves every deployment, so it loads what the database says
//! is deployed and drops what is gone; work that must happen once holds a lease in the database.
//!
//! - **Deployments** reach every replica by polling (`all_deployments` once a second): a replica that
//!   was down, or lost its connection, catches up by the same path as one that was up, and no
//!   notification can be missed. LISTEN/NOTIFY would save at most a second and needs a connection
//!   pinned per replica plus this polling anyway for what happened while it was away.
//! - **Fine-tuning jobs** are claimed by a serializable `pending → running` transition (one replica
//!   wins), and the runner holds the lease `job:<id>`, renewed every few seconds. A `running` job whose
//!   lease expired (its replica died) goes back to the queue and resumes from its last checkpoint on
//!   whichever replica claims it. A cancel or pause through another replica reaches the runner through
//!   the job's status.
//! - **Provisioning** (a PUT's long-running operation) runs on the replica that took the PUT, under
//!   the lease `provision:<operation>`; if that replica dies, another takes the operation over once
//!   the lease expires.
//! - **The idle sweeper** runs on the holder of the lease `idle-sweeper`. Hosting intervals and usage
//!   need nothing: they are written in the same transactions as the changes that cause them.

use crate::host::DeploymentKey;
use crate::Control;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a lease lasts without renewal: a dead replica's work moves on within this.
pub(crate) const LEASE_SECONDS: f64 = 20.0;
/// How often leases are renewed and deployments compared.
const BEAT: Duration = Duration::from_secs(1);
const RENEW_EVERY_BEATS: u32 = 4;
pub(crate) const SWEEPER_LEASE: &str = "idle-sweeper";

pub(crate) fn job_lease(id: &str) -> String {
    format!("job:{id}")
}

pub(crate) fn provision_lease(operation_id: &str) -> String {
    format!("provision:{operation_id}")
}

impl Control {
    /// This replica's name in leases.
    pub(crate) fn replica(&self) -> &str {
        &self.config.replica
    }

    /// Whether this replica holds (and has just renewed) the lease `name`.
    pub(crate) fn hold(&self, name: &str) -> bool {
        match self.store.hold_lease(name, self.replica(), LEASE_SECONDS) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "cannot renew a lease");
                false
            }
        }
    }

    /// The replica's background beat: leases of the jobs it runs, cancels and pauses made through other
    /// replicas, orphaned jobs, and (on a shared database) the deployments to load or drop.
    pub(crate) fn start_fleet_beat(self: &Arc<Self>) {
        let control = self.clone();
        self.spawn(async move {
            let mut beat = 0u32;
            loop {
                let wake = control.fine_tuning.wake.notified();
                let _ = tokio::time::timeout(BEAT, wake).await;
                if control.fine_tuning.stopping.load(Ordering::Acquire) {
                    return;
                }
                beat = beat.wrapping_add(1);
                if beat.is_multiple_of(RENEW_EVERY_BEATS) {
                    let c = control.clone();
                    let _ = tokio::task::spawn_blocking(move || c.tend_jobs()).await;
                }
                if beat.is_multiple_of(300) {
                    // The last-hour charts keep two hours; any replica may trim (the delete is idempotent).
                    let _ = control.store.purge_minutes(crate::clock::unix_now() - 2 * 3600);
                }
                if control.store.is_postgres() {
                    control.reconcile_deployments().await;
                }
            }
        });
    }

    /// Renews the leases of the jobs this replica runs, stops those whose status another replica
    /// changed, and queues again the running jobs nobody holds.
    fn tend_jobs(&self) {
        let provisioning: Vec<String> =
            self.fleet_provisioning.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        for lease in provisioning {
            self.hold(&lease);
        }
        for (id, flag) in self.fine_tuning.running() {
            self.hold(&job_lease(&id));
            match self.store.job_by_id(&id) {
                Ok(Some(job)) if job.status != "running" => flag.store(true, Ordering::Release),
                _ => {}
            }
        }
        if let Err(e) = self.requeue_orphaned_jobs(false) {
            tracing::warn!(error = %e, "cannot look for orphaned fine-tuning jobs");
        }
    }

    /// Puts back in the queue the `running` jobs whose runner is gone: their lease expired, or (at this
    /// replica's start, `starting`) it is this replica's own from before.
    pub(crate) fn requeue_orphaned_jobs(&self, starting: bool) -> crate::error::Result<()> {
        let mine: HashSet<String> = self.fine_tuning.running().into_iter().map(|(id, _)| id).collect();
        for job in self.store.jobs_with_status(&["running"])? {
            if mine.contains(&job.id) {
                continue;
            }
            let holder = self.store.lease_holder(&job_lease(&job.id))?;
            let orphaned = match holder.as_deref() {
                None => true,
                Some(h) => starting && h == self.replica(),
            };
            if !orphaned {
                continue;
            }
            let message = if starting && holder.is_some() {
                "The server restarted while the job ran; it resumes from its last checkpoint."
            } else {
                "The replica running the job stopped; the job resumes from its last checkpoint."
            };
            if self.store.transition_job(&job.id, &["running"], "pending", crate::clock::unix_now(), message)? {
                tracing::info!(job = %job.id, "an orphaned fine-tuning job is queued again");
                self.fine_tuning.wake.notify_waiters();
            }
        }
        Ok(())
    }

    /// Loads what the database says is deployed and is not loaded here, and drops what is no longer
    /// deployed. Deployments still provisioning are their provisioner's; a replica that has not loaded
    /// a deployment yet answers 503 with `retry-after` for it.
    pub(crate) async fn reconcile_deployments(self: &Arc<Self>) {
        let rows = match self.store.all_deployments() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read deployments");
                return;
            }
        };
        let mut wanted = HashSet::new();
        for row in rows {
            let key = DeploymentKey::new(&row.account, &row.name);
            if matches!(row.provisioning_state.as_str(), "Creating" | "Accepted" | "Updating") {
                // Being (re)loaded by its provisioner: keep what is loaded meanwhile. A provisioner that
                // died left its lease to expire: this replica takes the operation over.
                wanted.insert(key);
                let lease = provision_lease(&row.operation_id);
                if matches!(self.store.lease_holder(&lease), Ok(None)) {
                    tracing::info!(deployment = %row.name, "taking over a provisioning whose replica stopped");
                    let control = self.clone();
                    self.spawn(async move { control.provision(row).await });
                }
                continue;
            }
            if row.provisioning_state != "Succeeded" {
                continue;
            }
            wanted.insert(key.clone());
            if self.host.route(&key).is_some_and(|r| r.model_name == row.model_name) {
                continue;
            }
            if !self.fleet_loading.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let plan = self.load_plan(&row.account, &row.model_name, &row.model_format, &row.model_version);
            let host = self.host.clone();
            let control = self.clone();
            self.spawn(async move {
                let result = match plan {
                    Ok(mut plan) => {
                        // Deployed already: routed here even while its pool is down.
                        if let Some(p) = plan.pool.as_mut() {
                            p.strict = false;
                        }
                        host.provision_async(key.clone(), plan).await
                    }
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => tracing::info!(deployment = %row.name, "loaded a deployment made on another replica"),
                    Err(e) => tracing::warn!(deployment = %row.name, error = %e, "cannot load a deployment made on another replica"),
                }
                control.fleet_loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            });
        }
        for key in self.host.routed() {
            if !wanted.contains(&key) && !self.fleet_loading.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
                self.limiter.forget(&key);
                let host = self.host.clone();
                let _ = tokio::task::spawn_blocking(move || host.unprovision(&key)).await;
            }
        }
    }

    /// Whether a deployment is deployed (`Succeeded`) but not loaded on this replica yet.
    pub fn deployed_elsewhere_only(&self, account: &berth_store::AccountKey, name: &str) -> bool {
        self.store.is_postgres()
            && self.host.route(&DeploymentKey::new(account, name)).is_none()
            && matches!(self.store.deployment(account, name), Ok(Some(d)) if d.provisioning_state == "Succeeded")
    }

    /// Gives up this replica's leases at an orderly stop, so others take its work over at once.
    pub(crate) fn release_leases(&self) {
        let _ = self.store.release_lease(SWEEPER_LEASE, self.replica());
    }
}
