//! Where an endpoint's webhooks go when it is not a URL: an AMQP exchange on
//! hookfleet's own broker, for internal services (the seed's hybrid, where
//! an external webhook fans out to internal consumers).
//!
//! The same shape is the API's `destination` field, the registry's stored
//! JSON and the delivery task's field, so it is parsed once, here.

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
    },
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amqp(exchange: &str, routing_key: &str) -> Destination {
        Destination::Amqp {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        }
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
