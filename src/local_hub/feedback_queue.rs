//! The hub's feedback queue: records batched as IoT Hub batches them, with no I/O.
//!
//! A batch goes out when it holds 64 records or when the flush interval (15 s on IoT Hub) has
//! passed since its first record, whichever comes first (MicrosoftDocs
//! `iot-hub-devguide-messages-c2d.md`).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::protocol::FeedbackRecord;

/// Records per batch at most (MicrosoftDocs `iot-hub-devguide-messages-c2d.md`).
pub(crate) const MAX_BATCH: usize = 64;

/// Pending records and ready batches.
#[derive(Debug, Default)]
pub(crate) struct FeedbackQueue {
    pending: Vec<FeedbackRecord>,
    first_pending_at: Option<SystemTime>,
    ready: VecDeque<Vec<FeedbackRecord>>,
}

impl FeedbackQueue {
    /// Adds a record; a full batch becomes ready at once.
    pub fn push(&mut self, record: FeedbackRecord, now: SystemTime) {
        self.first_pending_at.get_or_insert(now);
        self.pending.push(record);
        if self.pending.len() >= MAX_BATCH {
            self.cut();
        }
    }

    /// Makes the pending records a batch if the oldest waited `flush_interval`.
    pub fn flush_due(&mut self, flush_interval: Duration, now: SystemTime) {
        if self
            .first_pending_at
            .is_some_and(|first| first + flush_interval <= now)
        {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if !self.pending.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.pending));
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

    /// Takes the oldest ready batch.
    pub fn take(&mut self) -> Option<Vec<FeedbackRecord>> {
        self.ready.pop_front()
    }

    /// Puts a batch back at the front, for a receiver that could not take it.
    pub fn put_back(&mut self, batch: Vec<FeedbackRecord>) {
        self.ready.push_front(batch);
    }

    /// Drops pending and ready records about `device_id`: a deleted device's feedback goes
    /// with it (MicrosoftDocs `iot-hub-devguide-messages-c2d.md`).
    pub fn forget_device(&mut self, device_id: &str) {
        self.pending.retain(|r| r.device_id != device_id);
        for batch in &mut self.ready {
            batch.retain(|r| r.device_id != device_id);
        }
        self.ready.retain(|b| !b.is_empty());
        if self.pending.is_empty() {
            self.first_pending_at = None;
        }
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
        q.put_back(last);
        assert_eq!(q.take().unwrap().len(), 1);
    }
}
