//! The web portal at `/portal`: one page, its script and its style sheet, built into the binary. The
//! portal is a client of the management and data-plane APIs like any other; it holds no state here.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../portal/index.html");
const SCRIPT: &str = include_str!("../portal/portal.js");
const STYLE: &str = include_str!("../portal/portal.css");

/// Scripts and styles only from Berth itself; calls only to Berth itself.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `/accounts/{account}/portal`: the portal is one for the whole server; its address under an
/// account's endpoint sends the browser there.
pub async fn to_portal() -> Response {
    axum::response::Redirect::permanent("/portal").into_response()
}
