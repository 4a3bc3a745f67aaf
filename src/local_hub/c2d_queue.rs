//! One device's cloud-to-device queue, with IoT Hub's rules and no I/O.
//!
//! States and limits follow Microsoft Learn, "Understand cloud-to-device messaging from an IoT
//! hub" (`iot-hub-devguide-messages-c2d.md`) and "IoT Hub quotas and throttling"
//! (`iot-hub-devguide-quotas-throttling.md`): at most 50 pending messages, 64 KB
//! each; a message is Enqueued, then Invisible (locked) while a device holds it, then Completed
//! or dead-lettered. Lock expiry returns it to Enqueued without counting a delivery; an abandon
//! (here: the connection that held it closed) counts one; reaching the maximum delivery count
//! or the expiry time dead-letters it. Every function takes `now`, so tests control time.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::message::{Ack, Message};
use crate::protocol::FeedbackStatus;

/// IoT Hub's cloud-to-device limits, configurable for tests.
///
/// ```
/// use std::time::Duration;
/// use iothub::local_hub::C2dLimits;
///
/// let limits = C2dLimits::new()
///     .with_max_pending(3)
///     .with_lock_duration(Duration::from_millis(200));
/// assert_eq!(limits.max_pending, 3);
/// assert_eq!(limits.max_delivery_count, 10);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct C2dLimits {
    /// Messages a device's queue may hold (50 on IoT Hub).
    pub max_pending: usize,
    /// The largest message, body and properties (64 KB on IoT Hub).
    pub max_message_size: usize,
    /// Time to live of a message without an expiry (1 hour by default).
    pub default_ttl: Duration,
    /// Deliveries before a message is dead-lettered (10 by default).
    pub max_delivery_count: u32,
    /// How long a delivered message stays invisible waiting for completion (1 minute).
    pub lock_duration: Duration,
}

impl Default for C2dLimits {
    fn default() -> Self {
        C2dLimits {
            max_pending: 50,
            max_message_size: 64 * 1024,
            default_ttl: Duration::from_secs(3600),
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(60),
        }
    }
}

impl C2dLimits {
    /// IoT Hub's limits (the same as [`C2dLimits::default`]).
    pub fn new() -> Self {
        C2dLimits::default()
    }

    /// Sets how many messages a device's queue may hold.
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// Sets the largest message size, body and properties, in bytes.
    pub fn with_max_message_size(mut self, max_message_size: usize) -> Self {
        self.max_message_size = max_message_size;
        self
    }

    /// Sets the time to live of messages sent without an expiry.
    pub fn with_default_ttl(mut self, default_ttl: Duration) -> Self {
        self.default_ttl = default_ttl;
        self
    }

    /// Sets how many deliveries a message gets before it is dead-lettered.
    pub fn with_max_delivery_count(mut self, max_delivery_count: u32) -> Self {
        self.max_delivery_count = max_delivery_count;
        self
    }

    /// Sets how long a delivered message stays locked waiting for its completion.
    pub fn with_lock_duration(mut self, lock_duration: Duration) -> Self {
        self.lock_duration = lock_duration;
        self
    }
}

/// Identifies one delivery of one message, to complete or abandon it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LockToken(u64);

/// Why a message was not enqueued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnqueueRefusal {
    /// The queue already holds `max_pending` messages (IoT Hub error 403004
    /// DeviceMaximumQueueDepthExceeded).
    QueueFull,
    /// The message is over `max_message_size` (413001 MessageTooLarge).
    TooLarge,
}

/// A message leaving the queue, for feedback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    pub message_id: Option<String>,
    pub ack: Option<Ack>,
    pub status: FeedbackStatus,
    pub at: SystemTime,
}

#[derive(Debug)]
struct Entry {
    token: LockToken,
    message: Message,
    expires_at: SystemTime,
    delivery_count: u32,
    locked_until: Option<SystemTime>,
}

/// The queue of one device.
#[derive(Debug, Default)]
pub(crate) struct C2dQueue {
    entries: VecDeque<Entry>,
    next_token: u64,
}

/// The size IoT Hub counts: the body plus the property names and values.
pub(crate) fn message_size(message: &Message) -> usize {
    let system = [
        message.message_id(),
        message.correlation_id(),
        message.user_id(),
        message.content_type(),
        message.content_encoding(),
        message.to(),
    ];
    message.body().len()
        + system.iter().flatten().map(|s| s.len()).sum::<usize>()
        + message
            .properties()
            .map(|(k, v)| k.len() + v.map_or(0, str::len))
            .sum::<usize>()
}

impl C2dQueue {
    /// Messages held, delivered or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a message, after dropping expired ones (whose feedback goes to `settled`).
    pub fn enqueue(
        &mut self,
        message: Message,
        limits: &C2dLimits,
        now: SystemTime,
        settled: &mut Vec<Settled>,
    ) -> Result<(), EnqueueRefusal> {
        if message_size(&message) > limits.max_message_size {
            return Err(EnqueueRefusal::TooLarge);
        }
        self.sweep(limits, now, settled);
        if self.entries.len() >= limits.max_pending {
            return Err(EnqueueRefusal::QueueFull);
        }
        let expires_at = message.expiry().unwrap_or(now + limits.default_ttl);
        self.next_token += 1;
        self.entries.push_back(Entry {
            token: LockToken(self.next_token),
            message,
            expires_at,
            delivery_count: 0,
            locked_until: None,
        });
        Ok(())
    }

    /// Dead-letters expired messages and unlocks those whose lock ran out. Returns whether any
    /// message became deliverable again.
    pub fn sweep(
        &mut self,
        limits: &C2dLimits,
        now: SystemTime,
        settled: &mut Vec<Settled>,
    ) -> bool {
        let _ = limits;
        let mut unlocked = false;
        self.entries.retain_mut(|entry| {
            if entry.expires_at <= now {
                settled.push(settle(entry, FeedbackStatus::Expired, now));
                return false;
            }
            if entry.locked_until.is_some_and(|until| until <= now) {
                entry.locked_until = None;
                unlocked = true;
            }
            true
        });
        unlocked
    }

    /// The next message to deliver, now locked until `now + lock_duration`. Messages that
    /// reached the maximum delivery count are dead-lettered on the way.
    pub fn next_delivery(
        &mut self,
        limits: &C2dLimits,
        now: SystemTime,
        settled: &mut Vec<Settled>,
    ) -> Option<(LockToken, Message)> {
        self.sweep(limits, now, settled);
        loop {
            let index = self.entries.iter().position(|e| e.locked_until.is_none())?;
            if self.entries[index].delivery_count >= limits.max_delivery_count {
                let entry = self.entries.remove(index).expect("index is in range");
                settled.push(settle(&entry, FeedbackStatus::DeliveryCountExceeded, now));
                continue;
            }
            let entry = &mut self.entries[index];
            entry.locked_until = Some(now + limits.lock_duration);
            return Some((entry.token, entry.message.clone()));
        }
    }

    /// Completes a delivery. `None` when the lock was lost (expired, or the message is gone).
    pub fn complete(&mut self, token: LockToken, now: SystemTime) -> Option<Settled> {
        let index = self
            .entries
            .iter()
            .position(|e| e.token == token && e.locked_until.is_some())?;
        let entry = self.entries.remove(index).expect("index is in range");
        Some(settle(&entry, FeedbackStatus::Success, now))
    }

    /// Returns a delivery to the queue and counts it, as an abandon does.
    pub fn abandon(&mut self, token: LockToken) {
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.token == token && e.locked_until.is_some())
        {
            entry.locked_until = None;
            entry.delivery_count += 1;
        }
    }

    /// Removes every message; returns how many there were.
    pub fn purge(&mut self, now: SystemTime, settled: &mut Vec<Settled>) -> usize {
        let count = self.entries.len();
        settled.extend(
            self.entries
                .drain(..)
                .map(|e| settle(&e, FeedbackStatus::Purged, now)),
        );
        count
    }

    /// The earliest time a sweep would change something (an expiry or a lock running out).
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.entries
            .iter()
            .flat_map(|e| [Some(e.expires_at), e.locked_until])
            .flatten()
            .min()
    }
}

/// What the state directory keeps of a queue (`local_hub::store`): each message with its
/// token, expiry and delivery count, in queue order; locks are not kept.
impl C2dQueue {
    /// `(token, message, expires_at, delivery_count)` of every message, in order.
    pub fn stored(&self) -> impl Iterator<Item = (u64, &Message, SystemTime, u32)> {
        self.entries
            .iter()
            .map(|e| (e.token.0, &e.message, e.expires_at, e.delivery_count))
    }

    /// Appends a message read back from the state directory, unlocked.
    pub fn restore(
        &mut self,
        token: u64,
        message: Message,
        expires_at: SystemTime,
        delivery_count: u32,
    ) {
        self.next_token = self.next_token.max(token);
        self.entries.push_back(Entry {
            token: LockToken(token),
            message,
            expires_at,
            delivery_count,
            locked_until: None,
        });
    }
}

fn settle(entry: &Entry, status: FeedbackStatus, at: SystemTime) -> Settled {
    Settled {
        message_id: entry.message.message_id().map(str::to_owned),
        ack: entry.message.ack(),
        status,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn msg(id: &str) -> Message {
        Message::new(id.to_owned())
            .with_message_id(id)
            .with_ack(Ack::Full)
    }

    #[test]
    fn holds_at_most_max_pending_and_refuses_large_messages() {
        let limits = C2dLimits::default();
        let mut q = C2dQueue::default();
        let mut settled = Vec::new();
        for i in 0..50 {
            q.enqueue(msg(&i.to_string()), &limits, t(0), &mut settled)
                .unwrap();
        }
        assert_eq!(
            q.enqueue(msg("51"), &limits, t(0), &mut settled),
            Err(EnqueueRefusal::QueueFull)
        );
        let big = Message::new(vec![0u8; 64 * 1024 + 1]);
        assert_eq!(
            q.enqueue(big, &limits, t(0), &mut settled),
            Err(EnqueueRefusal::TooLarge)
        );
        let fits = Message::new(vec![0u8; 64 * 1024]);
        assert_eq!(
            C2dQueue::default().enqueue(fits, &limits, t(0), &mut settled),
            Ok(())
        );
        assert_eq!(q.len(), 50);
    }

    #[test]
    fn delivers_in_order_locks_and_completes() {
        let limits = C2dLimits::default();
        let mut q = C2dQueue::default();
        let mut settled = Vec::new();
        q.enqueue(msg("a"), &limits, t(0), &mut settled).unwrap();
        q.enqueue(msg("b"), &limits, t(0), &mut settled).unwrap();
        let (ta, a) = q.next_delivery(&limits, t(1), &mut settled).unwrap();
        let (tb, b) = q.next_delivery(&limits, t(1), &mut settled).unwrap();
        assert_eq!((a.message_id(), b.message_id()), (Some("a"), Some("b")));
        assert!(
            q.next_delivery(&limits, t(1), &mut settled).is_none(),
            "both are locked"
        );
        let done = q.complete(ta, t(2)).unwrap();
        assert_eq!(
            (done.status, done.message_id.as_deref()),
            (FeedbackStatus::Success, Some("a"))
        );
        assert!(
            q.complete(ta, t(2)).is_none(),
            "completing twice finds no lock"
        );
        // b's lock runs out after 60 s: redelivered, not counted.
        assert!(q.sweep(&limits, t(62), &mut settled));
        let (tb2, again) = q.next_delivery(&limits, t(62), &mut settled).unwrap();
        assert_eq!(again.message_id(), Some("b"));
        assert!(q.complete(tb, t(62)).is_none() || tb == tb2);
        assert!(settled.is_empty());
    }

    #[test]
    fn expiry_and_delivery_count_dead_letter() {
        let limits = C2dLimits::new().with_max_delivery_count(2);
        let mut q = C2dQueue::default();
        let mut settled = Vec::new();
        q.enqueue(msg("ttl").with_expiry(t(10)), &limits, t(0), &mut settled)
            .unwrap();
        q.enqueue(msg("count"), &limits, t(0), &mut settled)
            .unwrap();
        q.sweep(&limits, t(10), &mut settled);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].status, FeedbackStatus::Expired);
        assert_eq!(settled[0].message_id.as_deref(), Some("ttl"));
        for _ in 0..2 {
            let (token, _) = q.next_delivery(&limits, t(11), &mut settled).unwrap();
            q.abandon(token);
        }
        assert!(q.next_delivery(&limits, t(11), &mut settled).is_none());
        assert_eq!(settled[1].status, FeedbackStatus::DeliveryCountExceeded);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn default_ttl_applies_without_expiry_and_purge_reports_everything() {
        let limits = C2dLimits::new().with_default_ttl(Duration::from_secs(5));
        let mut q = C2dQueue::default();
        let mut settled = Vec::new();
        q.enqueue(msg("a"), &limits, t(0), &mut settled).unwrap();
        assert_eq!(q.next_deadline(), Some(t(5)));
        q.sweep(&limits, t(4), &mut settled);
        assert!(settled.is_empty());
        q.enqueue(msg("b"), &limits, t(4), &mut settled).unwrap();
        assert_eq!(q.purge(t(4), &mut settled), 2);
        assert!(settled.iter().all(|s| s.status == FeedbackStatus::Purged));
    }
}
