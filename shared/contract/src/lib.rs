//! The wire contract between hookfleet's services and the applications that
//! publish to it.
//!
//! Everything that crosses a process boundary is defined here, once: the
//! event message on the events exchange (the public AMQP contract), the
//! delivery task the router hands to workers, and the records the ledger
//! consumes. Input is parsed into the newtypes in [`domain`] at the edge, so
//! the rest of the code cannot hold an invalid event type or tenant.

pub mod address;
pub mod api_error;
pub mod auth;
pub mod destination;
pub mod domain;
pub mod event;
pub mod ids;
pub mod limits;
pub mod ordering;
pub mod portal;
pub mod record;
pub mod registry;
pub mod task;

pub use api_error::{ApiError, ErrorBody, ErrorDetail};
pub use destination::{
    BrokerUrl, BrokerUrlError, Destination, DestinationError, broker_url_context,
};
pub use domain::{DomainError, EndpointUrl, EventPattern, EventType, TenantId};
pub use event::{
    BatchedEvent, ContractViolation, EVENT_BATCH_KIND, EventMessage, RawEvent,
    check_parsed_payload, check_payload, checked_context, headers,
};
pub use ids::{AttemptId, BadId, DeliveryId, EndpointId, EventId};
pub use ordering::{LANES, LaneTask, MAX_RATE_LIMIT, OrderingError, OrderingKey, check_rate_limit};
pub use record::{
    ATTEMPT_OUTCOME_KIND, ATTEMPT_OUTCOMES_KIND, AttemptOutcome, AttemptResult, EVENT_ROUTED_KIND,
    EVENTS_ROUTED_KIND, EventRouted, RoutedDelivery, RoutedEventRecord,
};
pub use registry::{
    DeliveryTarget, EndpointState, EndpointStatus, REGISTRY_CHANGE_KIND, REGISTRY_SNAPSHOT_KIND,
    RegistrySnapshot, SealedSecret,
};
pub use task::{
    Chain, DeliveryTask, RETRY_QUEUES, SEALED_HEADERS, TASK_ROUTING_KEY, Target, TaskEvent,
    Trigger, ed25519_context, headers_context, lane_routing_key, retry_queue_of, retry_routing_key,
    task_address, task_ed25519_context, task_secret_context,
};

/// Milliseconds since the Unix epoch, the one timestamp format on the wire.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
