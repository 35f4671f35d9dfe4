//! The delivery task: one event for one endpoint, as the router hands it to
//! the worker fleet.
//!
//! On the wire the AMQP body is the payload, untouched, and the task's
//! metadata is JSON in the [`crate::headers::META`] header.

use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, EndpointId, EventId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub tenant: String,
    pub event_type: String,
    pub endpoint_id: EndpointId,
    pub url: String,
    /// The signing secrets in effect, newest first, each sealed for this
    /// endpoint (see `hookfleet_signing::Sealer`); never plaintext.
    pub sealed_secrets: Vec<String>,
    /// The endpoint's custom headers, sent with the webhook.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// 1 for the first try; incremented each time the task is rescheduled.
    pub attempt: u32,
    /// When the event was accepted, milliseconds since the epoch.
    pub event_created_at: i64,
}

impl DeliveryTask {
    pub fn to_meta_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_meta_json(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }
}
