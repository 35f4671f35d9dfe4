//! The web portal at `/portal/`: a page, a script and a style sheet,
//! compiled into the binary (nothing fetched from elsewhere, works
//! offline). Plain HTML, CSS and JavaScript without a build step, so the
//! run path needs no Node.
//!
//! The portal calls the API on this same base URL with a portal session
//! token (`POST /v1/portal/sessions`), which it takes from the URL's
//! fragment (never sent to a server) into `sessionStorage` and sends as a
//! bearer token: no cookie, so no CSRF. The Content-Security-Policy
//! allows scripts from this origin only (no inline script, no `eval`),
//! and the script writes every value with `textContent`, never as HTML.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../portal/index.html");
const SCRIPT: &str = include_str!("../portal/app.js");
const STYLE: &str = include_str!("../portal/style.css");

/// Scripts, styles, images and calls from this origin only; nothing
/// inline, no `eval`, no plugins, no `<base>` rewriting.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    object-src 'none'";

pub fn routes() -> Router {
    Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route(
            "/portal/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/portal/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/portal/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
