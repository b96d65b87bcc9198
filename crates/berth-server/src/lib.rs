//! Berth's HTTP server: the ARM management plane and the Azure OpenAI data plane on one axum router.
//!
//! Principal types: [`AppState`] (the shared [`berth_control::Control`]), [`router`] (every route), and
//! the two error types, [`ArmApiError`] for the management plane and [`OpenAiApiError`] for the data
//! plane, each with one `IntoResponse`. Handlers live one resource per file under `controllers/`.
//! Internal failures are logged with the request id and answered with a generic message.

// A request's error is built at most once per request; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod arm_error;
mod controllers;
mod extract;
mod headers;
mod openai_error;
mod rejections;
mod render;
mod routes;
pub mod tls;

pub use arm_error::ArmApiError;
pub use openai_error::OpenAiApiError;
pub use routes::{layered, router};

use berth_control::Control;
use std::sync::Arc;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState(pub Arc<Control>);

impl std::ops::Deref for AppState {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.0
    }
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(AppState(control));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Serves HTTPS until `shutdown` resolves, then drains in-flight requests.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(AppState(control));
    axum::serve(tls::TlsListener::new(listener, tls)?, app).with_graceful_shutdown(shutdown).await
}
