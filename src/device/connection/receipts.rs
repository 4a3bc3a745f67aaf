//! Automatic acknowledgements ([`AckMode::Auto`](crate::device::AckMode)) without a message
//! per receipt: the application's `receive_message` counts what it takes from the C2D channel,
//! and the connection task acknowledges that many of the deliveries it handed over, in order.
//!
//! The channel is first in, first out, and `receive_message` takes from it one caller at a
//! time, so the count names a prefix of the deliveries. Every delivery taken is counted
//! (a delivery of a lost connection too: its PUBACK is then not sent), except after
//! [`DeviceClient::close`](crate::device::DeviceClient::close): from then on no delivery is
//! counted, so a message that `close` kept from the application is never acknowledged and the
//! hub delivers it again.

use std::collections::VecDeque;

use tokio::sync::Notify;

use super::*;

/// The count of C2D deliveries the application took, shared by the handle and the task.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    taken: AtomicU64,
    /// Wakes the task when it waits with nothing else to do.
    taken_more: Notify,
}

impl Receipts {
    /// One more delivery taken from the channel.
    pub(crate) fn took_one(&self) {
        self.taken.fetch_add(1, Ordering::Release);
        self.taken_more.notify_one();
    }

    /// Completes when [`Self::took_one`] was called since the last completion.
    pub(crate) async fn taken_more(&self) {
        self.taken_more.notified().await;
    }
}

/// The task's side: the deliveries handed to the C2D channel in automatic mode, in order, and
/// how many of them were taken and resolved.
#[derive(Debug, Default)]
pub(crate) struct HandedOver {
    /// `(connection epoch, packet id, whether it wants a PUBACK)`.
    deliveries: VecDeque<(u64, u16, bool)>,
    resolved: u64,
}

impl HandedOver {
    /// A delivery put into the C2D channel.
    pub(crate) fn push(&mut self, epoch: u64, pkid: u16, needs_ack: bool) {
        self.deliveries.push_back((epoch, pkid, needs_ack));
    }
}

impl Task {
    /// Queues the PUBACKs of the deliveries the application took since the last call, those
    /// of the live connection only.
    pub(super) fn resolve_receipts(&mut self) {
        let Some(receipts) = &self.receipts else {
            return;
        };
        let epoch = self.live_epoch.load(Ordering::SeqCst);
        let taken = receipts.taken.load(Ordering::Acquire);
        while self.handed_over.resolved < taken {
            let Some((delivered_on, pkid, needs_ack)) = self.handed_over.deliveries.pop_front()
            else {
                // Not reachable: each count follows a delivery handed over. Stop counting
                // rather than acknowledge what was not taken.
                tracing::error!("more C2D receipts than deliveries");
                self.handed_over.resolved = taken;
                break;
            };
            self.handed_over.resolved += 1;
            // Epochs start at 1: without a connection (0) nothing matches.
            if needs_ack && delivered_on == epoch {
                self.awaiting_ack.remove(&pkid);
                self.puback(pkid);
            }
        }
    }
}
