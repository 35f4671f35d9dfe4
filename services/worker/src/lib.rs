//! The worker: a stateless delivery process. It consumes delivery tasks,
//! signs and POSTs them, and records each attempt. It needs only RabbitMQ
//! (DESIGN.md invariant 3); run as many as the load needs.

pub mod amqp_destination;
pub mod breaker;
pub mod brokers;
pub mod classify;
pub mod cli;
pub mod decision;
pub mod delivery;
pub mod intake;
pub mod lane;
pub mod registry_view;
pub mod retry;
pub mod retry_queue;
mod sealed_headers;
pub mod sender;
pub mod settings;
pub mod ssrf;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use hookfleet_topology::{Link, Publisher, Topology, supervise};
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

use crate::amqp_destination::AmqpDestinations;
use crate::breaker::{Containment, Limits};
use crate::brokers::Brokers;
use crate::delivery::Deliverer;
use crate::registry_view::RegistryView;
use crate::retry::RetryPolicy;
use crate::sender::Sender;
use crate::ssrf::AddressPolicy;

pub use hookfleet_telemetry::Running;

/// Starts consuming delivery tasks until `cancel` fires, then drains.
pub async fn start(settings: Settings, cancel: CancellationToken) -> anyhow::Result<Running> {
    let lane_limits = lane::LaneLimits {
        prefetch: settings.delivery.lane_prefetch,
        hold: usize::from(settings.delivery.lane_hold_limit),
    };
    anyhow::ensure!(
        lane_limits.hold >= 1 && lane_limits.hold < usize::from(lane_limits.prefetch),
        "delivery.lane_hold_limit ({}) must be at least 1 and below delivery.lane_prefetch ({})",
        lane_limits.hold,
        lane_limits.prefetch
    );
    let policy = RetryPolicy::new(
        settings.delivery.retry_schedule.0.clone(),
        settings.delivery.jitter_percent,
        settings.delivery.overload_min_delay,
        settings.delivery.retry_after_max,
    );
    let topology = Topology::from_settings(&settings.amqp);
    let registry = Arc::new(RegistryView::default());
    let following = tokio::spawn(registry_view::follow(
        registry.clone(),
        settings.amqp.clone(),
        cancel.clone(),
    ));
    let link = Link::default();
    let address_policy = Arc::new(AddressPolicy::parse(&settings.delivery.ssrf_allow)?);
    let sealer = hookfleet_signing::Sealer::from_base64(&settings.secrets.key)?;
    let timeout = Duration::from_millis(settings.delivery.timeout_ms);
    let deliverer = Arc::new(Deliverer {
        registry,
        topology: topology.clone(),
        sender: Sender::new(&settings.delivery, address_policy.clone())?,
        policy,
        containment: Containment::new(Limits {
            max_in_flight: match settings.delivery.max_in_flight_per_endpoint {
                0 => u32::from(settings.amqp.prefetch).max(1),
                cap => cap,
            },
            failure_threshold: settings.delivery.breaker_failure_threshold.max(1),
            open_for: settings.delivery.breaker_open_for,
        }),
        sealer: sealer.clone(),
        destinations: AmqpDestinations::new(
            link.clone(),
            Brokers::new(address_policy, timeout),
            sealer,
            topology.prefix(),
            timeout,
        ),
    });

    let listener = hookfleet_telemetry::bind(&settings.listen).await?;
    let addr = listener.local_addr()?;
    let probe_link = link.clone();
    let app: axum::Router = hookfleet_telemetry::probes(move || probe_link.is_ready());
    let http = hookfleet_telemetry::serve_http(listener, app, &settings.listen, cancel.clone());

    let drain = Duration::from_millis(settings.delivery.drain_ms);
    let retry_queues =
        retry_queue::RetryQueues::new(deliverer.clone(), settings.amqp.prefetch, drain);
    let amqp = settings.amqp.clone();
    let task = tokio::spawn(async move {
        let session_cancel = cancel.clone();
        let prefetch = amqp.prefetch;
        supervise(
            &amqp,
            "hookfleet-worker",
            link,
            cancel.clone(),
            |connection: Arc<lapin::Connection>, publisher: Publisher| {
                let deliverer = deliverer.clone();
                let retry_queues = retry_queues.clone();
                let cancel = session_cancel.clone();
                async move {
                    // Retries, each queue held by one worker of the fleet.
                    let retries: Vec<_> = (0..hookfleet_contract::RETRY_QUEUES)
                        .map(|queue| {
                            retry_queues.clone().hold(
                                connection.clone(),
                                publisher.clone(),
                                queue,
                                cancel.clone(),
                            )
                        })
                        .collect();
                    // Every worker waits on every lane; the broker makes one
                    // of them the active consumer of each.
                    let lanes: Vec<_> = (0..hookfleet_contract::LANES)
                        .map(|lane| {
                            lane::hold(
                                deliverer.clone(),
                                connection.clone(),
                                publisher.clone(),
                                lane,
                                lane_limits,
                                cancel.clone(),
                                drain,
                            )
                        })
                        .collect();
                    let queue = deliverer.topology.deliver_queue();
                    let fast = hookfleet_topology::consume(
                        &connection,
                        &queue,
                        prefetch,
                        &cancel,
                        drain,
                        move |delivery, settle| {
                            deliverer
                                .clone()
                                .handle(publisher.clone(), delivery, settle)
                        },
                    );
                    futures_util::try_join!(
                        fast,
                        futures_util::future::try_join_all(lanes),
                        futures_util::future::try_join_all(retries)
                    )
                    .map(|_| ())
                }
            },
        )
        .await;
        let _ = http.await;
        let _ = following.await;
        tracing::info!("worker stopped");
    });
    Ok(Running { addr, task })
}
