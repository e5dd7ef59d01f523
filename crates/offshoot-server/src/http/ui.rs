//! The web UI served at `/`: one HTML page and its scripts, styles and vendored libraries, all
//! embedded in the binary at compile time (no CDN, no separate frontend server). The page talks
//! to the REST API; see ui/app.js.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::SharedState;

/// (path under /ui/, content type, bytes)
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("graph.js", "text/javascript; charset=utf-8", include_str!("../../ui/graph.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../ui/style.css")),
    (
        "vendor/preact-htm.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/vendor/preact-htm.js"),
    ),
    (
        "vendor/highlight-core.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/vendor/highlight-core.js"),
    ),
    (
        "vendor/highlight-sql.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/vendor/highlight-sql.js"),
    ),
    (
        "vendor/highlight-diff.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/vendor/highlight-diff.js"),
    ),
    (
        "vendor/LICENSES.txt",
        "text/plain; charset=utf-8",
        include_str!("../../ui/vendor/LICENSES.txt"),
    ),
];

const INDEX: &str = include_str!("../../ui/index.html");

/// Scripts only from this server, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<SharedState> {
    Router::new().route("/", get(index)).route("/ui/{*path}", get(asset))
}

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The files change only with the binary; revalidating is cheap and never serves a stale UI.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(path): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => with_headers(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}
