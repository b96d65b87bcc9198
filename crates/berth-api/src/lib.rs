//! Wire types of Berth's HTTP surfaces, apart from database rows and engine types.
//!
//! - [`arm`]: the ARM management plane (deployments, accounts, long-running operations, its error shape).
//! - [`openai`]: the Azure OpenAI data plane (chat completions, completions, models, its error shape).
//! - [`fine_tuning`]: files and fine-tuning jobs, events and checkpoints of the authoring API.
//! - [`admin`]: Berth's own administration calls (base models, model import, tokens).
//!
//! Field names follow the services Berth imitates (camelCase for ARM, snake_case for OpenAI).

pub mod admin;
pub mod arm;
pub mod fine_tuning;
pub mod openai;

#[cfg(test)]
mod tests;
