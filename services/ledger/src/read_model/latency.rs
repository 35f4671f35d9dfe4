//! The arithmetic of an endpoint's stats, without I/O: which part of a
//! window the hourly rollups cover, and latency percentiles from a
//! histogram of bucketed durations.

/// One hour in milliseconds: the rollups' granularity.
pub const HOUR_MS: i64 = 3_600_000;

/// The whole hours within `[since, until)` in milliseconds, as `[first,
/// last)`; empty (first >= last) when there are none. The rollups answer
/// for them; the ragged ends come from the attempts themselves.
pub fn whole_hours(since: i64, until: i64) -> (i64, i64) {
    let first = since + (HOUR_MS - since.rem_euclid(HOUR_MS)) % HOUR_MS;
    let last = until - until.rem_euclid(HOUR_MS);
    if first < last {
        (first, last)
    } else {
        (until, until)
    }
}

/// How many buckets there are: the last holds every duration from about
/// 56 s up.
const BUCKETS: usize = 50;

/// Attempt durations by bucket, as `hookfleet_latency_bucket` (migration
/// V7) sorts them: bucket b holds ln(d) / ln(1.25) in [b, b + 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram([i64; BUCKETS]);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self([0; BUCKETS])
    }
}

impl LatencyHistogram {
    /// Counts `count` attempts in `bucket`; a bucket out of range is
    /// ignored.
    pub fn add(&mut self, bucket: i32, count: i64) {
        if let Some(slot) = usize::try_from(bucket).ok().and_then(|b| self.0.get_mut(b)) {
            *slot += count;
        }
    }

    /// The `q` quantile, as the geometric middle of its bucket (within 12%
    /// of the exact value), rounded to 0.1 ms; `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let total: i64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        let bucket = self.0.iter().position(|&count| {
            seen += count;
            seen >= rank
        })?;
        Some((1.25_f64.powf(bucket as f64 + 0.5) * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_leave_the_ragged_ends_out() {
        let h = HOUR_MS;
        assert_eq!(whole_hours(h / 2, 3 * h + 5), (h, 3 * h));
        assert_eq!(whole_hours(h, 3 * h), (h, 3 * h));
        // Less than an hour, or no whole hour inside: none.
        assert_eq!(whole_hours(h + 1, 2 * h - 1), (2 * h - 1, 2 * h - 1));
        assert_eq!(whole_hours(h / 2, h + h / 2), (h + h / 2, h + h / 2));
        // Before 1970 too.
        assert_eq!(whole_hours(-2 * h - 1, -1), (-2 * h, -h));
    }

    #[test]
    fn percentiles_come_from_the_bucket_holding_the_rank() {
        let mut histogram = LatencyHistogram::default();
        assert_eq!(histogram.percentile(0.5), None);
        // 90 attempts near 10 ms (bucket 10), 10 near 100 ms (bucket 20).
        histogram.add(10, 90);
        histogram.add(20, 10);
        let p50 = histogram.percentile(0.5).unwrap();
        let p95 = histogram.percentile(0.95).unwrap();
        assert!((9.3..=11.6).contains(&p50), "{p50}");
        assert!((86.7..=108.4).contains(&p95), "{p95}");
        // The 90th attempt is the last in bucket 10, the 91st the first in
        // bucket 20.
        assert_eq!(histogram.percentile(0.90), Some(p50));
        assert_eq!(histogram.percentile(0.91), Some(p95));
        // Out-of-range buckets are ignored rather than panicking.
        histogram.add(50, 1);
        histogram.add(-1, 1);
        assert_eq!(histogram.percentile(1.0), Some(p95));
    }

    #[test]
    fn a_single_attempt_is_every_percentile() {
        let mut histogram = LatencyHistogram::default();
        histogram.add(0, 1);
        // Bucket 0 holds 1 ms to 1.25 ms: its geometric middle.
        assert_eq!(histogram.percentile(0.0), Some(1.1));
        assert_eq!(histogram.percentile(0.5), Some(1.1));
        assert_eq!(histogram.percentile(1.0), Some(1.1));
    }
}
