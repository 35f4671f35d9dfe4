//! Per-tenant ingest rate (issue 16 item 5): a token bucket per tenant, in
//! this process's memory. Over the rate, HTTP ingest answers 429 with
//! `Retry-After`. Each producer replica keeps its own buckets, so the rate
//! a tenant gets is per replica; the limit is there to keep one tenant
//! from taking the broker connection's whole capacity, not to bill.
//! Events published straight over AMQP are not counted: AMQP publishers
//! are trusted (see the README's trust model).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct IngestRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl IngestRate {
    /// `per_second` events a second on average, `burst` at once; a rate of
    /// 0 means no limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(per_second).max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes `events` tokens from the tenant's bucket, or says how long
    /// until there are enough.
    pub fn admit(&self, tenant: &str, events: usize) -> Result<(), Duration> {
        self.admit_at(tenant, events, Instant::now())
    }

    fn admit_at(&self, tenant: &str, events: usize, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let wanted = events as f64;
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let missing = wanted.min(self.burst) - bucket.tokens;
        Err(Duration::from_secs_f64(missing / self.per_second))
    }
}

/// The `Retry-After` seconds for a wait.
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let rate = IngestRate::new(10, 20);
        let start = Instant::now();
        assert!(rate.admit_at("a", 20, start).is_ok());
        let wait = rate.admit_at("a", 1, start).unwrap_err();
        assert_eq!(retry_after(wait), 1);
        assert!(
            rate.admit_at("b", 20, start).is_ok(),
            "b has its own bucket"
        );
        // Half a second later, 5 more.
        let later = start + Duration::from_millis(500);
        assert!(rate.admit_at("a", 5, later).is_ok());
        assert!(rate.admit_at("a", 1, later).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let rate = IngestRate::new(0, 0);
        assert!(rate.admit("a", 1_000_000).is_ok());
    }
}
