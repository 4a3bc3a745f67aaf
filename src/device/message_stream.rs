//! [`MessageStream`]: cloud-to-device messages as a `Stream`, one `receive_message()` at a time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::Message;
use crate::device::DeviceClient;
use crate::error::Result;

/// The stream of [`DeviceClient::messages`].
pub struct MessageStream {
    next: Option<Pin<Box<dyn Future<Output = Result<Message>> + Send>>>,
    client: DeviceClient,
}

impl MessageStream {
    pub(super) fn new(client: DeviceClient) -> Self {
        MessageStream { next: None, client }
    }
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Stream for MessageStream {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.next.is_none() {
            let client = self.client.clone();
            self.next = Some(Box::pin(async move { client.receive_message().await }));
        }
        let result = match self.next.as_mut() {
            Some(future) => std::task::ready!(future.as_mut().poll(cx)),
            None => return Poll::Pending,
        };
        self.next = None;
        Poll::Ready(result.ok())
    }
}
