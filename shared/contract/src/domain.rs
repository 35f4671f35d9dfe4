//! Domain newtypes, parsed once at the edge ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused. The message names the rule that was broken, so
/// it can go straight into an HTTP error body or a parking-queue header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("event type must not be empty")]
    EmptyEventType,
    #[error("event type is {0} bytes; at most 128 are allowed")]
    EventTypeTooLong(usize),
    #[error(
        "event type {0:?} is not dot-separated segments of lowercase letters, digits, '_' and '-'"
    )]
    BadEventType(String),
    #[error("event type pattern {0:?} may only use '*' as its last segment")]
    BadEventPattern(String),
    #[error("tenant id {0:?} must be 1 to 64 characters of lowercase letters, digits, '_' and '-'")]
    BadTenant(String),
    #[error("url {0:?} is not a valid absolute URL")]
    BadUrl(String),
    #[error("url scheme {0:?} is not allowed; use https (or http where the config allows it)")]
    BadUrlScheme(String),
}

const MAX_EVENT_TYPE_BYTES: usize = 128;

fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// An event type such as `order.created`: dot-separated segments of
/// `[a-z0-9_-]`, at most 128 bytes. It is the routing key on the events
/// exchange, which is why `*` and `#` are not allowed in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError::EmptyEventType);
        }
        if raw.len() > MAX_EVENT_TYPE_BYTES {
            return Err(DomainError::EventTypeTooLong(raw.len()));
        }
        if !raw.split('.').all(is_segment) {
            return Err(DomainError::BadEventType(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A type read back from storage: every stored type was parsed on its
    /// way in.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subscription patterns that match this type: the type itself,
    /// `*`, and every prefix followed by `.*` (`order.*` matches
    /// `order.created` and `order.created.v2`). The router asks the registry
    /// for endpoints subscribed to any of them.
    pub fn matching_patterns(&self) -> Vec<String> {
        let mut patterns = vec![self.0.clone(), "*".to_owned()];
        let mut end = 0;
        let segments: Vec<&str> = self.0.split('.').collect();
        for segment in &segments[..segments.len() - 1] {
            end += segment.len();
            patterns.push(format!("{}.*", &self.0[..end]));
            end += 1;
        }
        patterns
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription pattern: an exact event type, `*` (everything), or a
/// prefix ending in `.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw == "*" {
            return Ok(Self(raw.to_owned()));
        }
        match raw.strip_suffix(".*") {
            Some(prefix) if !prefix.contains('*') => {
                EventType::parse(prefix)?;
                Ok(Self(raw.to_owned()))
            }
            _ if raw.contains('*') => Err(DomainError::BadEventPattern(raw.to_owned())),
            _ => EventType::parse(raw).map(|t| Self(t.0)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The tenant an event, endpoint or token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::BadTenant(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An endpoint's URL: absolute, http or https. Whether plain http is
/// acceptable is the registry's policy, so it is a parameter here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(raw: &str, allow_http: bool) -> Result<Self, DomainError> {
        let url = url::Url::parse(raw).map_err(|_| DomainError::BadUrl(raw.to_owned()))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            other => return Err(DomainError::BadUrlScheme(other.to_owned())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(DomainError::BadUrl(raw.to_owned()));
        }
        Ok(Self(url.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_accepts_dotted_lowercase_segments() {
        assert!(EventType::parse("order.created").is_ok());
        assert!(EventType::parse("a_b-c.d2").is_ok());
        assert!(EventType::parse("single").is_ok());
    }

    #[test]
    fn event_type_refuses_what_would_break_routing() {
        assert_eq!(EventType::parse(""), Err(DomainError::EmptyEventType));
        for bad in [
            "Order.created",
            "order..created",
            ".order",
            "order.",
            "order.*",
            "a#b",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad} accepted");
        }
        let long = "a".repeat(129);
        assert_eq!(
            EventType::parse(&long),
            Err(DomainError::EventTypeTooLong(129))
        );
        assert!(EventType::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn matching_patterns_cover_every_prefix_wildcard() {
        let t = EventType::parse("order.created.v2").unwrap();
        assert_eq!(
            t.matching_patterns(),
            vec!["order.created.v2", "*", "order.*", "order.created.*"]
        );
        let single = EventType::parse("ping").unwrap();
        assert_eq!(single.matching_patterns(), vec!["ping", "*"]);
    }

    #[test]
    fn event_pattern_allows_trailing_wildcard_only() {
        assert!(EventPattern::parse("*").is_ok());
        assert!(EventPattern::parse("order.*").is_ok());
        assert!(EventPattern::parse("order.created").is_ok());
        assert!(EventPattern::parse("*.created").is_err());
        assert!(EventPattern::parse("order.*.x").is_err());
        assert!(EventPattern::parse("Order").is_err());
    }

    #[test]
    fn tenant_ids_are_short_lowercase_names() {
        assert!(TenantId::parse("acme-1").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn endpoint_url_requires_https_unless_allowed() {
        assert!(EndpointUrl::parse("https://example.com/hook", false).is_ok());
        assert_eq!(
            EndpointUrl::parse("http://example.com/hook", false),
            Err(DomainError::BadUrlScheme("http".into()))
        );
        assert!(EndpointUrl::parse("http://127.0.0.1:9/hook", true).is_ok());
        assert!(EndpointUrl::parse("ftp://example.com", true).is_err());
        assert!(EndpointUrl::parse("not a url", true).is_err());
    }
}
