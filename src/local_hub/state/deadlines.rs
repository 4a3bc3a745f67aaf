//! The deadline index: when each device's C2D queue next needs the sweep (a message expiring
//! or a delivery lock lapsing), ordered by time, so that a sweep visits only the devices whose
//! deadline has come and the message path never does work proportional to the registry.
//!
//! One entry per device at most (its queue's earliest deadline). An entry may be earlier than
//! the queue's real deadline (a lock that was completed since): the sweep then visits the
//! device for nothing and files its new deadline. It is never later: every change that can
//! bring a queue's deadline forward (an enqueue, a delivery lock) files it here.
//!
//! The index also remembers when the sweep task plans to wake next, so that the message path
//! wakes it only for a deadline earlier than that.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// The sweep never waits less than this (a burst of due deadlines is taken in one sweep).
pub(crate) const SWEEP_MIN_WAIT: Duration = Duration::from_millis(5);
/// The sweep never waits more than this: telemetry retention and feedback expiry are checked
/// at least this often.
pub(crate) const SWEEP_MAX_WAIT: Duration = Duration::from_secs(1);

/// How long the sweep task sleeps when the next deadline is `next` and the time is `now`.
pub(crate) fn sweep_wait(next: Option<SystemTime>, now: SystemTime) -> Duration {
    next.map_or(SWEEP_MAX_WAIT, |at| {
        at.duration_since(now).unwrap_or_default()
    })
    .clamp(SWEEP_MIN_WAIT, SWEEP_MAX_WAIT)
}

/// Device ids by deadline.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// (deadline, entry number) → device id. The entry number keeps keys unique and lets an
    /// entry move to a new deadline without allocating.
    by_time: BTreeMap<(SystemTime, u64), String>,
    /// Device id → its key in `by_time`.
    by_id: HashMap<String, (SystemTime, u64)>,
    next_entry: u64,
    /// When the sweep task wakes next, as it planned at its last sweep.
    planned_wake: Option<SystemTime>,
}

impl Deadlines {
    /// Files `id`'s next deadline (`None`: it has none). Returns whether that deadline comes
    /// before the sweep task's planned wake, so the task must be woken.
    pub fn set(&mut self, id: &str, at: Option<SystemTime>) -> bool {
        match (self.by_id.get_mut(id), at) {
            (Some(key), Some(at)) => {
                if key.0 != at {
                    let name = self
                        .by_time
                        .remove(key)
                        .expect("by_time and by_id hold the same entries");
                    key.0 = at;
                    self.by_time.insert(*key, name);
                }
            }
            (Some(_), None) => {
                if let Some(key) = self.by_id.remove(id) {
                    self.by_time.remove(&key);
                }
            }
            (None, Some(at)) => {
                self.next_entry += 1;
                let key = (at, self.next_entry);
                self.by_time.insert(key, id.to_owned());
                self.by_id.insert(id.to_owned(), key);
            }
            (None, None) => {}
        }
        at.is_some_and(|at| self.wakes_sooner(at))
    }

    /// Whether `at` comes before the sweep task's planned wake.
    pub fn wakes_sooner(&self, at: SystemTime) -> bool {
        self.planned_wake.is_none_or(|planned| at < planned)
    }

    /// Removes and returns the devices whose deadline is at or before `now`.
    pub fn take_due(&mut self, now: SystemTime) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let name = entry.remove();
            self.by_id.remove(&name);
            due.push(name);
        }
        due
    }

    /// The earliest deadline filed.
    pub fn earliest(&self) -> Option<SystemTime> {
        self.by_time.keys().next().map(|(at, _)| *at)
    }

    /// Records when the sweep task wakes next.
    pub fn plan_wake(&mut self, at: SystemTime) {
        self.planned_wake = Some(at);
    }

    /// Devices filed (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        debug_assert_eq!(self.by_time.len(), self.by_id.len());
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn due_devices_come_out_in_deadline_order_and_moves_keep_one_entry_each() {
        let mut index = Deadlines::default();
        assert!(index.set("a", Some(t(30))), "nothing planned: wake");
        index.set("b", Some(t(10)));
        index.set("c", Some(t(20)));
        index.set("a", Some(t(5)));
        index.set("c", None);
        assert_eq!(index.len(), 2);
        assert_eq!(index.earliest(), Some(t(5)));
        assert_eq!(index.take_due(t(4)), Vec::<String>::new());
        assert_eq!(index.take_due(t(10)), ["a", "b"]);
        assert_eq!(index.len(), 0);
        assert_eq!(index.earliest(), None);
    }

    #[test]
    fn only_a_deadline_before_the_planned_wake_asks_for_a_wake() {
        let mut index = Deadlines::default();
        index.plan_wake(t(10));
        assert!(!index.set("a", Some(t(10))));
        assert!(!index.set("b", Some(t(3600))));
        assert!(index.set("c", Some(t(9))));
        assert!(!index.set("c", None));
    }

    #[test]
    fn the_sweep_waits_between_the_bounds() {
        assert_eq!(sweep_wait(None, t(0)), SWEEP_MAX_WAIT);
        assert_eq!(sweep_wait(Some(t(0)), t(1)), SWEEP_MIN_WAIT);
        assert_eq!(sweep_wait(Some(t(1)), t(1)), SWEEP_MIN_WAIT);
        assert_eq!(sweep_wait(Some(t(100)), t(1)), SWEEP_MAX_WAIT);
    }
}
