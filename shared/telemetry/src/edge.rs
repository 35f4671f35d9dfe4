//! The edge every API router sits behind: a bound on requests served at
//! once, NUL characters refused in the path and query, and every error
//! answered in the one JSON shape, including the ones axum's extractors
//! produce themselves (an oversized body, a query that does not parse).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hookfleet_config::ListenSettings;
use hookfleet_contract::ApiError;
use tokio::sync::Semaphore;

/// The most bytes of an extractor's plain-text rejection kept as the
/// message of its JSON error.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Wraps an API router (not the probes, which answer in plain text) in the
/// edge.
pub fn api_edge(router: Router, listen: &ListenSettings) -> Router {
    let permits = Arc::new(Semaphore::new(listen.max_concurrent_requests.max(1)));
    router
        .fallback(|| async { ApiError::not_found("no such path in hookfleet's API") })
        .layer(axum::middleware::from_fn(refuse_nul))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(move |request, next| {
            limit_concurrency(permits.clone(), request, next)
        }))
}

/// Over the limit, answers 503 at once: a queue would only make every
/// client wait longer.
async fn limit_concurrency(permits: Arc<Semaphore>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire_owned() else {
        let mut response =
            ApiError::new(503, "overloaded", "too many requests at once; retry").into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

/// Postgres refuses NUL in text, so an id or cursor holding one would come
/// back from the database as an error; refuse it here, as bad input.
async fn refuse_nul(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let holds_nul = |part: &str| part.to_ascii_lowercase().contains("%00");
    if holds_nul(uri.path()) || uri.query().is_some_and(holds_nul) {
        return ApiError::bad_request(
            "invalid_request",
            "the path or query holds a NUL character (%00)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Rewrites an error answered in plain text (axum's extractor rejections)
/// into `{"error": {"code", "message"}}`.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status.as_u16() {
        400 => "invalid_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_body",
        503 => "unavailable",
        _ if status.is_client_error() => "invalid_request",
        _ => "internal",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut rewritten = ApiError::new(status.as_u16(), code, message).into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    let (mut new_parts, body) = rewritten.into_parts();
    new_parts.extensions = parts.extensions;
    Response::from_parts(new_parts, Body::new(body))
}
