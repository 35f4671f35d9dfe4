//! Identifiers. Delivery and attempt ids are derived, not random, so that a
//! redelivered message produces the same ids and the ledger records it once
//! (DESIGN.md invariant 2).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for the name-based (v5) ids below. Fixed forever: changing it
/// would change every derived id.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_58a4_4d0e_9c61_3f2d_a8b5_e104);

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id {0:?} must be 1 to 128 characters of letters, digits, '_', '-', '.' and ':'")]
pub struct BadId(pub String);

fn valid_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 128
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// An event's id: given by the caller (for idempotency) or generated as
    /// `evt_` + a time-ordered UUID. It becomes `webhook-id`, stable across
    /// retries, so receivers can deduplicate.
    EventId
);
string_id!(
    /// An endpoint's id, `ep_` + a time-ordered UUID.
    EndpointId
);
string_id!(
    /// One event to one endpoint: derived from the tenant, event and endpoint.
    DeliveryId
);
string_id!(
    /// One try of a delivery: derived from the delivery and the attempt number.
    AttemptId
);

impl EventId {
    pub fn generate() -> Self {
        Self(format!("evt_{}", Uuid::now_v7().simple()))
    }

    pub fn parse(raw: &str) -> Result<Self, BadId> {
        if valid_id(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(BadId(raw.to_owned()))
        }
    }
}

impl EndpointId {
    /// An id read back from storage this service wrote.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn generate() -> Self {
        Self(format!("ep_{}", Uuid::now_v7().simple()))
    }

    /// When the endpoint was created (milliseconds since the epoch), read
    /// from its time-ordered id; `None` for an id not made by [`Self::generate`].
    pub fn created_at_millis(&self) -> Option<i64> {
        let uuid = Uuid::parse_str(self.0.strip_prefix("ep_")?).ok()?;
        if uuid.get_version_num() != 7 {
            return None;
        }
        let (secs, nanos) = uuid.get_timestamp()?.to_unix();
        i64::try_from(secs)
            .ok()
            .map(|s| s * 1000 + i64::from(nanos / 1_000_000))
    }

    pub fn parse(raw: &str) -> Result<Self, BadId> {
        if valid_id(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(BadId(raw.to_owned()))
        }
    }
}

impl DeliveryId {
    pub fn derive(tenant: &str, event: &EventId, endpoint: &EndpointId) -> Self {
        let name = format!("{tenant}/{event}/{endpoint}");
        Self(format!(
            "dlv_{}",
            Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).simple()
        ))
    }
}

impl AttemptId {
    pub fn derive(delivery: &DeliveryId, attempt: u32) -> Self {
        let name = format!("{delivery}/{attempt}");
        Self(format!(
            "att_{}",
            Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).simple()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let event = EventId::parse("evt_1").unwrap();
        let a = EndpointId::parse("ep_a").unwrap();
        let b = EndpointId::parse("ep_b").unwrap();
        let d1 = DeliveryId::derive("default", &event, &a);
        assert_eq!(d1, DeliveryId::derive("default", &event, &a));
        assert_ne!(d1, DeliveryId::derive("default", &event, &b));
        assert_ne!(d1, DeliveryId::derive("other", &event, &a));
        assert_eq!(AttemptId::derive(&d1, 1), AttemptId::derive(&d1, 1));
        assert_ne!(AttemptId::derive(&d1, 1), AttemptId::derive(&d1, 2));
    }

    #[test]
    fn endpoint_ids_tell_when_they_were_made() {
        let before = crate::now_millis();
        let id = EndpointId::generate();
        let made = id.created_at_millis().unwrap();
        assert!(made >= before - 1 && made <= crate::now_millis() + 1);
        assert_eq!(EndpointId::parse("ep_a").unwrap().created_at_millis(), None);
        let v4 = format!("ep_{}", Uuid::new_v4().simple());
        assert_eq!(EndpointId::parse(&v4).unwrap().created_at_millis(), None);
    }

    #[test]
    fn caller_ids_are_checked() {
        assert!(EventId::parse("order-42:v1").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("has space").is_err());
        assert!(EventId::parse(&"x".repeat(129)).is_err());
        assert!(EventId::generate().as_str().starts_with("evt_"));
    }
}
