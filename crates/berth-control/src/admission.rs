//! Admission of data-plane calls: a deployment's limits from its SKU, capacity and model family, and
//! the shared [`RateLimiter`].

use crate::error::Result;
use crate::host::DeploymentKey;
use crate::ratelimit::{Limits, Refusal, Remaining, Ticket};
use crate::sku::is_provisioned;
use crate::Control;
use berth_store::AccountKey;
use std::time::Instant;

impl Control {
    /// The limits of a deployment as it is now (a scale applies at the next call).
    pub fn deployment_limits(&self, account: &AccountKey, name: &str) -> Result<Limits> {
        let d = self.deployment(account, name)?;
        if is_provisioned(&d.sku_name) {
            let per_ptu = self
                .placement(&d.account, &d.model_name)?
                .and_then(|p| self.config.catalog.families.get(&p.family).map(|f| f.ptu_tokens_per_minute))
                .unwrap_or(1000);
            let ptu = u64::try_from(d.sku_capacity).unwrap_or(0);
            Ok(Limits::Provisioned { tokens_per_minute: ptu.saturating_mul(u64::try_from(per_ptu).unwrap_or(0)) })
        } else {
            Ok(Limits::standard(d.sku_capacity))
        }
    }

    /// Admits a call estimated at `estimate` tokens, or says when to come back.
    pub fn admit(&self, account: &AccountKey, name: &str, estimate: u64) -> Result<Result<Ticket, Refusal>> {
        let limits = self.deployment_limits(account, name)?;
        Ok(self.limiter.admit(&DeploymentKey::new(account, name), limits, estimate, Instant::now())?)
    }

    /// What a deployment has left, without charging anything.
    pub fn rate_remaining(&self, account: &AccountKey, name: &str) -> Option<Remaining> {
        let limits = self.deployment_limits(account, name).ok()?;
        self.limiter.remaining(&DeploymentKey::new(account, name), limits, Instant::now()).ok()
    }

    /// Whether a deployment's calls are charged at prompt tokens less cached ones (provisioned).
    pub fn is_provisioned_deployment(&self, account: &AccountKey, name: &str) -> bool {
        matches!(self.deployment_limits(account, name), Ok(Limits::Provisioned { .. }))
    }
}
