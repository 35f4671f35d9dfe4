//! The producer: the front door of hookfleet. It serves the ingest API and
//! the endpoint registry over HTTP and runs the fan-out router.

pub mod api;
pub mod broadcast;
pub mod catalogue;
mod changes;
pub mod claims;
pub mod cli;
pub mod fanout;
pub mod inbound;
pub mod index;
pub mod ingest;
pub mod key_order;
pub mod ledger_proxy;
pub mod portal;
pub mod quota;
pub mod registry;
pub mod router;
pub mod settings;
pub mod sources;

use std::sync::Arc;
use std::time::Duration;

use hookfleet_db::TokenStore;
use hookfleet_topology::{Link, Topology, consume_supervised};
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

use crate::api::ApiState;
use crate::broadcast::RegistryBroadcaster;
use crate::catalogue::{Catalogue, CatalogueStore};
use crate::claims::Claims;
use crate::fanout::Fanout;
use crate::index::SubscriptionIndex;
use crate::registry::EndpointRegistry;
use crate::router::Router;
use crate::sources::SourceRegistry;

/// How long in-flight routings get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub use hookfleet_telemetry::Running;

/// Migrates (if configured), binds the HTTP listener and starts the API and
/// the router. Runs until `cancel` fires.
pub async fn start(settings: Settings, cancel: CancellationToken) -> anyhow::Result<Running> {
    if settings.database.migrate_on_start {
        hookfleet_db::migrate(&settings.database).await?;
    }
    let pool = hookfleet_db::pool(&settings.database)?;
    let sealer = hookfleet_signing::Sealer::from_base64(&settings.secrets.key)?;
    let stamper = hookfleet_signing::Stamper::from_base64(&settings.secrets.key)?;
    let registry = EndpointRegistry::new(pool.clone(), sealer.clone());
    let sealed = registry.seal_plaintext_headers().await?;
    if sealed > 0 {
        tracing::info!(endpoints = sealed, "sealed custom headers stored in clear");
    }
    let sources = SourceRegistry::new(
        pool.clone(),
        sealer.clone(),
        Duration::from_millis(settings.auth.token_outage_grace_ms),
    );
    let tokens = TokenStore::from_settings(pool.clone(), &settings.auth);
    let rotation_grace = settings.endpoints.rotation_grace;
    let retention = settings.ingest.idempotency_retention;
    let broadcast_every = settings.endpoints.broadcast_every;
    let index = Arc::new(SubscriptionIndex::new(pool.clone(), sealer.clone()));
    index.reload().await?;
    let maintenance = tokio::spawn(
        index
            .clone()
            .maintain(settings.database.clone(), cancel.clone()),
    );
    let catalogue = Arc::new(Catalogue::new(pool.clone()));
    catalogue.reload().await?;
    let catalogue_upkeep = tokio::spawn(
        catalogue
            .clone()
            .maintain(settings.database.clone(), cancel.clone()),
    );
    let forgetting = tokio::spawn(forget_routed_events(
        pool.clone(),
        retention,
        cancel.clone(),
    ));
    let topology = Topology::from_settings(&settings.amqp);
    let link = Link::default();
    let broadcaster = Arc::new(RegistryBroadcaster {
        pool: pool.clone(),
        sealer,
        topology: topology.clone(),
        link: link.clone(),
        every: broadcast_every,
        sending: Default::default(),
    });
    let broadcasting = tokio::spawn(broadcaster.clone().run(index.clone(), cancel.clone()));

    let fanout = Fanout {
        topology: topology.clone(),
        index: index.clone(),
    };

    let listener = hookfleet_telemetry::bind(&settings.listen).await?;
    let addr = listener.local_addr()?;
    let admin_listener = match settings.auth.admin_listen.as_str() {
        "" => None,
        at => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("auth.admin_listen {at:?}: {e}"))?,
        ),
    };
    let state = ApiState {
        link: link.clone(),
        topology: topology.clone(),
        registry,
        sources,
        index: index.clone(),
        broadcaster,
        ingest_rate: Arc::new(quota::IngestRate::new(
            settings.ingest.rate_per_second,
            settings.ingest.burst,
        )),
        max_endpoints: settings.endpoints.max_per_tenant,
        fanout: fanout.clone(),
        catalogue: catalogue.clone(),
        catalogue_store: CatalogueStore::new(pool.clone()),
        tokens,
        stamper: stamper.clone(),
        ingest: settings.ingest.clone(),
        rotation_grace,
        portal_key: Arc::new(hookfleet_contract::portal::PortalKey::derive(
            &settings.secrets.key,
        )),
        address_policy: Arc::new(
            hookfleet_contract::address::AddressPolicy::parse(&settings.endpoints.ssrf_allow)
                .map_err(|e| anyhow::anyhow!("endpoints.{e}"))?,
        ),
    };
    let admin_http = admin_listener.map(|admin| {
        let app = api::admin_router(state.clone(), &settings.listen);
        hookfleet_telemetry::serve_http(admin, app, &settings.listen, cancel.clone())
    });
    let ledger = ledger_proxy::LedgerProxy::new(&settings.ledger)?;
    let app = api::router(state, ledger, &settings.listen, admin_http.is_some());
    let http = hookfleet_telemetry::serve_http(listener, app, &settings.listen, cancel.clone());

    let router = Arc::new(Router {
        topology: topology.clone(),
        fanout,
        claims: Claims::start(pool),
        catalogue,
        stamper,
        tenant_is_user: settings.ingest.amqp_tenant_is_user,
        max_payload_bytes: settings.ingest.max_payload_bytes,
        cancel: cancel.clone(),
        key_order: Default::default(),
    });
    let amqp = settings.amqp.clone();
    let task = tokio::spawn(async move {
        let route_queue = topology.route_queue();
        consume_supervised(
            &amqp,
            "hookfleet-producer",
            link,
            cancel.clone(),
            route_queue,
            DRAIN,
            move |publisher, delivery, settle| router.clone().dispatch(publisher, delivery, settle),
        )
        .await;
        let _ = http.await;
        if let Some(admin_http) = admin_http {
            let _ = admin_http.await;
        }
        let _ = maintenance.await;
        let _ = catalogue_upkeep.await;
        let _ = forgetting.await;
        let _ = broadcasting.await;
        tracing::info!("producer stopped");
    });
    Ok(Running { addr, task })
}

/// Deletes remembered event ids older than the idempotency retention,
/// every ten minutes.
async fn forget_routed_events(
    pool: hookfleet_db::deadpool_postgres::Pool,
    retention: Duration,
    cancel: CancellationToken,
) {
    loop {
        let result = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "DELETE FROM routed_events WHERE routed_at < now() - make_interval(secs => $1)",
                    &[&retention.as_secs_f64()],
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not forget old event ids");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}
