//! The ledger: records every routed event and every attempt in Postgres and
//! serves the read side.

pub mod api;
pub mod batches;
pub mod cli;
pub mod dlq;
pub mod health;
pub mod parking;
pub mod quota;
pub mod read_model;
pub mod recorder;
pub mod recover;
pub mod replay;
pub mod retention;
pub mod settings;
pub mod store;

use std::sync::Arc;

use hookfleet_topology::{Link, Publisher, Topology, supervise};
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

use crate::health::EndpointHealth;
use crate::recorder::Recorder;
use crate::recover::Recoveries;
use crate::replay::Resender;
use crate::store::LedgerStore;

pub use hookfleet_telemetry::Running;

pub async fn start(settings: Settings, cancel: CancellationToken) -> anyhow::Result<Running> {
    if settings.database.migrate_on_start {
        hookfleet_db::migrate(&settings.database).await?;
    }
    let pool = hookfleet_db::pool(&settings.database)?;
    let store = LedgerStore::new(pool.clone());
    let tokens = hookfleet_db::TokenStore::from_settings(
        pool,
        &hookfleet_config::AuthSettings {
            admin_token: String::new(),
            ..settings.auth.clone()
        },
    );
    let topology = Topology::from_settings(&settings.amqp);
    let link = Link::default();

    let listener = hookfleet_telemetry::bind(&settings.listen).await?;
    let addr = listener.local_addr()?;
    let probe_link = link.clone();
    let resender = Resender {
        pool: store.pool().clone(),
        link: link.clone(),
        topology: topology.clone(),
        sealer: hookfleet_signing::Sealer::from_base64(&settings.secrets.key)?,
    };
    let recoveries = Arc::new(Recoveries {
        pool: store.pool().clone(),
        resender: resender.clone(),
        rate_per_second: settings.recover.rate_per_second,
        cancel: cancel.clone(),
        max_in_flight_per_tenant: settings.recover.max_in_flight_per_tenant,
        running: Arc::new(tokio::sync::Semaphore::new(
            settings.recover.max_running.max(1),
        )),
    });
    recoveries.clone().resume().await;
    let api = api::router(api::ReadState {
        store: store.clone(),
        tokens,
        resender,
        recoveries,
        replays: Arc::new(quota::InFlight::new(
            settings.replay.max_in_flight_per_tenant,
        )),
        dead_letters: dlq::DeadLetters {
            pool: store.pool().clone(),
            link: link.clone(),
        },
    });
    // Portal sessions are checked here too: the producer forwards them.
    let api = api.layer(axum::middleware::from_fn_with_state(
        Arc::new(hookfleet_contract::portal::PortalKey::derive(
            &settings.secrets.key,
        )),
        hookfleet_contract::portal::guard,
    ));
    let app = hookfleet_telemetry::api_edge(api, &settings.listen)
        .merge(hookfleet_telemetry::probes(move || probe_link.is_ready()));
    let http = hookfleet_telemetry::serve_http(listener, app, &settings.listen, cancel.clone());

    let health = Arc::new(EndpointHealth {
        pool: store.pool().clone(),
        link: link.clone(),
        topology: topology.clone(),
        stamper: hookfleet_signing::Stamper::from_base64(&settings.secrets.key)?,
        disable_after: settings.health.disable_after,
        sweep_every: settings.health.sweep_every,
    });
    let sweeping = tokio::spawn(health.clone().run(cancel.clone()));
    let retention = Arc::new(retention::Retention {
        pool: store.pool().clone(),
        period: settings.retention.period,
        check_every: settings.retention.check_every,
    });
    let retaining = tokio::spawn(retention.run(cancel.clone()));
    let parking = Arc::new(parking::Parking {
        topology: topology.clone(),
        pool: store.pool().clone(),
    });
    let recorder = Arc::new(Recorder {
        topology,
        store,
        settings: settings.recorder.clone(),
        health,
    });
    let amqp = settings.amqp.clone();
    let task = tokio::spawn(async move {
        let session_cancel = cancel.clone();
        supervise(
            &amqp,
            "hookfleet-ledger",
            link,
            cancel.clone(),
            |connection: Arc<lapin::Connection>, publisher: Publisher| {
                let recorder = recorder.clone();
                let parking = parking.clone();
                let cancel = session_cancel.clone();
                // Either failing ends the session; the other's unacked
                // messages go back to their queue with the connection.
                async move {
                    tokio::try_join!(
                        recorder.run(&connection, publisher, &cancel),
                        parking.run(&connection, &cancel),
                    )
                    .map(|_| ())
                }
            },
        )
        .await;
        let _ = http.await;
        let _ = sweeping.await;
        let _ = retaining.await;
        tracing::info!("ledger stopped");
    });
    Ok(Running { addr, task })
}
