//! The streams a [`LocalHub`](super::LocalHub) hands out: telemetry and feedback batches.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream as _;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};

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
}

/// Telemetry received by a [`LocalHub`](super::LocalHub): a [`futures_core::Stream`] of
/// [`Telemetry`]. A receiver that falls more than 1,024 messages behind skips the oldest.
#[derive(Debug)]
pub struct TelemetryStream {
    inner: BroadcastStream<Telemetry>,
}

impl TelemetryStream {
    pub(super) fn new(receiver: broadcast::Receiver<Telemetry>) -> Self {
        TelemetryStream {
            inner: BroadcastStream::new(receiver),
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
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => return Poll::Ready(Some(item)),
                Poll::Ready(Some(Err(lagged))) => {
                    tracing::warn!(error = %lagged, "telemetry receiver fell behind");
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
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
