//! The end-to-end suite: one test binary (one link, one build) with a
//! module per area. Each test starts what it needs against the real
//! RabbitMQ and PostgreSQL, with its own database and name prefix. Tests that
//! install a process-wide recorder or exporter (`metrics.rs`, `tracing.rs`)
//! stay binaries of their own.

mod amqp_tls;
mod api_document;
mod containment;
mod database_tls;
mod delivery;
mod destination_brokers;
mod destinations;
mod dlq;
mod doc_links;
mod endpoint_health;
mod endpoints;
mod event_types;
mod failover;
mod frame_limit;
mod hardening;
mod ingest;
mod ingest_errors;
mod ledger_api;
mod ledger_outage;
mod one_url;
mod openapi;
mod ordering;
mod portal;
mod portal_browser;
mod proxy;
mod quotas;
mod recovery;
mod retention;
mod retries;
mod retry_copies;
mod secrets;
mod settle_order;
mod sources;
mod stale_endpoints;
mod task_binding;
mod tenants;
mod tokens;
mod walking_skeleton;
mod worker_lifecycle;
