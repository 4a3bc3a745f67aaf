//! Reconnection backoff, shared by the device and service clients.

use std::time::Duration;

/// Reconnection after a lost connection: exponential backoff with jitter, and an optional limit
/// on attempts in a row.
///
/// Built from [`RetryPolicy::default`] (or [`RetryPolicy::new`], the same) and adjusted with the
/// builder-style setters:
///
/// ```
/// use std::time::Duration;
/// use iothub::RetryPolicy;
///
/// let policy = RetryPolicy::new()
///     .with_initial_delay(Duration::from_millis(100))
///     .with_max_delay(Duration::from_secs(5))
///     .with_max_attempts(Some(10));
/// assert_eq!(policy.max_attempts(), Some(10));
/// assert!(policy.delay(1) <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    /// 250 ms first delay, doubling up to 30 s, 20 % jitter, no limit on attempts.
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy: 250 ms first delay, doubling up to 30 s, 20 % jitter, no limit on
    /// attempts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first delay (default 250 ms).
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The longest delay (default 30 s).
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Each delay is the previous one times this (default 2; values below 1 count as 1).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Up to this share of each delay is random, from 0 to 1 (default 0.2), so that many
    /// clients do not reconnect in step.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Give up after this many failed attempts in a row (default `None`: never).
    pub fn with_max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The first delay.
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// The longest delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The factor between one delay and the next.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The random share of each delay.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// How many failed attempts in a row end the retries (`None`: never).
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Whether `failed` failed attempts in a row are the limit.
    #[cfg_attr(not(feature = "service"), allow(dead_code))]
    pub(crate) fn gives_up_after(&self, failed: u32) -> bool {
        self.max_attempts.is_some_and(|max| failed >= max)
    }

    /// The delay before attempt `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let base = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * base * random_unit();
        Duration::from_secs_f64((base - jitter).max(0.0))
    }
}

/// A number in [0, 1) from the OS random source.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_jitter_only_shortens() {
        let policy = RetryPolicy::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_multiplier(2.0)
            .with_jitter(0.5);
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (50, 1000),
        ] {
            let delay = policy.delay(attempt);
            let full = Duration::from_millis(full);
            assert!(
                delay <= full && delay >= full / 2,
                "attempt {attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn a_limit_counts_failures_in_a_row() {
        let unlimited = RetryPolicy::default();
        assert!(!unlimited.gives_up_after(u32::MAX));
        let three = RetryPolicy::new().with_max_attempts(Some(3));
        assert!(!three.gives_up_after(2));
        assert!(three.gives_up_after(3));
    }
}
