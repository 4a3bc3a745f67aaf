//! The floor client of `benches/device.rs`: the least any client that keeps its connection in
//! a task and hands `Message`s to the application's `receive` calls does per C2D message.
//!
//! It is the raw client (same reads, same PUBACK batches, written before the hand-over, which is
//! less than `AckMode::Auto` may do) plus the two things a `DeviceClient` cannot skip: decoding
//! the topic into the [`Message`] the API returns (`classify_received_topic` and
//! `PropertyBag::decode_message`, what `DeviceClient` calls), and handing each message to the
//! application's task through a bounded channel of the `DeviceClient`'s default capacity
//! (64), taken one per call. No event loop, no keep-alive, no subscriptions, no
//! acknowledgement accounting: whatever the `DeviceClient` costs beyond this client is its own
//! machinery; what this client costs beyond the raw one no client of that design can avoid.

use bytes::Bytes;
use iothub::Message;
use iothub::protocol::{PropertyBag, ReceivedTopic, classify_received_topic};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Result;
use super::support::raw_mqtt::RawMqtt;

/// The `DeviceClient`'s default C2D buffer (`DeviceClientBuilder::message_buffer`).
const CHANNEL_CAPACITY: usize = 64;

/// A raw client's reads in a task of their own, decoded and handed over one message at a time.
pub(crate) struct FloorClient {
    messages: mpsc::Receiver<Message>,
    reader: JoinHandle<Result<()>>,
}

impl FloorClient {
    /// Starts the reading task on `raw`, connected and subscribed to `device_id`'s C2D topic.
    pub(crate) fn start(raw: RawMqtt, device_id: String) -> Self {
        let (tx, messages) = mpsc::channel(CHANNEL_CAPACITY);
        let reader = tokio::spawn(read(raw, device_id, tx));
        FloorClient { messages, reader }
    }

    /// The next message; an error when the reading task stopped.
    pub(crate) async fn next(&mut self) -> Result<Message> {
        match self.messages.recv().await {
            Some(message) => Ok(message),
            None if self.reader.is_finished() => match (&mut self.reader).await {
                Ok(Err(e)) => Err(format!("the floor client's reader failed: {e}").into()),
                Ok(Ok(())) | Err(_) => Err("the floor client's reader stopped".into()),
            },
            None => Err("the floor client's reader stopped".into()),
        }
    }
}

impl Drop for FloorClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads PUBLISHes until the application's side is gone, decoding each and handing it over.
async fn read(mut raw: RawMqtt, device_id: String, tx: mpsc::Sender<Message>) -> Result<()> {
    let mut batch: Vec<(String, Bytes)> = Vec::with_capacity(64);
    loop {
        batch.clear();
        raw.receive_publishes_with(|publish| batch.push((publish.topic, publish.payload)))
            .await?;
        for (topic, payload) in batch.drain(..) {
            let message = match classify_received_topic(&topic)? {
                ReceivedTopic::CloudToDevice {
                    device_id: to,
                    properties,
                } if to == device_id => PropertyBag::decode_message(properties, payload)?,
                _ => return Err(format!("not a C2D message for {device_id}: {topic}").into()),
            };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
        }
    }
}
