//! One base URL (DESIGN.md, "One API to users"): the ledger's operations
//! answer on the producer's address too. The producer forwards each of
//! them to the ledger as it came (method, path, query, headers, body,
//! streamed both ways) and hands back the ledger's answer as it is.
//!
//! The forwarded routes are read from the ledger's part of the OpenAPI
//! document, so a path the document lists cannot be missing here. The
//! ledger checks the token itself, as it does when called directly.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use futures_util::TryStreamExt;
use hookfleet_contract::ApiError;

/// Headers that describe one connection, not the message: never passed
/// on (RFC 9110 section 7.6.1), and `host`, which names the producer.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The client that forwards calls to the ledger.
#[derive(Debug, Clone)]
pub struct LedgerProxy {
    http: reqwest::Client,
    /// The ledger's base URL, without a trailing slash.
    base: String,
}

impl LedgerProxy {
    pub fn new(settings: &crate::settings::LedgerSettings) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(&settings.url)
            .map_err(|e| anyhow::anyhow!("ledger.url {:?}: {e}", settings.url))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(settings.timeout_ms.max(1)))
            // The ledger's redirects (it sends none) are the client's.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// A route for every operation of the ledger's document.
    pub fn routes(self) -> Router {
        let document = ledger_document();
        let mut router = Router::new();
        for (path, item) in &document.paths.paths {
            let methods = [
                (item.get.is_some(), MethodFilter::GET),
                (item.post.is_some(), MethodFilter::POST),
                (item.put.is_some(), MethodFilter::PUT),
                (item.patch.is_some(), MethodFilter::PATCH),
                (item.delete.is_some(), MethodFilter::DELETE),
            ]
            .into_iter()
            .filter(|(present, _)| *present)
            .map(|(_, method)| method)
            .reduce(MethodFilter::or);
            if let Some(methods) = methods {
                // OpenAPI's `{id}` is axum's path syntax too.
                router = router.route(path, on(methods, forward));
            }
        }
        router.with_state(self)
    }
}

/// The ledger's part of the API document (checked in beside the contract,
/// kept equal to the ledger's handlers by a ledger test).
pub fn ledger_document() -> utoipa::openapi::OpenApi {
    serde_json::from_str(hookfleet_contract::api_error::LEDGER_OPENAPI)
        .expect("shared/contract/openapi/ledger.json is an OpenAPI document")
}

/// Sends the request on to the ledger and streams its answer back.
async fn forward(State(proxy): State<LedgerProxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    let url = format!("{}{path_and_query}", proxy.base);
    let mut headers = without_hop_by_hop(parts.headers);
    headers.remove(header::HOST);
    let sent = proxy
        .http
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return unreachable_ledger(&error),
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = without_hop_by_hop(answer.headers().clone());
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(|e| {
        tracing::warn!(error = %e, "the ledger's answer broke off");
        e
    }));
    response.body(body).unwrap_or_else(|error| {
        tracing::error!(%error, "could not build the forwarded answer");
        ApiError::internal().into_response()
    })
}

fn without_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

/// The ledger did not answer: an outage of hookfleet, not bad input.
fn unreachable_ledger(error: &reqwest::Error) -> Response {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    tracing::error!(error = %chain, "could not reach the ledger");
    let mut response = ApiError::new(
        503,
        "ledger_unavailable",
        "the ledger (events, attempts, replay, recovery, dead letters) is unreachable; retry",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}
