//! The end-to-end suite: one test binary (one link, one build) with a
//! module per area. Each test starts what it needs against the real
//! RabbitMQ and PostgreSQL, with its own database and name prefix. Tests that
//! install a process-wide recorder or exporter (`metrics.rs`, `tracing.rs`)
//! stay binaries of their own.

mod containment;
mod delivery;
mod dlq;
mod endpoint_health;
mod endpoints;
mod frame_limit;
mod ingest;
mod ingest_errors;
mod ledger_api;
mod ledger_outage;
mod openapi;
mod proxy;
mod quotas;
mod recovery;
mod retention;
mod retries;
mod secrets;
mod settle_order;
mod stale_endpoints;
mod task_binding;
mod tenants;
mod walking_skeleton;
mod worker_lifecycle;
