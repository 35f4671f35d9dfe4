//! The retry schedule: a pure policy, no I/O and no clock.

use std::time::Duration;

/// Delays before each retry. Attempt 1 is immediate; after attempt n fails,
/// attempt n+1 is due after the n-th delay, spread by the jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery.retry_schedule {0:?}: expected comma-separated durations such as 5s,5m,2h")]
pub struct BadSchedule(String);

impl RetrySchedule {
    pub fn parse(raw: &str, jitter_percent: u8) -> Result<Self, BadSchedule> {
        let delays = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(humantime::parse_duration)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BadSchedule(raw.to_owned()))?;
        Ok(Self {
            delays,
            jitter_percent: jitter_percent.min(100),
        })
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay before the attempt after `failed_attempt`, or `None` when
    /// that was the last one. `unit` is a random number in [0, 1) that picks
    /// where in the jitter band the delay falls.
    pub fn next_delay(&self, failed_attempt: u32, unit: f64) -> Option<Duration> {
        let base = *self.delays.get(failed_attempt.checked_sub(1)? as usize)?;
        let spread = f64::from(self.jitter_percent) / 100.0;
        let factor = 1.0 + spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_gives_eight_attempts() {
        let schedule = RetrySchedule::parse("5s,5m,30m,2h,5h,10h,10h", 0).unwrap();
        assert_eq!(schedule.max_attempts(), 8);
        assert_eq!(schedule.next_delay(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(schedule.next_delay(2, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(
            schedule.next_delay(7, 0.5),
            Some(Duration::from_secs(36_000))
        );
        assert_eq!(schedule.next_delay(8, 0.5), None);
        assert_eq!(schedule.next_delay(0, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let schedule = RetrySchedule::parse("100s", 20).unwrap();
        assert_eq!(schedule.next_delay(1, 0.0), Some(Duration::from_secs(80)));
        assert_eq!(schedule.next_delay(1, 0.5), Some(Duration::from_secs(100)));
        let high = schedule.next_delay(1, 0.999_999).unwrap();
        assert!(high <= Duration::from_secs(120) && high > Duration::from_secs(119));
    }

    #[test]
    fn a_bad_schedule_is_refused() {
        assert!(RetrySchedule::parse("5s,soon", 20).is_err());
        assert_eq!(RetrySchedule::parse("", 0).unwrap().max_attempts(), 1);
    }
}
