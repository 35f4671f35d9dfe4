//! The SSRF guard: endpoints must not reach internal addresses.
//!
//! A hostname is resolved by the guard itself and only permitted addresses
//! are handed to the HTTP client, so the connection goes to an address that
//! was checked (no DNS rebinding between check and connect). An IP literal
//! is checked before the request is made.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The address policy itself is pure and shared: the producer applies it
/// when an endpoint is created, the worker at every delivery.
pub use hookfleet_contract::address::{AddressPolicy, BadAllowList, internal_kind};

/// The DNS resolver the HTTP client uses: system resolution, then the
/// address policy.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.refusal(addr.ip()) {
                    None => true,
                    Some(kind) => {
                        refused = Some(format!("{} is a {kind} address", addr.ip()));
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let why = refused.unwrap_or_else(|| "no addresses".to_owned());
                return Err(format!("refused by the SSRF guard: {host}: {why}").into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}
