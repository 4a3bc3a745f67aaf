//! The `/messages/serviceBound/feedback` node (delivery feedback batches) and the
//! `/messages/serviceBound/filenotifications` node (attaches, sends nothing yet).
//!
//! fe2o3-amqp chooses delivery tags itself (the delivery id, 4 bytes) and has no API to send
//! the 16-byte tags IoT Hub uses on feedback messages (the C# service SDK turns them into a
//! `Guid`: `azure-iot-sdk-csharp`, `iothub/service/src/AmqpFeedbackReceiver.cs`); the official
//! Node and Python clients do not read them.

use std::sync::Arc;
use std::time::SystemTime;

use fe2o3_amqp::Sender;
use fe2o3_amqp::acceptor::LinkEndpoint;
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    Body, Data, Message as AmqpMessage, MessageAnnotations, MessageId, Outcome, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, Symbol, Timestamp, Value};

use super::{Conn, close_expired};
use crate::local_hub::feedback_queue::FeedbackDelivery;
use crate::local_hub::state::{HubState, random_bytes};
use crate::protocol::amqp_message::id_text;
use crate::protocol::{FEEDBACK_CONTENT_TYPE, encode_feedback_batch};

/// The message annotation with the feedback batch's time (`azure-iot-sdk-csharp`,
/// `MessageSystemPropertyNames.EnqueuedTime`).
const ENQUEUED_TIME: &str = "iothub-enqueuedtime";

/// The hub's name: the first label of its host name (`myhub` of `myhub.azure-devices.net`).
fn hub_name(host_name: &str) -> &str {
    host_name.split('.').next().unwrap_or(host_name)
}

fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    id_text(&MessageId::Uuid(b.into()))
}

/// One feedback batch as IoT Hub sends it: content type
/// [`FEEDBACK_CONTENT_TYPE`], user-id the hub name, annotation `iothub-enqueuedtime`, the JSON
/// array in one data section (`azure-iot-sdk-csharp`, `iothub/service/src/AmqpFeedbackReceiver.cs`
/// and `CommonConstants.BatchedFeedbackContentType`).
fn feedback_message(state: &HubState, delivery: &FeedbackDelivery) -> AmqpMessage<Body<Value>> {
    let enqueued_ms = delivery
        .enqueued_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let properties = Properties {
        message_id: Some(MessageId::String(uuid_v4())),
        user_id: Some(Binary::from(
            hub_name(&state.settings.host_name).as_bytes().to_vec(),
        )),
        content_type: Some(Symbol::from(FEEDBACK_CONTENT_TYPE)),
        ..Properties::default()
    };
    let body = encode_feedback_batch(&delivery.records);
    AmqpMessage::builder()
        .properties(properties)
        .message_annotations(
            MessageAnnotations::builder()
                .insert(
                    OwnedKey::Symbol(Symbol::from(ENQUEUED_TIME)),
                    Value::Timestamp(Timestamp::from_milliseconds(enqueued_ms)),
                )
                .build(),
        )
        .body(Body::Data(vec![Data(Binary::from(body))].into()))
        .build()
}

/// Why no batch came.
enum Stop {
    /// The client detached the link.
    Detached,
    /// The connection's authorization lapsed.
    Lapsed,
}

/// Waits for the next ready batch.
async fn next_feedback(sender: &mut Sender, conn: &Conn) -> Result<FeedbackDelivery, Stop> {
    loop {
        let ready = conn.state.feedback_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        if let Some(delivery) = conn.state.lock_feedback() {
            return Ok(delivery);
        }
        tokio::select! {
            _ = ready => {}
            _ = sender.on_detach() => return Err(Stop::Detached),
            _ = conn.lapsed() => return Err(Stop::Lapsed),
            _ = conn.ended() => return Err(Stop::Detached),
        }
    }
}

/// Serves the client's feedback receiver link: one locked batch at a time, completed when the
/// client accepts or rejects it (rejected = dead-lettered), released otherwise.
pub(super) async fn send(mut sender: Sender, conn: Arc<Conn>) {
    loop {
        let delivery = match next_feedback(&mut sender, &conn).await {
            Ok(delivery) => delivery,
            Err(Stop::Lapsed) => {
                close_expired(LinkEndpoint::Sender(sender), &conn).await;
                return;
            }
            Err(Stop::Detached) => {
                let _ = sender.close().await;
                return;
            }
        };
        let message = feedback_message(&conn.state, &delivery);
        let records = delivery.records.len();
        tracing::info!(peer = %conn.peer, records, "AMQP feedback batch sent");
        let outcome = tokio::select! {
            outcome = sender.send(message) => outcome,
            _ = conn.lapsed() => {
                conn.state.release_feedback(delivery.lock);
                close_expired(LinkEndpoint::Sender(sender), &conn).await;
                return;
            }
            _ = conn.ended() => {
                // The connection is gone with the batch unsettled: put it back at once
                // rather than at its lock expiry.
                tracing::info!(peer = %conn.peer, records, "AMQP connection lost; feedback batch released");
                conn.state.release_feedback(delivery.lock);
                return;
            }
        };
        match outcome {
            Ok(Outcome::Accepted(_)) => {
                tracing::info!(peer = %conn.peer, records, "AMQP feedback batch accepted");
                conn.state.complete_feedback(delivery.lock);
            }
            Ok(Outcome::Rejected(_)) => {
                tracing::info!(peer = %conn.peer, records, "AMQP feedback batch rejected");
                conn.state.complete_feedback(delivery.lock);
            }
            Ok(_) => {
                tracing::info!(peer = %conn.peer, records, "AMQP feedback batch released or modified");
                conn.state.release_feedback(delivery.lock);
            }
            Err(e) => {
                tracing::info!(peer = %conn.peer, records, error = %e, "AMQP feedback link lost; batch released");
                conn.state.release_feedback(delivery.lock);
                return;
            }
        }
    }
}

/// The file-notification link attaches; there is nothing to send until file upload exists.
pub(super) async fn file_notifications(mut sender: Sender, conn: Arc<Conn>) {
    tokio::select! {
        _ = sender.on_detach() => { let _ = sender.close().await; }
        _ = conn.lapsed() => close_expired(LinkEndpoint::Sender(sender), &conn).await,
    }
}
