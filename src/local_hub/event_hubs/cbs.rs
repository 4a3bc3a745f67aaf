//! `$cbs` put-token and the reply route shared with `$management`.
//!
//! The reply carries `status-code` 202 as an AMQP int: fe2o3-amqp-cbs, which
//! azure_messaging_eventhubs uses, takes only 202 as success (`PutTokenResponse::STATUS_CODE`
//! in fe2o3-amqp-cbs `src/put_token.rs`), Python and Node any 2xx (azure-sdk-for-python
//! `azure/eventhub/_pyamqp/management_link.py`; azure-sdk-for-js
//! `sdk/core/core-amqp/src/requestResponseLink.ts`). `correlation-id` is the request's
//! `message-id` with its AMQP type (a uuid from Python, a string from Node, a ulong from
//! fe2o3-amqp-management), which is how Python and Node match replies; fe2o3 takes the next
//! message on its receiver after its request was accepted.

use std::sync::{Arc, Mutex};

use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::sync::mpsc;

use super::Conn;
use super::token::check_token;
use crate::local_hub::limits::LinkPlace;

/// Replies queued for the client's response link; bounded, so a client that does not read
/// them stalls its own requests instead of growing a queue.
const REPLY_QUEUE: usize = 16;

/// A message body as the request/response nodes receive it.
pub(crate) type Request = AmqpMessage<Body<Value>>;

/// Where a node's replies go: the client's latest receiver link from that node on this
/// connection. azure_messaging_eventhubs attaches a new `$cbs` response link for each partition
/// receiver it authorizes, so a new one replaces the previous one.
#[derive(Default)]
pub(crate) struct ReplyRoute {
    current: Mutex<Option<mpsc::Sender<Request>>>,
}

impl ReplyRoute {
    /// Sends replies on `sender` from now on.
    pub(crate) fn attach(&self, mut sender: Sender, place: LinkPlace) {
        let (tx, mut rx) = mpsc::channel::<Request>(REPLY_QUEUE);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        tokio::spawn(async move {
            let _place = place;
            while let Some(reply) = rx.recv().await {
                if sender.send(reply).await.is_err() {
                    return;
                }
            }
            // Replaced by a newer response link.
            let _ = sender.close().await;
        });
    }

    /// Queues a reply; `false` when there is no response link to send it on.
    pub(crate) async fn send(&self, reply: Request) -> bool {
        let tx = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match tx {
            Some(tx) => tx.send(reply).await.is_ok(),
            None => false,
        }
    }
}

/// An application property as text (string or symbol).
pub(crate) fn text_property(message: &Request, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// A reply to `request` with a status, a description and a body.
pub(crate) fn reply(request: &Request, status: i32, description: &str, body: Value) -> Request {
    let props = request.properties.as_ref();
    AmqpMessage::builder()
        .properties(Properties {
            correlation_id: props.and_then(|p| p.message_id.clone()),
            to: props.and_then(|p| p.reply_to.clone()),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert(
                    "status-description",
                    SimpleValue::String(description.to_owned()),
                )
                .build(),
        )
        .body(Body::Value(AmqpValue(body)))
        .build()
}

fn put_token(conn: &Conn, request: &Request) -> Result<std::time::SystemTime, (i32, String)> {
    if text_property(request, "operation").as_deref() != Some("put-token") {
        return Err((400, "unsupported operation".to_owned()));
    }
    let Body::Value(AmqpValue(Value::String(text))) = &request.body else {
        return Err((400, "the body must be the token as a string".to_owned()));
    };
    check_token(&conn.endpoint.state, &conn.endpoint.event_hub, text)
        .map_err(|refused| (401, refused.to_string()))
}

/// Serves put-token requests on the client's `$cbs` sender link.
pub(crate) async fn put_token_requests(mut receiver: Receiver, conn: Arc<Conn>) {
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        let request = delivery.message();
        let (status, description) = match put_token(&conn, request) {
            Ok(until) => {
                conn.authorize_until(until);
                (202, "Accepted".to_owned())
            }
            Err(refused) => refused,
        };
        tracing::info!(peer = %conn.peer, status, description = %description, "Event Hubs CBS put-token");
        let answer = reply(request, status, &description, Value::Null);
        if receiver.accept(&delivery).await.is_err() {
            break;
        }
        if !conn.cbs.send(answer).await {
            tracing::info!(peer = %conn.peer, "Event Hubs CBS reply dropped: no $cbs response link");
        }
    }
}
