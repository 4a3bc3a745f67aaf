//! Delivery feedback for the back end: batches of records from
//! `/messages/serviceBound/feedback`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::FeedbackRecord;
use crate::service::amqp::{ReceivedBatch, Settle};

/// A batch of feedback records, as IoT Hub sends them (up to 64 records).
///
/// [`complete`](FeedbackBatch::complete) it once processed, and the hub forgets it; or
/// [`abandon`](FeedbackBatch::abandon) it, and the hub delivers it again. A batch dropped
/// without either is abandoned.
pub struct FeedbackBatch {
    id: u64,
    records: Vec<FeedbackRecord>,
    settle: Option<mpsc::UnboundedSender<Settle>>,
}

impl std::fmt::Debug for FeedbackBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackBatch")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the feedback receiver is closed")
}

impl FeedbackBatch {
    /// The records.
    pub fn records(&self) -> &[FeedbackRecord] {
        &self.records
    }

    async fn settle(mut self, complete: bool) -> Result<()> {
        let settle = self.settle.take().ok_or_else(closed)?;
        let (done, result) = oneshot::channel();
        let command = if complete {
            Settle::Complete(self.id, done)
        } else {
            Settle::Abandon(self.id, done)
        };
        settle.send(command).map_err(|_| closed())?;
        result.await.map_err(|_| closed())?
    }

    /// Accepts the batch: the hub removes it.
    pub async fn complete(self) -> Result<()> {
        self.settle(true).await
    }

    /// Releases the batch: the hub delivers it again.
    pub async fn abandon(self) -> Result<()> {
        self.settle(false).await
    }
}

impl Drop for FeedbackBatch {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            let (done, _) = oneshot::channel();
            let _ = settle.send(Settle::Abandon(self.id, done));
        }
    }
}

/// The feedback batches the hub sends, as a [`Stream`]. Made by
/// [`crate::service::RegistryManager::feedback_receiver`]; it has its own AMQP connection,
/// re-opened after failures. An `Err` item reports a failed attempt to (re)connect; an
/// unauthorized policy ends the stream after its error.
pub struct FeedbackReceiver {
    batches: mpsc::Receiver<Result<ReceivedBatch>>,
    settle: mpsc::UnboundedSender<Settle>,
}

impl std::fmt::Debug for FeedbackReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackReceiver").finish_non_exhaustive()
    }
}

impl FeedbackReceiver {
    pub(crate) fn new(
        batches: mpsc::Receiver<Result<ReceivedBatch>>,
        settle: mpsc::UnboundedSender<Settle>,
    ) -> Self {
        FeedbackReceiver { batches, settle }
    }

    /// The next batch; `None` once the receiver has stopped. A connection attempt that the hub
    /// does not complete within 30 s (TCP, TLS, AMQP OPEN, CBS put-token, link ATTACH) yields
    /// an [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error here, and the receiver
    /// retries by its retry policy; an open connection on which the hub sends nothing for
    /// 120 s (the AMQP idle timeout the client advertises) is reopened.
    pub async fn recv(&mut self) -> Option<Result<FeedbackBatch>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for FeedbackReceiver {
    type Item = Result<FeedbackBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.batches.poll_recv(cx));
        let settle = self.settle.clone();
        Poll::Ready(item.map(|result| {
            result.map(|batch| FeedbackBatch {
                id: batch.id,
                records: batch.records,
                settle: Some(settle),
            })
        }))
    }
}
