//! Headers on every answer: a request id (also as `apim-request-id`), the region, and which replica
//! answered (`x-berth-replica`: behind a load balancer, the one to look at).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub async fn common_headers(region: HeaderValue, replica: HeaderValue, req: Request, next: Next) -> Response {
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
    h.insert("x-berth-replica", replica);
    resp
}

/// This replica's name as a header value (see `ControlConfig::replica`).
pub fn replica_name(name: &str) -> HeaderValue {
    HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("berth"))
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

/// Where a request was routed: its route template and the account and deployment its path names.
/// Set on the answer by [`tag_route`] (after routing), read by the request log and the counters.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub route: String,
    pub account: Option<String>,
    pub deployment: Option<String>,
}

/// Runs after routing (a route layer): records the matched template and path parameters.
pub async fn tag_route(
    matched: Option<axum::extract::MatchedPath>,
    params: Result<axum::extract::RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let param =
        |name: &str| params.as_ref().ok().and_then(|p| p.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_owned()));
    let account = param("account")
        .or_else(|| path.strip_prefix("/accounts/").and_then(|rest| rest.split('/').next()).map(str::to_owned));
    let info = RouteInfo {
        route: matched.map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into()),
        account,
        deployment: param("deployment"),
    };
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(info);
    resp
}

/// Counts every answer by method, route template (or `unmatched`) and status class.
pub async fn count_http(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = resp.extensions().get::<RouteInfo>().map_or("unmatched", |r| r.route.as_str());
    state.metrics().http_request(method.as_str(), route, resp.status().as_u16());
    resp
}

/// tower-http's trace layer with Berth's span and answer line.
pub type RequestLog = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&Request) -> tracing::Span,
    (),
    fn(&Response, std::time::Duration, &tracing::Span),
    (),
    (),
    (),
>;

/// The request log: one line per request with its method, route template, status, duration, account
/// and deployment (tower-http's trace layer; never a header, so never a key).
pub fn request_log() -> RequestLog {
    fn span(req: &Request) -> tracing::Span {
        tracing::info_span!(
            "http",
            method = %req.method(),
            route = tracing::field::Empty,
            account = tracing::field::Empty,
            deployment = tracing::field::Empty,
        )
    }
    fn answered(resp: &Response, latency: std::time::Duration, span: &tracing::Span) {
        let info = resp.extensions().get::<RouteInfo>();
        span.record("route", info.map_or("unmatched", |i| i.route.as_str()));
        if let Some(a) = info.and_then(|i| i.account.as_deref()) {
            span.record("account", a);
        }
        if let Some(d) = info.and_then(|i| i.deployment.as_deref()) {
            span.record("deployment", d);
        }
        tracing::info!(status = resp.status().as_u16(), ms = latency.as_secs_f64() * 1000.0, "answered");
    }
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(span as fn(&Request) -> tracing::Span)
        .on_request(())
        .on_response(answered as fn(&Response, std::time::Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}
