//! The hub's feedback queue: records batched as IoT Hub batches them, with no I/O.
//!
//! A batch goes out when it holds 64 records or when the flush interval (15 s on IoT Hub) has
//! passed since its first record, whichever comes first (MicrosoftDocs
//! `iot-hub-devguide-messages-c2d.md`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::protocol::FeedbackRecord;

/// Records per batch at most (MicrosoftDocs `iot-hub-devguide-messages-c2d.md`).
pub(crate) const MAX_BATCH: usize = 64;

/// The feedback queue's limits: IoT Hub's defaults `feedback.ttlAsIso8601` 1 hour,
/// `feedback.maxDeliveryCount` 10 and `feedback.lockDurationAsIso8601` 60 s (MicrosoftDocs
/// `iot-hub-devguide-messages-c2d.md`; csharp `CommonConstants.Feedback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FeedbackLimits {
    /// How long a ready batch waits for a receiver before it is dropped.
    pub ttl: Duration,
    /// Deliveries of a batch (each release or lost link counts one) before it is dropped.
    pub max_delivery_count: u32,
    /// How long a delivered batch stays locked waiting for its settlement.
    pub lock_duration: Duration,
}

impl Default for FeedbackLimits {
    fn default() -> Self {
        FeedbackLimits {
            ttl: Duration::from_secs(3600),
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(60),
        }
    }
}

/// Identifies one delivery of one batch, to complete or release it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FeedbackLock(u64);

/// A batch handed to a receiver, locked until it settles.
#[derive(Clone, Debug)]
pub(crate) struct FeedbackDelivery {
    pub lock: FeedbackLock,
    pub records: Vec<FeedbackRecord>,
    /// When the batch was cut: the feedback message's `iothub-enqueuedtime`.
    pub enqueued_at: SystemTime,
}

#[derive(Debug)]
struct Batch {
    records: Vec<FeedbackRecord>,
    enqueued_at: SystemTime,
    delivery_count: u32,
}

#[derive(Debug)]
struct Locked {
    batch: Batch,
    until: SystemTime,
}

/// Pending records, ready batches, and batches locked by a receiver.
#[derive(Debug, Default)]
pub(crate) struct FeedbackQueue {
    pending: Vec<FeedbackRecord>,
    first_pending_at: Option<SystemTime>,
    ready: VecDeque<Batch>,
    locked: BTreeMap<FeedbackLock, Locked>,
    next_lock: u64,
}

impl FeedbackQueue {
    /// Adds a record; a full batch becomes ready at once.
    pub fn push(&mut self, record: FeedbackRecord, now: SystemTime) {
        self.first_pending_at.get_or_insert(now);
        self.pending.push(record);
        if self.pending.len() >= MAX_BATCH {
            self.cut(now);
        }
    }

    /// Makes the pending records a batch if the oldest waited `flush_interval`.
    pub fn flush_due(&mut self, flush_interval: Duration, now: SystemTime) {
        if self
            .first_pending_at
            .is_some_and(|first| first + flush_interval <= now)
        {
            self.cut(now);
        }
    }

    fn cut(&mut self, now: SystemTime) {
        if !self.pending.is_empty() {
            self.ready.push_back(Batch {
                records: std::mem::take(&mut self.pending),
                enqueued_at: now,
                delivery_count: 0,
            });
        }
        self.first_pending_at = None;
    }

    /// When the pending records become due.
    pub fn next_deadline(&self, flush_interval: Duration) -> Option<SystemTime> {
        self.first_pending_at.map(|first| first + flush_interval)
    }

    /// Whether a batch is ready.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes the oldest ready batch for good (the in-process receiver, which cannot fail to
    /// settle).
    pub fn take(&mut self) -> Option<Vec<FeedbackRecord>> {
        self.ready.pop_front().map(|b| b.records)
    }

    /// Puts a batch back at the front, for a receiver that could not take it.
    pub fn put_back(&mut self, batch: Vec<FeedbackRecord>, now: SystemTime) {
        self.ready.push_front(Batch {
            records: batch,
            enqueued_at: now,
            delivery_count: 0,
        });
    }

    /// Locks the oldest ready batch for a receiver, counting a delivery.
    pub fn lock_next(
        &mut self,
        limits: &FeedbackLimits,
        now: SystemTime,
    ) -> Option<FeedbackDelivery> {
        let mut batch = self.ready.pop_front()?;
        batch.delivery_count += 1;
        self.next_lock += 1;
        let lock = FeedbackLock(self.next_lock);
        let delivery = FeedbackDelivery {
            lock,
            records: batch.records.clone(),
            enqueued_at: batch.enqueued_at,
        };
        self.locked.insert(
            lock,
            Locked {
                batch,
                until: now + limits.lock_duration,
            },
        );
        Some(delivery)
    }

    /// The receiver accepted the batch: it is gone. `false` if the lock was lost.
    pub fn complete(&mut self, lock: FeedbackLock) -> bool {
        self.locked.remove(&lock).is_some()
    }

    /// The receiver released the batch, or its link went away: the batch is ready again at
    /// the front, unless it has been delivered `max_delivery_count` times (then it is
    /// dropped; returns `false`).
    pub fn release(&mut self, lock: FeedbackLock, limits: &FeedbackLimits) -> bool {
        let Some(locked) = self.locked.remove(&lock) else {
            return false;
        };
        if locked.batch.delivery_count >= limits.max_delivery_count {
            return false;
        }
        self.ready.push_front(locked.batch);
        true
    }

    /// Drops ready batches older than the TTL and unlocks batches whose lock lapsed (without
    /// counting a delivery, as for C2D messages); returns the next time this matters.
    pub fn expire(&mut self, limits: &FeedbackLimits, now: SystemTime) -> Option<SystemTime> {
        self.ready.retain(|b| b.enqueued_at + limits.ttl > now);
        let lapsed: Vec<FeedbackLock> = self
            .locked
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(lock, _)| *lock)
            .collect();
        for lock in lapsed.into_iter().rev() {
            if let Some(locked) = self.locked.remove(&lock) {
                self.ready.push_front(locked.batch);
            }
        }
        let ready = self.ready.iter().map(|b| b.enqueued_at + limits.ttl);
        let locked = self.locked.values().map(|l| l.until);
        ready.chain(locked).min()
    }

    /// Drops pending and ready records about `device_id`: a deleted device's feedback goes
    /// with it (MicrosoftDocs `iot-hub-devguide-messages-c2d.md`).
    pub fn forget_device(&mut self, device_id: &str) {
        self.pending.retain(|r| r.device_id != device_id);
        for batch in &mut self.ready {
            batch.records.retain(|r| r.device_id != device_id);
        }
        self.ready.retain(|b| !b.records.is_empty());
        if self.pending.is_empty() {
            self.first_pending_at = None;
        }
    }
}

impl FeedbackQueue {
    /// The records of a locked batch (for the state directory, before it settles).
    pub fn locked_records(&self, lock: FeedbackLock) -> Option<&[FeedbackRecord]> {
        self.locked.get(&lock).map(|l| l.batch.records.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FeedbackStatus;
    use std::time::UNIX_EPOCH;

    fn record(id: usize) -> FeedbackRecord {
        FeedbackRecord {
            original_message_id: id.to_string(),
            status_code: FeedbackStatus::Success,
            description: "Success".into(),
            device_id: "d".into(),
            device_generation_id: "1".into(),
            enqueued_time_utc: String::new(),
        }
    }

    #[test]
    fn batches_at_64_records_or_after_the_interval() {
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let interval = Duration::from_secs(15);
        let mut q = FeedbackQueue::default();
        for i in 0..65 {
            q.push(record(i), t0);
        }
        assert_eq!(q.take().map(|b| b.len()), Some(64));
        assert!(q.take().is_none());
        q.flush_due(interval, t0 + Duration::from_secs(14));
        assert!(q.take().is_none());
        assert_eq!(q.next_deadline(interval), Some(t0 + interval));
        q.flush_due(interval, t0 + interval);
        let last = q.take().unwrap();
        assert_eq!(last[0].original_message_id, "64");
        q.put_back(last, t0);
        assert_eq!(q.take().unwrap().len(), 1);
    }

    #[test]
    fn a_locked_batch_is_removed_by_complete_and_returns_on_release() {
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let limits = FeedbackLimits::default();
        let mut q = FeedbackQueue::default();
        q.push(record(1), t0);
        q.flush_due(Duration::ZERO, t0);
        let first = q.lock_next(&limits, t0).unwrap();
        assert_eq!(first.enqueued_at, t0);
        assert!(q.lock_next(&limits, t0).is_none(), "locked, not ready");
        assert!(q.release(first.lock, &limits));
        let second = q.lock_next(&limits, t0).unwrap();
        assert_eq!(second.records, first.records);
        assert_ne!(second.lock, first.lock);
        assert!(!q.complete(first.lock), "an old lock is lost");
        assert!(q.complete(second.lock));
        assert!(q.lock_next(&limits, t0).is_none());
    }

    #[test]
    fn max_delivery_count_ttl_and_lock_expiry_apply() {
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let limits = FeedbackLimits {
            ttl: Duration::from_secs(10),
            max_delivery_count: 2,
            lock_duration: Duration::from_secs(5),
        };
        let mut q = FeedbackQueue::default();
        q.push(record(1), t0);
        q.flush_due(Duration::ZERO, t0);
        let d = q.lock_next(&limits, t0).unwrap();
        assert!(q.release(d.lock, &limits));
        let d = q.lock_next(&limits, t0).unwrap();
        assert!(!q.release(d.lock, &limits), "second release: dropped");
        assert!(!q.has_ready());

        q.push(record(2), t0);
        q.flush_due(Duration::ZERO, t0);
        let d = q.lock_next(&limits, t0).unwrap();
        assert_eq!(q.expire(&limits, t0), Some(t0 + Duration::from_secs(5)));
        q.expire(&limits, t0 + Duration::from_secs(5));
        assert!(q.has_ready(), "the lapsed lock made it ready again");
        assert!(!q.complete(d.lock));
        q.expire(&limits, t0 + Duration::from_secs(10));
        assert!(!q.has_ready(), "expired after the TTL");
    }
}
