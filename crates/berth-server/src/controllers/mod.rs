//! One file per resource. Each handler authenticates explicitly (an extractor or a call) and checks the
//! caller's rights on the scope before doing anything.

pub mod accounts;
pub mod admin;
pub mod chat_completions;
mod chat_tools;
pub mod completions;
pub mod costs;
pub mod deployments;
pub mod files;
pub mod fine_tuning;
pub mod generation;
pub mod health;
pub mod identity;
pub mod managed_identity;
pub mod metrics;
pub mod models;
pub mod operations;
pub mod portal;
pub mod quota;

use serde::Deserialize;

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/{account}`
#[derive(Debug, Deserialize)]
pub struct AccountPath {
    pub subscription: String,
    pub resource_group: String,
    pub account: String,
}

impl AccountPath {
    /// The account's ARM id, the scope its calls are authorised at.
    pub fn scope(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
            self.subscription, self.resource_group, self.account
        )
    }

    pub fn key(&self) -> berth_control::AccountKey {
        berth_control::AccountKey {
            subscription_id: self.subscription.clone(),
            resource_group: self.resource_group.clone(),
            account: self.account.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DeploymentPath {
    pub subscription: String,
    pub resource_group: String,
    pub account: String,
    pub deployment: String,
}

impl DeploymentPath {
    pub fn scope(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}/deployments/{}",
            self.subscription, self.resource_group, self.account, self.deployment
        )
    }

    pub fn key(&self) -> berth_control::AccountKey {
        berth_control::AccountKey {
            subscription_id: self.subscription.clone(),
            resource_group: self.resource_group.clone(),
            account: self.account.clone(),
        }
    }
}
