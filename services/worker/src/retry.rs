//! The retry policy: when, if at all, a failed delivery is tried again. A
//! pure function of the attempt, how it failed and the receiver's
//! `Retry-After`; no I/O, no clock.

use std::time::{Duration, SystemTime};

use crate::classify::Verdict;

/// Why a policy setting was refused; the message names the key.
/// Delays before each retry. Attempt 1 is immediate; after attempt n fails,
/// attempt n+1 is due after the n-th delay, spread by the jitter. A
/// receiver that signals overload (429, 502-504, timeouts) waits at least
/// `overload_min`; a `Retry-After` is honoured up to `retry_after_max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
    jitter_percent: u8,
    overload_min: Duration,
    retry_after_max: Duration,
}

impl RetryPolicy {
    /// The policy of the settings `delivery.retry_schedule`,
    /// `jitter_percent`, `overload_min_delay` and `retry_after_max`.
    pub fn new(
        delays: Vec<Duration>,
        jitter_percent: u8,
        overload_min: Duration,
        retry_after_max: Duration,
    ) -> Self {
        Self {
            delays,
            jitter_percent: jitter_percent.min(100),
            overload_min,
            retry_after_max,
        }
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay before the attempt after `failed_attempt`, or `None` when
    /// there is to be no other attempt. `unit` is a random number in [0, 1)
    /// that places the delay in the jitter band.
    pub fn next_delay(
        &self,
        failed_attempt: u32,
        verdict: Verdict,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        if matches!(verdict, Verdict::Delivered | Verdict::Gone) {
            return None;
        }
        let base = *self.delays.get(failed_attempt.checked_sub(1)? as usize)?;
        let spread = f64::from(self.jitter_percent) / 100.0;
        let factor = 1.0 + spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let mut delay = base.mul_f64(factor.max(0.0));
        if verdict == Verdict::Overloaded {
            delay = delay.max(self.overload_min);
        }
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(self.retry_after_max));
        }
        Some(delay)
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schedule: &str, jitter: u8) -> RetryPolicy {
        RetryPolicy::new(
            hookfleet_config::Durations::parse(schedule).unwrap().0,
            jitter,
            Duration::from_secs(30),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn the_default_schedule_gives_eight_attempts() {
        let p = policy("5s,5m,30m,2h,5h,10h,10h", 0);
        assert_eq!(p.max_attempts(), 8);
        let next = |n| p.next_delay(n, Verdict::Failed, None, 0.5);
        assert_eq!(next(1), Some(Duration::from_secs(5)));
        assert_eq!(next(2), Some(Duration::from_secs(300)));
        assert_eq!(next(7), Some(Duration::from_secs(36_000)));
        assert_eq!(next(8), None);
        assert_eq!(next(0), None);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = policy("100s", 20);
        assert_eq!(
            p.next_delay(1, Verdict::Failed, None, 0.0),
            Some(Duration::from_secs(80))
        );
        assert_eq!(
            p.next_delay(1, Verdict::Failed, None, 0.5),
            Some(Duration::from_secs(100))
        );
        let high = p.next_delay(1, Verdict::Failed, None, 0.999_999).unwrap();
        assert!(high <= Duration::from_secs(120) && high > Duration::from_secs(119));
    }

    #[test]
    fn overload_backs_off_harder() {
        let p = policy("5s", 0);
        assert_eq!(
            p.next_delay(1, Verdict::Overloaded, None, 0.5),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            p.next_delay(1, Verdict::Failed, None, 0.5),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = policy("5s,5m", 0);
        let asked = |secs| Some(Duration::from_secs(secs));
        // Longer than the schedule: wait as asked.
        assert_eq!(
            p.next_delay(1, Verdict::Overloaded, asked(120), 0.5),
            asked(120)
        );
        // Shorter than the schedule: the schedule still applies.
        assert_eq!(p.next_delay(2, Verdict::Failed, asked(10), 0.5), asked(300));
        // Beyond the cap: capped.
        assert_eq!(
            p.next_delay(1, Verdict::Overloaded, asked(86_400), 0.5),
            asked(3600)
        );
    }

    #[test]
    fn success_and_gone_are_final() {
        let p = policy("5s", 0);
        assert_eq!(p.next_delay(1, Verdict::Delivered, None, 0.5), None);
        assert_eq!(p.next_delay(1, Verdict::Gone, None, 0.5), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
