//! The streams a [`LocalHub`](super::LocalHub) hands out: telemetry and feedback batches.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::time::SystemTime;

use futures_core::Stream as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::local_hub::telemetry_log::{Cursor, Next, TelemetryEvent, TelemetryLog};
use crate::message::Message;
use crate::protocol::FeedbackRecord;

/// A telemetry message received by the hub, and the identity that sent it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Telemetry {
    /// The sending device, or the device of the sending module.
    pub device_id: String,
    /// The sending module; `None` when the device itself sent the message.
    pub module_id: Option<String>,
    /// The message, with its properties as the device set them.
    pub message: Message,
    /// The partition of the hub's telemetry log (and of the Event Hubs-compatible endpoint)
    /// that holds it, chosen from the device id.
    pub partition: u32,
    /// Its sequence number in the partition (`x-opt-sequence-number`).
    pub sequence_number: i64,
    /// Its offset in the partition (`x-opt-offset`).
    pub offset: i64,
    /// When the hub accepted it (`iothub-enqueuedtime`), to the millisecond.
    pub enqueued_time: SystemTime,
}

impl Telemetry {
    fn from_event(event: &TelemetryEvent) -> Self {
        Telemetry {
            device_id: event.stamps.device_id.clone(),
            module_id: event.stamps.module_id.clone(),
            message: event.message.clone(),
            partition: event.partition,
            sequence_number: event.sequence_number,
            offset: event.offset,
            enqueued_time: event.enqueued_time,
        }
    }
}

/// Where a [`TelemetryStream`] starts reading the hub's retained telemetry log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelemetryStart {
    /// The oldest retained message of every partition.
    Earliest,
    /// Only messages accepted after the stream is made.
    Latest,
    /// Messages accepted at or after this time, in every partition.
    EnqueuedSince(SystemTime),
    /// One partition only, from the message at this offset (included), as given in
    /// [`Telemetry::offset`]; an offset between messages starts at the next one.
    Offset {
        /// The partition.
        partition: u32,
        /// The offset.
        offset: i64,
    },
}

/// How many read messages wait for the stream's owner.
const TELEMETRY_BUFFER: usize = 64;

/// Telemetry received by a [`LocalHub`](super::LocalHub): a [`futures_core::Stream`] of
/// [`Telemetry`], read from the hub's retained telemetry log (the one the Event Hubs-compatible
/// endpoint serves). Within a partition (so for one device) messages come in order. Nothing is
/// skipped while retention keeps it; a stream that falls behind retention logs a warning and
/// goes on from the oldest retained message.
#[derive(Debug)]
pub struct TelemetryStream {
    inner: ReceiverStream<Telemetry>,
}

impl TelemetryStream {
    /// Follows `cursors` (resolved by the caller, so that `Latest` means "from the call") in
    /// a task that ends when the stream is dropped or the hub stops.
    pub(super) fn follow(
        log: Arc<TelemetryLog>,
        cursors: Vec<Cursor>,
        mut stopping: watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(TELEMETRY_BUFFER);
        tokio::spawn(async move {
            let mut appended = log.watch_all();
            let mut cursors = cursors;
            loop {
                // Mark what is seen before reading, so that an append after the read wakes us.
                appended.borrow_and_update();
                let mut read_any = false;
                for cursor in &mut cursors {
                    loop {
                        match log.next(cursor) {
                            Next::Event(event) => {
                                read_any = true;
                                let permit = tokio::select! {
                                    permit = tx.reserve() => permit,
                                    _ = stopping.wait_for(|s| *s) => return,
                                };
                                let Ok(permit) = permit else { return };
                                permit.send(Telemetry::from_event(&event));
                            }
                            Next::FellBehind { missed } => {
                                tracing::warn!(
                                    partition = cursor.partition,
                                    missed,
                                    "telemetry reader fell behind retention"
                                );
                            }
                            Next::Empty => break,
                        }
                    }
                }
                if read_any {
                    continue;
                }
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
        TelemetryStream {
            inner: ReceiverStream::new(rx),
        }
    }

    /// The next message; `None` once the hub has stopped.
    pub async fn recv(&mut self) -> Option<Telemetry> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl futures_core::Stream for TelemetryStream {
    type Item = Telemetry;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Feedback batches released by a [`LocalHub`](super::LocalHub): a [`futures_core::Stream`] of
/// record lists.
#[derive(Debug)]
pub struct FeedbackStream {
    inner: ReceiverStream<Vec<FeedbackRecord>>,
}

impl FeedbackStream {
    pub(super) fn new(receiver: mpsc::Receiver<Vec<FeedbackRecord>>) -> Self {
        FeedbackStream {
            inner: ReceiverStream::new(receiver),
        }
    }

    /// The next batch.
    pub async fn recv(&mut self) -> Option<Vec<FeedbackRecord>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl futures_core::Stream for FeedbackStream {
    type Item = Vec<FeedbackRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
