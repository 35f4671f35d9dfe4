//! Small helpers for AMQP properties and headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// A string header, whether sent as a long or a short string.
pub fn header_str<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A header table of string values.
pub fn headers_with<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in pairs {
        table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    table
}

/// Properties of a persistent JSON message.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(hookfleet_contract::headers::JSON_CONTENT_TYPE.into())
}

/// A header table of string values plus the current span's W3C trace
/// context, so that whatever consumes the message joins the trace.
pub fn traced_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> FieldTable {
    let mut table = headers_with(pairs);
    for (name, value) in hookfleet_telemetry::trace_headers() {
        table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    table
}

/// Makes `span` continue the trace whose context the message carries.
pub fn continue_trace_from(span: &tracing::Span, properties: &BasicProperties) {
    hookfleet_telemetry::continue_trace(
        span,
        header_str(properties, hookfleet_telemetry::TRACEPARENT),
        header_str(properties, hookfleet_telemetry::TRACESTATE),
    );
}

pub use hookfleet_contract::TASK_ROUTING_KEY;

/// Properties of a delivery task: persistent JSON, the delivery id as
/// message id, the task metadata and the current trace context. Built
/// afresh every time, so a republished task never carries the broker's
/// `x-death` history (with it, a second trip through the same delay queue
/// would be taken for a dead-letter cycle and dropped).
pub fn task_properties(task: &hookfleet_contract::DeliveryTask) -> BasicProperties {
    persistent_json()
        .with_message_id(task.delivery_id.as_str().into())
        .with_headers(traced_headers([(
            hookfleet_contract::headers::META,
            task.to_meta_json().as_str(),
        )]))
}

/// `properties` as they travel in an AMQP content header (flags, then each
/// property present, headers with their AMQP types), to be stored and
/// later sent again unchanged: a parked message keeps its properties in
/// Postgres this way.
pub fn encode_properties(properties: &BasicProperties) -> Vec<u8> {
    use amq_protocol::frame::WriteContext;
    match amq_protocol::protocol::basic::gen_properties(properties)(WriteContext::from(Vec::new()))
    {
        Ok(context) => context.write,
        // Only a write to a Vec, which cannot fail.
        Err(_) => Vec::new(),
    }
}

/// The properties [`encode_properties`] wrote; `None` if `bytes` are not
/// such an encoding.
pub fn decode_properties(bytes: &[u8]) -> Option<BasicProperties> {
    match amq_protocol::protocol::basic::parse_properties(bytes) {
        Ok(([], properties)) => Some(properties),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldArray, ShortString};

    #[test]
    fn properties_come_back_as_they_were_stored() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(3));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let mut table = headers_with([("x-tenant", "acme")]);
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        table.insert("n".into(), AMQPValue::ShortShortInt(-2));
        let properties = persistent_json()
            .with_message_id(ShortString::from("evt_1"))
            .with_priority(3)
            .with_timestamp(42)
            .with_headers(table);
        let stored = encode_properties(&properties);
        assert_eq!(decode_properties(&stored), Some(properties));
        assert_eq!(decode_properties(&stored[..stored.len() - 1]), None);
    }
}
