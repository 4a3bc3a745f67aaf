//! The hub-wide feedback queue, as the AMQP feedback link and [`crate::local_hub::LocalHub`]'s
//! feedback stream take it: batches are cut by [`HubState::sweep`], then taken or locked until
//! settled.

use crate::local_hub::feedback_queue::{FeedbackDelivery, FeedbackLock};
use crate::protocol::FeedbackRecord;

use super::HubState;

impl HubState {
    /// The oldest ready feedback batch.
    pub fn take_feedback(&self) -> Option<Vec<FeedbackRecord>> {
        let batch = self.lock().feedback.take();
        self.persist_feedback_removed(batch.as_deref().unwrap_or_default());
        batch
    }

    /// Puts a feedback batch back, for a receiver that could not deliver it.
    pub fn return_feedback(&self, batch: Vec<FeedbackRecord>) {
        self.persist_feedback_added(&batch, self.clock.now());
        self.lock().feedback.put_back(batch, self.clock.now());
        self.feedback_ready.notify_one();
    }

    /// The oldest ready feedback batch, locked for an AMQP receiver until it settles.
    pub fn lock_feedback(&self) -> Option<FeedbackDelivery> {
        let delivery = self
            .lock()
            .feedback
            .lock_next(&self.settings.feedback, self.clock.now());
        if delivery.is_some() {
            // The sweep must see the lock's deadline.
            self.sweep_wake.notify_one();
        }
        delivery
    }

    /// The receiver accepted a batch: it leaves the queue.
    pub fn complete_feedback(&self, lock: FeedbackLock) {
        let mut inner = self.lock();
        let records = inner.feedback.locked_records(lock).map(<[_]>::to_vec);
        self.persist_feedback_removed(records.as_deref().unwrap_or_default());
        if !inner.feedback.complete(lock) {
            tracing::info!("feedback settled after its lock was lost");
        }
    }

    /// The receiver released a batch (or its link went away): it is ready again, unless it
    /// reached the maximum delivery count.
    pub fn release_feedback(&self, lock: FeedbackLock) {
        let mut inner = self.lock();
        let records = inner.feedback.locked_records(lock).map(<[_]>::to_vec);
        let requeued = inner.feedback.release(lock, &self.settings.feedback);
        if !requeued {
            self.persist_feedback_removed(records.as_deref().unwrap_or_default());
        }
        drop(inner);
        if requeued {
            self.feedback_ready.notify_waiters();
            self.feedback_ready.notify_one();
        } else {
            tracing::info!("feedback batch dropped: maximum delivery count reached or lock lost");
        }
    }
}
