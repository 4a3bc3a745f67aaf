//! The hub's clock: wall time that follows Tokio's clock, so tests can pause and advance it.
//!
//! Every TTL, lock, expiry and feedback timer in the hub reads [`Clock::now`]. It is the wall
//! time at start plus the Tokio time elapsed since, so under `#[tokio::test(start_paused =
//! true)]` with `tokio::time::advance` a test moves the hub's time without waiting.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Wall-clock time driven by Tokio's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start_wall: SystemTime,
    start: Instant,
}

impl Clock {
    /// A clock that reads the system time now and follows Tokio's clock from here.
    pub fn new() -> Self {
        Clock {
            start_wall: SystemTime::now(),
            start: Instant::now(),
        }
    }

    /// The current wall time.
    pub fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }

    /// The Tokio instant at which the wall time will be `at` (now, if `at` has passed).
    pub fn instant_at(&self, at: SystemTime) -> Instant {
        let now = Instant::now();
        now + at.duration_since(self.now()).unwrap_or(Duration::ZERO)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
