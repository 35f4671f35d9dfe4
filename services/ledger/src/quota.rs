//! Per-tenant limits on work in flight in this ledger process (issue 16
//! item 5): a tenant over its share gets 429 with `Retry-After` instead of
//! taking the broker connection and the database from everyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many operations of one kind each tenant may have running at once.
#[derive(Debug)]
pub struct InFlight {
    max: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// A place taken; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    tenant: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    /// `max` at once per tenant; 0 means no limit.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for `tenant`, or `None` if it has `max` running.
    pub fn try_enter(&self, tenant: &str) -> Option<Slot> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(tenant.to_owned()).or_default();
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            tenant: tenant.to_owned(),
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.get_mut(&self.tenant)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_places_and_they_come_back() {
        let replays = InFlight::new(2);
        let a1 = replays.try_enter("a").unwrap();
        let _a2 = replays.try_enter("a").unwrap();
        assert!(replays.try_enter("a").is_none());
        assert!(replays.try_enter("b").is_some());
        drop(a1);
        assert!(replays.try_enter("a").is_some());
        assert!(InFlight::new(0).try_enter("a").is_some());
    }
}
