//! The ledger's read model: what the read API shows, as queries. The
//! handlers in [`crate::api`] parse a request, call one of these and shape
//! the answer; the SQL and the arithmetic live here.

pub mod attempts;
pub mod endpoint_stats;
pub mod events;
pub mod latency;

pub use hookfleet_db::tokio_postgres::Error;
