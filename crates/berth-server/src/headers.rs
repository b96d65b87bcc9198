//! Headers on every answer: a request id (also as `apim-request-id`) and the region.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub async fn common_headers(region: HeaderValue, req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = {
        let _enter = span.enter();
        tracing::debug!("request received");
        drop(_enter);
        tracing::Instrument::instrument(next.run(req), span).await
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v.clone());
        h.insert("apim-request-id", v.clone());
        h.insert("x-ms-request-id", v);
    }
    h.insert("x-ms-region", region);
    resp
}

/// `x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens` and, for provisioned deployments,
/// `azure-openai-deployment-utilization`.
pub fn rate_limit_headers(h: &mut axum::http::HeaderMap, r: &berth_control::Remaining) {
    h.insert("x-ratelimit-remaining-requests", axum::http::HeaderValue::from(r.requests));
    h.insert("x-ratelimit-remaining-tokens", axum::http::HeaderValue::from(r.tokens));
    if let Some(u) = r.utilization_percent {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{u}%")) {
            h.insert("azure-openai-deployment-utilization", v);
        }
    }
}
