//! The headers a webhook goes out with: a pure function of the task, its
//! keys, the body and the time, so the Standard Webhooks contract can be
//! tested without a network (and shared by any transport that sends one).

use std::collections::BTreeMap;

use hookfleet_contract::DeliveryTask;

use crate::sender::Keys;

/// The webhook's headers, names lowercased. The endpoint's own headers
/// come first, so ours (content type, trace context, `webhook-*`) win on
/// any clash.
pub fn headers(
    task: &DeliveryTask,
    keys: &Keys,
    body: &[u8],
    timestamp: i64,
    trace: Vec<(String, String)>,
) -> BTreeMap<String, String> {
    let signature = keys.signature(task.event_id.as_str(), timestamp, body);
    let mut headers: BTreeMap<String, String> = task
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    headers.insert("content-type".into(), "application/json".into());
    // The receiver can join the event's trace.
    headers.extend(trace.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)));
    headers.insert("webhook-id".into(), task.event_id.to_string());
    headers.insert("webhook-timestamp".into(), timestamp.to_string());
    headers.insert("webhook-signature".into(), signature);
    headers
}

#[cfg(test)]
mod tests {
    use hookfleet_contract::{
        Chain, DeliveryTarget, EndpointId, EventId, EventType, Target, TaskEvent,
    };
    use hookfleet_signing::SigningSecret;

    use super::*;

    fn task(custom: &[(&str, &str)]) -> DeliveryTask {
        let event_id = EventId::parse("evt_1").unwrap();
        let target = Target {
            endpoint_id: EndpointId::parse("ep_1").unwrap(),
            endpoint_version: 0,
            delivery: DeliveryTarget {
                url: "https://example.com/h".into(),
                secrets: vec![],
                sealed_ed25519: None,
                destination: None,
                headers: custom
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            },
            ordered: false,
            rate_limit: None,
        };
        let event = TaskEvent {
            tenant: "acme",
            event_id: &event_id,
            event_type: &EventType::parse("a.b").unwrap(),
            created_at: 0,
            ordering_key: None,
        };
        DeliveryTask::new(event, &target, 0, Chain::ROUTED)
    }

    fn keys() -> Keys {
        Keys {
            secrets: vec![SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()],
            ed25519: None,
        }
    }

    #[test]
    fn the_standard_webhooks_headers_sign_id_timestamp_and_body() {
        let body = br#"{"test": 2432232314}"#;
        let headers = headers(&task(&[]), &keys(), body, 1_614_265_330, vec![]);
        assert_eq!(headers["webhook-id"], "evt_1");
        assert_eq!(headers["webhook-timestamp"], "1614265330");
        assert_eq!(headers["content-type"], "application/json");
        let verified = hookfleet_signing::verify(
            &keys().secrets[0],
            &headers["webhook-signature"],
            "evt_1",
            1_614_265_330,
            body,
        );
        assert!(verified, "{}", headers["webhook-signature"]);
    }

    #[test]
    fn custom_headers_go_along_but_never_override_ours() {
        let custom = [
            ("X-Team", "billing"),
            ("Webhook-Id", "forged"),
            ("Content-Type", "text/plain"),
        ];
        let headers = headers(&task(&custom), &keys(), b"{}", 1, vec![]);
        assert_eq!(headers["x-team"], "billing");
        assert_eq!(headers["webhook-id"], "evt_1");
        assert_eq!(headers["content-type"], "application/json");
    }

    #[test]
    fn the_trace_context_goes_along() {
        let trace = vec![(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )];
        let headers = headers(&task(&[]), &keys(), b"{}", 1, trace);
        assert!(headers["traceparent"].starts_with("00-4bf92f35"));
    }
}
