//! Engine pools: deployments served by a pool of vLLM servers instead of Berth's own engine.
//!
//! Berth stays the front door (auth, quotas, rate limits, metering); a pool only generates. Each
//! endpoint is the truth about itself: what it serves and which adapters it holds come from its
//! `/v1/models`, its load from its `/metrics`, polled every second by every Berth replica. Nothing
//! about a pool is kept anywhere else, so replicas need not agree on anything but the pool's list of
//! endpoints.
//!
//! Principal types:
//! - [`Pool`]: the endpoints of one pool, their health and load, adapter placement (vLLM's runtime
//!   LoRA API, `POST /v1/load_lora_adapter`) and the choice of endpoint for each call.
//! - [`PoolTarget`]: what a deployment on a pool routes to (the vLLM model name, the tokenizer Berth
//!   validates with); [`PoolTarget::submit`] forwards one tokenised request and turns vLLM's stream
//!   into the same [`berth_engine::GenerateEvent`]s Berth's engine sends.
//!
//! This crate knows nothing of accounts, SQL or Berth's HTTP surfaces.

mod endpoint;
mod forward;
mod pool;

pub use endpoint::EndpointStatus;
pub use forward::PoolTarget;
pub use pool::{Pool, PoolAdapter, PoolConfig, PoolStatus};

#[cfg(test)]
mod tests;
