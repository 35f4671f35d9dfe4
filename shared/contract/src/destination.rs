//! Where an endpoint's webhooks go when it is not a URL: an AMQP exchange on
//! hookfleet's own broker or on another one, for internal services (the
//! seed's hybrid, where an external webhook fans out to internal
//! consumers).
//!
//! The same shape is the registry's stored JSON, the registry broadcast's
//! and the delivery task's field, so it is parsed once, here. Another
//! broker's URL carries credentials, so it only ever travels sealed
//! (`sealed_url`, context [`broker_url_context`]); the API takes it in
//! clear once and shows it masked ([`BrokerUrl::masked`]).

use serde::{Deserialize, Serialize};

/// The one placeholder a routing key template may use.
pub const TYPE_PLACEHOLDER: &str = "{type}";

/// An AMQP name's limit (a short string).
const MAX_NAME_BYTES: usize = 255;

/// A non-HTTP destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// Publish to `exchange` with the routing key `routing_key`, in which
    /// `{type}` stands for the event type.
    Amqp {
        exchange: String,
        #[serde(default = "type_template")]
        routing_key: String,
        /// Another broker's URL ([`BrokerUrl`]), sealed for the endpoint
        /// ([`broker_url_context`]); `None`: hookfleet's own broker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_url: Option<String>,
    },
}

/// The sealing context of a destination's broker URL, at rest and in
/// tasks (like the custom headers': the task's secrets are bound to the
/// sealed URL, see [`crate::task_address`]).
pub fn broker_url_context(endpoint_id: &str) -> String {
    format!("{endpoint_id}#broker")
}

/// The query parameters a broker URL may have: those lapin understands.
const BROKER_URL_PARAMETERS: &[&str] = &[
    "heartbeat",
    "frame_max",
    "channel_max",
    "connection_timeout",
    "auth_mechanism",
];

/// Another broker's URL: `amqp://` or `amqps://`, a host, optional
/// credentials and vhost, and only the query parameters lapin knows.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl(url::Url);

/// Why a broker URL was refused; never shows the URL (it may carry a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("is not a URL ({0})")]
    Malformed(String),
    #[error("must be amqp:// or amqps://, not {0}://")]
    Scheme(String),
    #[error("has no host")]
    NoHost,
    #[error("is {0} bytes; at most {max} are allowed", max = crate::limits::MAX_URL_BYTES)]
    TooLong(usize),
    #[error("may have no fragment")]
    Fragment,
    #[error(
        "query parameter {0:?} is not one of heartbeat, frame_max, channel_max, connection_timeout, auth_mechanism"
    )]
    Parameter(String),
}

impl BrokerUrl {
    pub fn parse(raw: &str) -> Result<Self, BrokerUrlError> {
        if raw.len() > crate::limits::MAX_URL_BYTES {
            return Err(BrokerUrlError::TooLong(raw.len()));
        }
        let url = url::Url::parse(raw).map_err(|e| BrokerUrlError::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "amqp" | "amqps") {
            return Err(BrokerUrlError::Scheme(url.scheme().to_owned()));
        }
        if url.host().is_none() || url.host_str() == Some("") {
            return Err(BrokerUrlError::NoHost);
        }
        if url.fragment().is_some() {
            return Err(BrokerUrlError::Fragment);
        }
        if let Some((key, _)) = url
            .query_pairs()
            .find(|(key, _)| !BROKER_URL_PARAMETERS.contains(&key.as_ref()))
        {
            return Err(BrokerUrlError::Parameter(key.into_owned()));
        }
        Ok(Self(url))
    }

    /// The URL in clear, credentials included: for sealing and connecting
    /// only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn host(&self) -> Option<url::Host<&str>> {
        self.0.host()
    }

    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "amqps"
    }

    /// The port, or the scheme's default (5672, or 5671 for amqps).
    pub fn port(&self) -> u16 {
        self.0
            .port()
            .unwrap_or(if self.is_tls() { 5671 } else { 5672 })
    }

    /// The URL as GET shows it and errors name it: the password replaced
    /// by `***` (`amqp://user:***@host:5672/vhost`).
    pub fn masked(&self) -> String {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        shown.to_string()
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BrokerUrl").field(&self.masked()).finish()
    }
}

fn type_template() -> String {
    TYPE_PLACEHOLDER.to_owned()
}

/// Why a destination was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error(
        "exchange: {0:?} must be 1 to 255 characters of letters, digits, '-', '_', '.' and ':'"
    )]
    BadExchange(String),
    #[error("exchange: {0:?} is reserved (the broker's own amq.* exchanges and hookfleet's {1}.*)")]
    ReservedExchange(String, String),
    #[error(
        "routing_key: {0:?} may use no placeholder but {TYPE_PLACEHOLDER} and at most 255 bytes"
    )]
    BadRoutingKey(String),
}

fn valid_exchange(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl Destination {
    /// Checks a destination a tenant asked for. The default exchange (`""`),
    /// the broker's `amq.*` and hookfleet's own `{reserved_prefix}.*`
    /// exchanges are refused: publishing there would let a tenant reach
    /// hookfleet's queues or any queue by name.
    pub fn check(self, reserved_prefix: &str) -> Result<Self, DestinationError> {
        let Self::Amqp {
            exchange,
            routing_key,
            ..
        } = &self;
        if !valid_exchange(exchange) {
            return Err(DestinationError::BadExchange(exchange.clone()));
        }
        if exchange.starts_with("amq.") || exchange.starts_with(&format!("{reserved_prefix}.")) {
            return Err(DestinationError::ReservedExchange(
                exchange.clone(),
                reserved_prefix.to_owned(),
            ));
        }
        let without = routing_key.replace(TYPE_PLACEHOLDER, "");
        if without.contains(['{', '}']) || routing_key.len() > MAX_NAME_BYTES {
            return Err(DestinationError::BadRoutingKey(routing_key.clone()));
        }
        Ok(self)
    }

    /// The routing key for one event: the template with `{type}` filled in.
    pub fn routing_key_for(&self, event_type: &str) -> String {
        let Self::Amqp { routing_key, .. } = self;
        routing_key.replace(TYPE_PLACEHOLDER, event_type)
    }

    /// The exchange to publish to.
    pub fn exchange(&self) -> &str {
        let Self::Amqp { exchange, .. } = self;
        exchange
    }

    /// Another broker's URL, sealed; `None` for hookfleet's own broker.
    pub fn sealed_url(&self) -> Option<&str> {
        let Self::Amqp { sealed_url, .. } = self;
        sealed_url.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amqp(exchange: &str, routing_key: &str) -> Destination {
        Destination::Amqp {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            sealed_url: None,
        }
    }

    #[test]
    fn broker_urls_are_amqp_with_a_host_and_shown_without_the_password() {
        let url = BrokerUrl::parse("amqp://app:s3cret@mq.example.com:5673/billing").unwrap();
        assert_eq!(url.masked(), "amqp://app:***@mq.example.com:5673/billing");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.port(), 5673);
        assert_eq!(BrokerUrl::parse("amqps://h/").unwrap().port(), 5671);
        assert_eq!(
            BrokerUrl::parse("amqp://h/%2f?heartbeat=10")
                .unwrap()
                .masked(),
            "amqp://h/%2f?heartbeat=10"
        );
        assert_eq!(
            BrokerUrl::parse("https://h/"),
            Err(BrokerUrlError::Scheme("https".into()))
        );
        assert!(BrokerUrl::parse("amqp:///vhost").is_err());
        assert!(BrokerUrl::parse("not a url").is_err());
        assert!(BrokerUrl::parse("amqp://h/?cacertfile=/etc/x").is_err());
        assert!(BrokerUrl::parse(&format!("amqp://h/{}", "v".repeat(3000))).is_err());
    }

    #[test]
    fn parses_the_api_shape_with_a_default_routing_key() {
        let parsed: Destination =
            serde_json::from_str(r#"{"type": "amqp", "exchange": "billing"}"#).unwrap();
        assert_eq!(parsed, amqp("billing", "{type}"));
        assert!(serde_json::from_str::<Destination>(r#"{"type": "sqs", "queue": "q"}"#).is_err());
        assert!(
            serde_json::from_str::<Destination>(r#"{"type": "amqp", "exchange": "b", "x": 1}"#)
                .is_err()
        );
    }

    #[test]
    fn routing_keys_are_templates_over_the_event_type() {
        let d = amqp("billing", "inbound.{type}");
        assert_eq!(
            d.routing_key_for("github.push"),
            "inbound.github.push".to_owned()
        );
        assert_eq!(amqp("b", "fixed").routing_key_for("a.b"), "fixed");
    }

    #[test]
    fn reserved_and_malformed_names_are_refused() {
        assert!(amqp("billing", "{type}").check("hookfleet").is_ok());
        for bad in ["", "has space", "hookfleet.deliver", "amq.topic"] {
            assert!(amqp(bad, "{type}").check("hookfleet").is_err(), "{bad:?}");
        }
        assert_eq!(
            amqp("b", "{tenant}.{type}").check("hookfleet"),
            Err(DestinationError::BadRoutingKey("{tenant}.{type}".into()))
        );
        assert!(amqp("b", &"k".repeat(256)).check("hookfleet").is_err());
    }
}
