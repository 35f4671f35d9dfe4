//! The router: consumes the route queue, where events arrive one per
//! message from applications publishing over AMQP (the public contract) and
//! one batch per message from the HTTP batch API, claims caller-chosen ids,
//! and fans each event out ([`crate::fanout`]). A message is acked only
//! after everything it caused is confirmed by the broker (DESIGN.md
//! invariant 1).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{join_all, try_join_all};
use futures_util::stream::FuturesUnordered;
use hookfleet_contract::{
    BatchedEvent, ContractViolation, EVENT_BATCH_KIND, EventId, EventMessage, EventType,
    OrderingKey, RawEvent, TenantId, check_parsed_payload, checked_context, headers,
};
use hookfleet_topology::{Publisher, Settle, Topology, header_str};
use lapin::BasicProperties;
use lapin::message::Delivery;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::catalogue::Catalogue;
use crate::claims::{Claim, Claims, Standing};
use crate::fanout::{Fanout, FanoutError, Routable};
use crate::key_order::{KeyOrder, Ticket};

/// Everything one routing needs.
#[derive(Debug)]
pub struct Router {
    pub topology: Topology,
    pub fanout: Fanout,
    pub claims: Claims,
    pub catalogue: Arc<Catalogue>,
    /// Verifies the ingest API's `headers::CHECKED` stamps.
    pub stamper: hookfleet_signing::Stamper,
    /// `ingest.amqp_tenant_is_user`.
    pub tenant_is_user: bool,
    pub max_payload_bytes: usize,
    pub cancel: CancellationToken,
    /// Fan-outs of one ordering key, in arrival order.
    pub key_order: Arc<KeyOrder>,
}

/// One event of a message, parsed, with whether its id is to be claimed.
struct Incoming {
    event: EventMessage,
    claim: bool,
    traceparent: Option<String>,
    /// The inbound source (`src_...`) it came in through, if any.
    source: Option<String>,
}

/// What became of a message's events.
enum Routed {
    Done,
    /// A single event the contract refuses: parked with the reason.
    Park(ContractViolation),
}

impl Router {
    /// Takes the message's place in line for its ordering keys now, in
    /// arrival order, and returns the routing to run.
    pub fn dispatch(
        self: Arc<Self>,
        publisher: Publisher,
        delivery: Delivery,
        settle: Settle,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ticket = self.key_order.take(ordering_keys(&delivery));
        self.route(publisher, delivery, settle, ticket)
    }

    /// Routes one message off the route queue and settles it.
    pub async fn route(
        self: Arc<Self>,
        publisher: Publisher,
        delivery: Delivery,
        settle: Settle,
        ticket: Ticket,
    ) {
        let parsed = match delivery.properties.kind().as_ref().map(|k| k.as_str()) {
            Some(EVENT_BATCH_KIND) => self.parse_batch(&delivery),
            _ => self.parse_single(&delivery).map(|incoming| vec![incoming]),
        };
        let result = match parsed {
            Ok(events) => {
                self.route_events(&publisher, events, delivery.redelivered, ticket)
                    .await
            }
            Err(violation) => Ok(Routed::Park(violation)),
        };
        match result {
            Ok(Routed::Done) => settle.ack(),
            Ok(Routed::Park(violation)) => {
                tracing::warn!(reason = %violation, "parking a malformed event");
                metrics::counter!("hookfleet_events_parked_total", "reason" => violation.kind())
                    .increment(1);
                match publisher
                    .park(&self.topology, &delivery, &violation.to_string(), "router")
                    .await
                {
                    Ok(()) => settle.ack(),
                    Err(error) => {
                        tracing::warn!(%error, "parking failed; requeueing");
                        settle.requeue();
                    }
                }
            }
            // Shutting down while the database was away: back to the queue.
            Err(RouteError::Cancelled) => settle.requeue(),
            Err(RouteError::Fanout(error)) => {
                tracing::warn!(%error, "fan-out failed; requeueing");
                settle.requeue();
            }
        }
    }

    fn parse_single(&self, delivery: &Delivery) -> Result<Incoming, ContractViolation> {
        let properties = &delivery.properties;
        let raw = RawEvent {
            routing_key: delivery.routing_key.as_str(),
            message_id: properties.message_id().as_ref().map(|s| s.as_str()),
            content_type: properties.content_type().as_ref().map(|s| s.as_str()),
            tenant: header_str(properties, headers::TENANT),
            ordering_key: header_str(properties, headers::ORDERING_KEY),
            timestamp: *properties.timestamp(),
            body: &delivery.data,
        };
        let event = EventMessage::parse(raw, self.max_payload_bytes)?;
        // Events from the ingest API were checked when they were accepted.
        let context = checked_context(
            event.tenant.as_str(),
            Some((event.id.as_str(), event.event_type.as_str())),
        );
        if !self.stamped(properties, &context, &event.payload) {
            self.check_publisher(properties, &event.tenant)?;
            self.catalogue
                .check(&event.tenant, &event.event_type, &event.payload)?;
        }
        Ok(Incoming {
            event,
            claim: true,
            traceparent: header_str(properties, hookfleet_telemetry::TRACEPARENT)
                .map(str::to_owned),
            source: header_str(properties, headers::SOURCE).map(str::to_owned),
        })
    }

    /// A message the services did not stamp, when tenants are bound to
    /// broker users: its tenant must be the user that published it.
    fn check_publisher(
        &self,
        properties: &BasicProperties,
        tenant: &TenantId,
    ) -> Result<(), ContractViolation> {
        if !self.tenant_is_user {
            return Ok(());
        }
        match properties.user_id().as_ref().map(|user| user.as_str()) {
            Some(user) if user == tenant.as_str() => Ok(()),
            user => Err(ContractViolation::NotThePublisher {
                tenant: tenant.to_string(),
                user: user.map(str::to_owned),
            }),
        }
    }

    /// Whether the message carries the ingest API's stamp over `context`
    /// and `body` (see `headers::CHECKED`).
    fn stamped(&self, properties: &BasicProperties, context: &str, body: &[u8]) -> bool {
        header_str(properties, headers::CHECKED)
            .is_some_and(|stamp| self.stamper.verifies(stamp, context, body))
    }

    /// The events of an HTTP batch. The API checked them; a message that
    /// fails these checks did not come from it and is parked whole.
    fn parse_batch(&self, delivery: &Delivery) -> Result<Vec<Incoming>, ContractViolation> {
        let tenant = header_str(&delivery.properties, headers::TENANT)
            .ok_or(ContractViolation::MissingTenant)?;
        let tenant = TenantId::parse(tenant).map_err(ContractViolation::BadTenant)?;
        let events: Vec<BatchedEvent> = serde_json::from_slice(&delivery.data)
            .map_err(|e| ContractViolation::NotJson(e.to_string()))?;
        // A batch not stamped by the ingest API was not checked by it.
        let checked = self.stamped(
            &delivery.properties,
            &checked_context(tenant.as_str(), None),
            &delivery.data,
        );
        if !checked {
            self.check_publisher(&delivery.properties, &tenant)?;
        }
        events
            .into_iter()
            .map(|batched| {
                // The ingest API checked what it stamped (perf put this
                // check at about 4% of the producer's CPU in bench a).
                if !checked {
                    check_parsed_payload(batched.payload, self.max_payload_bytes)?;
                }
                let payload = batched.payload.get().as_bytes();
                let event = EventMessage {
                    id: EventId::parse(&batched.id)?,
                    tenant: tenant.clone(),
                    event_type: EventType::parse(&batched.event_type)
                        .map_err(ContractViolation::BadEventType)?,
                    payload: bytes::Bytes::copy_from_slice(payload),
                    created_at: Some(batched.created_at),
                    ordering_key: batched.ordering_key,
                };
                if !checked {
                    self.catalogue
                        .check(&event.tenant, &event.event_type, &event.payload)?;
                }
                Ok(Incoming {
                    event,
                    claim: batched.claim,
                    traceparent: batched.traceparent,
                    source: None,
                })
            })
            .collect()
    }

    /// Claims what needs claiming, then fans out every event to route, all
    /// at once but for the order of each ordering key. A single event of
    /// an unknown tenant is parked.
    async fn route_events(
        &self,
        publisher: &Publisher,
        events: Vec<Incoming>,
        redelivered: bool,
        mut ticket: Ticket,
    ) -> Result<Routed, RouteError> {
        let standings = try_join_all(events.iter().map(|incoming| async {
            if incoming.claim {
                self.claim(&incoming.event).await.map(Some)
            } else {
                Ok(None)
            }
        }))
        .await?;
        let mut routable = Vec::with_capacity(events.len());
        for (incoming, standing) in events.iter().zip(standings) {
            let created_at = match &standing {
                None => incoming.event.created_at,
                Some(standing) if !standing.tenant_exists => {
                    return Ok(Routed::Park(ContractViolation::UnknownTenant(
                        incoming.event.tenant.to_string(),
                    )));
                }
                Some(standing) if !standing.should_route(redelivered) => {
                    tracing::debug!(event_id = %incoming.event.id, "a repeat of a routed event; not delivered again");
                    metrics::counter!("hookfleet_events_repeated_total").increment(1);
                    continue;
                }
                Some(standing) => incoming.event.created_at.or(standing.first_claimed_at),
            };
            let created_at = created_at.unwrap_or_else(hookfleet_contract::now_millis);
            routable.push((incoming, created_at));
        }
        // The events of one ordering key go one after another, in the
        // batch's order and after the key's events of earlier messages
        // (the ticket): each is sent only once the one before it is handed
        // to the publisher's channel, so their lanes get them in that
        // order (see `Publisher::send`). The confirms are awaited
        // together, and the next message's events of our keys may be
        // sent meanwhile: a batch does not wait for the confirms of the
        // one before. Different keys, and events without one, go all at
        // once: order is promised per key only.
        ticket.wait().await;
        let mut keys: HashMap<(&str, &str), Vec<(&Incoming, i64)>> = HashMap::new();
        let mut unkeyed = Vec::new();
        for (incoming, created_at) in routable {
            match &incoming.event.ordering_key {
                Some(key) => keys
                    .entry((incoming.event.tenant.as_str(), key.as_str()))
                    .or_default()
                    .push((incoming, created_at)),
                None => unkeyed.push((incoming, created_at)),
            }
        }
        let (chains, handed): (Vec<_>, Vec<_>) = keys
            .into_values()
            .map(|events| {
                let (handed, all_handed) = oneshot::channel();
                (self.fan_out_in_order(publisher, events, handed), all_handed)
            })
            .unzip();
        // Our keys are free for the next message once every chain is
        // handed (or failed: a failure requeues this message, and holding
        // its keys would not undo what was sent).
        let release = async move {
            join_all(handed).await;
            drop(ticket);
            Ok(())
        };
        let at_once = try_join_all(
            unkeyed
                .into_iter()
                .map(|(incoming, created_at)| self.fan_out(publisher, incoming, created_at, None)),
        );
        futures_util::try_join!(try_join_all(chains), at_once, release)?;
        Ok(Routed::Done)
    }

    /// Fans out one key's events in order: each is sent once the one
    /// before is handed to the channel; `handed` is told when the last
    /// is. Returns once all are confirmed.
    async fn fan_out_in_order(
        &self,
        publisher: &Publisher,
        events: Vec<(&Incoming, i64)>,
        handed: oneshot::Sender<()>,
    ) -> Result<(), FanoutError> {
        let mut confirming = FuturesUnordered::new();
        for (incoming, created_at) in events {
            let (sent, mut was_sent) = oneshot::channel();
            confirming.push(self.fan_out(publisher, incoming, created_at, Some(sent)));
            loop {
                tokio::select! {
                    biased;
                    // Told, or dropped untold (the fan-out failed and
                    // says so below).
                    _ = &mut was_sent => break,
                    Some(result) = confirming.next() => result?,
                    else => break,
                }
            }
        }
        let _ = handed.send(());
        while let Some(result) = confirming.next().await {
            result?;
        }
        Ok(())
    }

    /// Fans one event out, in its own span of the event's trace.
    fn fan_out<'a>(
        &'a self,
        publisher: &'a Publisher,
        incoming: &'a Incoming,
        created_at: i64,
        handed: Option<oneshot::Sender<()>>,
    ) -> impl std::future::Future<Output = Result<(), FanoutError>> + 'a {
        let event = &incoming.event;
        let span = crate::fanout::span(&event.id, &event.event_type);
        hookfleet_telemetry::continue_trace(&span, incoming.traceparent.as_deref(), None);
        async move {
            let fan_out = self
                .fanout
                .publish(
                    publisher,
                    Routable {
                        id: &event.id,
                        tenant: &event.tenant,
                        event_type: &event.event_type,
                        created_at,
                        payload: &event.payload,
                        source: incoming.source.as_deref(),
                        ordering_key: event.ordering_key.as_ref(),
                    },
                    handed,
                )
                .await?;
            tracing::Span::current().record("fan_out", fan_out);
            Ok(())
        }
        .instrument(span)
    }

    /// Claims the event's id. While the database is unreachable this waits
    /// and retries rather than requeueing the event (requeues count towards
    /// the queue's delivery limit).
    async fn claim(&self, event: &EventMessage) -> Result<Standing, RouteError> {
        let claim = Claim {
            tenant: event.tenant.to_string(),
            id: event.id.to_string(),
            event_type: event.event_type.to_string(),
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.claims.claim(claim.clone()).await {
                Ok(standing) => return Ok(standing),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "producer database unreachable")
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(RouteError::Cancelled),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The ordering keys of a message's events (tenant-scoped), read before
/// it is routed. A key that does not parse is left to the routing, which
/// parks the message.
fn ordering_keys(delivery: &Delivery) -> Vec<String> {
    let tenant = header_str(&delivery.properties, headers::TENANT).unwrap_or_default();
    let scoped = |key: &str| format!("{tenant}\0{key}");
    match delivery.properties.kind().as_ref().map(|k| k.as_str()) {
        Some(EVENT_BATCH_KIND) => {
            #[derive(serde::Deserialize)]
            struct Keyed {
                ordering_key: Option<OrderingKey>,
            }
            serde_json::from_slice::<Vec<Keyed>>(&delivery.data)
                .map(|events| {
                    events
                        .iter()
                        .filter_map(|e| e.ordering_key.as_ref().map(|k| scoped(k.as_str())))
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => header_str(&delivery.properties, headers::ORDERING_KEY)
            .map(scoped)
            .into_iter()
            .collect(),
    }
}

#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("shutting down")]
    Cancelled,
    #[error(transparent)]
    Fanout(#[from] FanoutError),
}
