//! What a tenant may set on an endpoint, checked when it is created or
//! changed: the caps of [`hookfleet_contract::limits`], headers that do
//! not interfere with the request hookfleet makes, and URLs that point
//! neither at internal addresses nor carry credentials.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hookfleet_contract::address::AddressPolicy;
use hookfleet_contract::limits::{self, check_text};
use hookfleet_contract::{ApiError, BrokerUrl, EndpointUrl, EventPattern};

use crate::registry::CustomHeaders;

/// How long creating an endpoint waits for DNS before leaving the check to
/// the workers (which resolve again at every delivery anyway).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers hookfleet sets itself, and hop-by-hop or framing headers that
/// would change how the request is sent rather than what it says.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "http2-settings",
    "traceparent",
    "tracestate",
];

pub fn invalid(field: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {error}"))
}

/// A free-text field: no NUL, at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    check_text(value, max).map_err(|e| invalid(field, e))
}

/// An endpoint URL: http(s), within the cap, with no `user:pass@`, and not
/// at an internal address (unless the allow-list opens it).
pub async fn url(
    raw: &str,
    allow_http: bool,
    policy: &AddressPolicy,
) -> Result<EndpointUrl, ApiError> {
    if raw.len() > limits::MAX_URL_BYTES {
        return Err(invalid(
            "url",
            format!(
                "is {} bytes; at most {} are allowed",
                raw.len(),
                limits::MAX_URL_BYTES
            ),
        ));
    }
    let url = EndpointUrl::parse(raw, allow_http).map_err(|e| invalid("url", e))?;
    let parsed = url::Url::parse(url.as_str()).map_err(|e| invalid("url", e))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "url",
            "must not carry credentials (user:password@); send them in a custom header",
        ));
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    reachable("url", parsed.host(), port, policy).await?;
    Ok(url)
}

/// An AMQP destination's broker URL: amqp(s), a host that is not internal
/// (unless the allow-list opens it, as for endpoint URLs), and only what
/// lapin can connect with. Credentials are welcome here: they are sealed.
pub async fn broker_url(raw: &str, policy: &AddressPolicy) -> Result<BrokerUrl, ApiError> {
    const FIELD: &str = "destination.url";
    let url = BrokerUrl::parse(raw).map_err(|e| invalid(FIELD, e))?;
    // What the workers will parse it with; its errors may quote the URL,
    // so only say that it failed.
    if raw.parse::<lapin::uri::AMQPUri>().is_err() {
        return Err(invalid(
            FIELD,
            "is not an AMQP URI lapin accepts (check the query parameters' values)",
        ));
    }
    reachable(FIELD, url.host(), url.port(), policy).await?;
    Ok(url)
}

/// Refuses a host whose every address is internal and not allow-listed,
/// as a delivery to it would be. A name that does not resolve now may
/// later; the workers check again before every connection.
async fn reachable(
    field: &str,
    host: Option<url::Host<&str>>,
    port: u16,
    policy: &AddressPolicy,
) -> Result<(), ApiError> {
    let addresses: Vec<IpAddr> = match host {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await
            {
                Ok(Ok(resolved)) => resolved.map(|a| a.ip()).collect(),
                _ => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let refusals: Vec<(IpAddr, &str)> = addresses
        .iter()
        .filter_map(|ip| policy.refusal(*ip).map(|kind| (*ip, kind)))
        .collect();
    if let Some((ip, kind)) = refusals.first()
        && refusals.len() == addresses.len()
    {
        return Err(invalid(
            field,
            format!("{ip} is a {kind} address; endpoints must be publicly reachable"),
        ));
    }
    Ok(())
}

pub fn patterns(patterns: &[String]) -> Result<Vec<EventPattern>, ApiError> {
    if patterns.is_empty() {
        return Err(invalid(
            "event_types",
            "subscribe to at least one type (\"*\" for all)",
        ));
    }
    patterns
        .iter()
        .map(|p| EventPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("event_types", e))
}

/// Header names and values must be valid HTTP, within the caps, and may
/// not override what hookfleet itself sends.
pub fn headers(headers: BTreeMap<String, String>) -> Result<CustomHeaders, ApiError> {
    if headers.len() > limits::MAX_HEADERS {
        return Err(invalid(
            "headers",
            format!(
                "{} headers; at most {} are allowed",
                headers.len(),
                limits::MAX_HEADERS
            ),
        ));
    }
    let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > limits::MAX_HEADERS_TOTAL_BYTES {
        return Err(invalid(
            "headers",
            format!(
                "names and values are {total} bytes together; at most {} are allowed",
                limits::MAX_HEADERS_TOTAL_BYTES
            ),
        ));
    }
    let mut parsed = CustomHeaders::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("webhook-") || RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(invalid(
                "headers",
                format!("{name:?} is set by hookfleet or by HTTP itself and cannot be set"),
            ));
        }
        if name.len() > limits::MAX_HEADER_NAME_BYTES {
            return Err(invalid(
                "headers",
                format!(
                    "a name is {} bytes; at most {} are allowed",
                    name.len(),
                    limits::MAX_HEADER_NAME_BYTES
                ),
            ));
        }
        if value.len() > limits::MAX_HEADER_VALUE_BYTES {
            return Err(invalid(
                "headers",
                format!(
                    "the value of {name:?} is {} bytes; at most {} are allowed",
                    value.len(),
                    limits::MAX_HEADER_VALUE_BYTES
                ),
            ));
        }
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(&value).is_err()
        {
            return Err(invalid(
                "headers",
                format!("{name:?} is not a valid HTTP header"),
            ));
        }
        parsed.insert(lower, value);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(name.to_owned(), value.to_owned())])
    }

    #[test]
    fn hop_by_hop_and_framing_headers_are_refused() {
        for name in ["Expect", "content-encoding", "TE", "upgrade", "keep-alive"] {
            assert!(headers(one(name, "x")).is_err(), "{name} accepted");
        }
        assert!(headers(one("X-Api-Key", "x")).is_ok());
        assert!(headers(one("Authorization", "Bearer x")).is_ok());
    }

    #[test]
    fn header_caps_hold() {
        assert!(headers(one("x-a", &"v".repeat(limits::MAX_HEADER_VALUE_BYTES))).is_ok());
        assert!(headers(one("x-a", &"v".repeat(limits::MAX_HEADER_VALUE_BYTES + 1))).is_err());
        let many: BTreeMap<String, String> = (0..=limits::MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".to_owned()))
            .collect();
        assert!(headers(many).is_err());
        let big: BTreeMap<String, String> = (0..3)
            .map(|i| (format!("x-{i}"), "v".repeat(4000)))
            .collect();
        assert!(headers(big).is_err());
    }
}
