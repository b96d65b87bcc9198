//! Metering and the cost report: every call's tokens by hour, every deployment's hosting intervals,
//! priced by the catalog's price sheet. A deployed fine-tuned model pays its family's hosting price per
//! hour from the moment it is deployed until it is deleted, called or not; base models and Developer
//! deployments pay no hosting; stored models are free. Tokens pay per million by kind (input, cached
//! input, output).

use crate::clock::{rfc3339_of, unix_now, unix_of};
use crate::error::Result;
use crate::{Control, ControlError};
use berth_store::{AccountKey, MinuteSample, UsageRow};
use std::collections::BTreeMap;

/// Which deployments a report covers.
#[derive(Debug, Clone, Default)]
pub struct CostScope {
    pub subscription: String,
    pub resource_group: Option<String>,
    pub account: Option<String>,
    pub deployment: Option<String>,
}

/// One deployment's charges over the report's period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CostLine {
    pub account: AccountKey,
    pub deployment: String,
    /// The model and SKU of the deployment's latest interval in the period.
    pub model: String,
    pub sku: String,
    pub hosting_hours: f64,
    pub hosting_cost: f64,
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub token_cost: f64,
    pub total: f64,
}

/// A report: the period (RFC 3339), the currency and one line per deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct CostReport {
    pub from: String,
    pub to: String,
    pub currency: String,
    pub lines: Vec<CostLine>,
}

/// One minute of a deployment's last hour.
#[derive(Debug, Clone, PartialEq)]
pub struct MinutePoint {
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub requests: i64,
    pub tokens: i64,
    pub rate_limited: i64,
    /// Time to first token: the bound of the bucket holding the median / 95th percentile call.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
}

impl Control {
    /// Adds one finished call's tokens to its deployment's hour (the deployment's model as it is now)
    /// and, with its time to first token, to its minute.
    pub fn record_usage(
        &self,
        account: &AccountKey,
        deployment: &str,
        prompt: u64,
        cached: u64,
        completion: u64,
        first_token: Option<std::time::Duration>,
    ) {
        let Ok(d) = self.deployment(account, deployment) else { return };
        let base = match self.store.model(&d.account, &d.model_name) {
            Ok(Some(m)) => m.base_model,
            _ => d.model_name.clone(),
        };
        let labels = crate::metrics::DeploymentLabels {
            account: d.account.account.clone(),
            deployment: d.name.clone(),
            model: d.model_name.clone(),
        };
        self.metrics.tokens(&labels, prompt, cached, completion);
        let row = UsageRow {
            account: d.account.clone(),
            deployment: d.name.clone(),
            hour: unix_now() / 3600 * 3600,
            model: d.model_name.clone(),
            base_model: base,
            requests: 1,
            input_tokens: prompt as i64,
            cached_tokens: cached as i64,
            output_tokens: completion as i64,
        };
        if let Err(e) = self.store.add_usage(&row) {
            tracing::error!(error = %e, deployment, "cannot record usage");
        }
        let tokens = i64::try_from(prompt.saturating_add(completion)).unwrap_or(i64::MAX);
        let ttft_ms = first_token.map(|d| d.as_secs_f64() * 1000.0);
        if let Err(e) = self.store.add_minute(
            &d.account,
            &d.name,
            unix_now() / 60 * 60,
            MinuteSample { requests: 1, tokens, rate_limited: 0, ttft_ms },
        ) {
            tracing::warn!(error = %e, deployment, "cannot record the call's minute");
        }
    }

    /// Counts a call refused by the deployment's rate limit in its minute.
    pub fn record_rate_limited(&self, account: &AccountKey, deployment: &str) {
        let Ok(d) = self.deployment(account, deployment) else { return };
        if let Err(e) = self.store.add_minute(
            &d.account,
            &d.name,
            unix_now() / 60 * 60,
            MinuteSample { rate_limited: 1, ..MinuteSample::default() },
        ) {
            tracing::warn!(error = %e, deployment, "cannot record a refusal's minute");
        }
    }

    /// A deployment's last hour, minute by minute (60 points, the current minute last; minutes without
    /// calls are zero), from what every replica recorded.
    pub fn last_hour(&self, account: &AccountKey, deployment: &str) -> Result<Vec<MinutePoint>> {
        let d = self.deployment(account, deployment)?;
        let now = unix_now() / 60 * 60;
        let from = now - 59 * 60;
        let rows = self.store.minutes(&d.account, &d.name, from)?;
        Ok((0..60)
            .map(|i| {
                let minute = from + i * 60;
                let row = rows.iter().find(|r| r.minute == minute).cloned().unwrap_or_default();
                MinutePoint {
                    minute,
                    requests: row.requests,
                    tokens: row.tokens,
                    rate_limited: row.rate_limited,
                    ttft_p50_ms: row.ttft_quantile_ms(0.50),
                    ttft_p95_ms: row.ttft_quantile_ms(0.95),
                }
            })
            .collect())
    }

    /// Charges of the deployments in `scope` over `[from, to)` (RFC 3339).
    pub fn cost_report(&self, scope: &CostScope, from: &str, to: &str) -> Result<CostReport> {
        let (Some(from_s), Some(to_s)) = (unix_of(from), unix_of(to)) else {
            return Err(ControlError::invalid(
                "InvalidTimeRange",
                format!("'{from}' and '{to}' must be RFC 3339 times such as 2026-11-01T00:00:00Z."),
                "from",
            ));
        };
        if to_s <= from_s {
            return Err(ControlError::invalid(
                "InvalidTimeRange",
                format!("The period must end after it starts ('{from}' to '{to}')."),
                "to",
            ));
        }
        let (from, to) = (rfc3339_of(from_s), rfc3339_of(to_s));
        let catalog = &self.config.catalog;
        let in_scope = |a: &AccountKey, d: &str| {
            scope.resource_group.as_ref().is_none_or(|g| g.eq_ignore_ascii_case(&a.resource_group))
                && scope.account.as_ref().is_none_or(|n| n.eq_ignore_ascii_case(&a.account))
                && scope.deployment.as_ref().is_none_or(|n| n.eq_ignore_ascii_case(d))
        };
        let price_of = |base: &str| catalog.family_of(base).map(|(_, f)| f.price).unwrap_or_default();
        let mut lines: BTreeMap<(String, String, String), CostLine> = BTreeMap::new();
        let key = |a: &AccountKey, d: &str| {
            (a.resource_group.to_ascii_lowercase(), a.account.to_ascii_lowercase(), d.to_ascii_lowercase())
        };
        for h in self.store.hosting(&scope.subscription, &from, &to)? {
            if !in_scope(&h.account, &h.deployment) {
                continue;
            }
            let start = unix_of(&h.started_at).unwrap_or(from_s).max(from_s);
            let end = h.ended_at.as_deref().and_then(unix_of).unwrap_or(unix_now()).min(to_s);
            let hours = (end - start).max(0) as f64 / 3600.0;
            let line = lines.entry(key(&h.account, &h.deployment)).or_insert_with(|| CostLine {
                account: h.account.clone(),
                deployment: h.deployment.clone(),
                ..Default::default()
            });
            line.model = h.model.clone();
            line.sku = h.sku.clone();
            line.hosting_hours += hours;
            if h.fine_tuned && h.sku != "Developer" {
                line.hosting_cost += hours * price_of(&h.base_model).hosting_per_hour;
            }
        }
        for u in self.store.usage(&scope.subscription, from_s / 3600 * 3600, to_s)? {
            if !in_scope(&u.account, &u.deployment) {
                continue;
            }
            let p = price_of(&u.base_model);
            let line = lines.entry(key(&u.account, &u.deployment)).or_insert_with(|| CostLine {
                account: u.account.clone(),
                deployment: u.deployment.clone(),
                model: u.model.clone(),
                ..Default::default()
            });
            line.requests += u.requests;
            line.input_tokens += u.input_tokens;
            line.cached_tokens += u.cached_tokens;
            line.output_tokens += u.output_tokens;
            let uncached = (u.input_tokens - u.cached_tokens).max(0) as f64;
            line.token_cost += (uncached * p.input_per_million
                + u.cached_tokens as f64 * p.cached_input_per_million
                + u.output_tokens as f64 * p.output_per_million)
                / 1e6;
        }
        let lines = lines
            .into_values()
            .map(|mut l| {
                l.total = l.hosting_cost + l.token_cost;
                l
            })
            .collect();
        Ok(CostReport { from, to, currency: catalog.currency.clone(), lines })
    }
}
