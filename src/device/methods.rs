//! Direct methods on the device side: [`DeviceClient::method_requests`] and
//! [`MethodRequest::respond`].
//!
//! The hub invokes a method with a PUBLISH on `$iothub/methods/POST/{name}/?$rid={rid}` (JSON
//! body, or empty) to a device subscribed to `$iothub/methods/POST/#`; the device answers on
//! `$iothub/methods/res/{status}/?$rid={rid}` with a JSON body (Microsoft Learn "Communicate
//! with an IoT hub using the MQTT protocol", respond to a direct method; "Understand and invoke
//! direct methods from IoT Hub"). The answer goes out at QoS 1, as azure-iot-sdk-python
//! publishes everything (`azure/iot/device/common/mqtt_transport.py` `MQTTTransport.publish`,
//! `qos=1` by default), so
//! [`MethodRequest::respond`] resolves once the hub has it (the Node SDK uses QoS 0:
//! `device/transport/mqtt/src/mqtt.ts` `sendMethodResponse`).
//!
//! A request the application drops without answering is answered for it, so the caller does
//! not wait for its response timeout: with 500 when the application had received it (its
//! handler gave up, like the C# SDK's answer when a method callback throws,
//! `MethodResposeStatusCode.UserCodeException`), and with 501 when no application code ever saw
//! it (the client was closing; the C# SDK answers 501 `MethodNotImplemented` when no handler is
//! registered: azure-iot-sdk-csharp `DeviceClient.OnMethodCalledAsync`). A request whose
//! payload is not JSON is answered 400 at once (the C# SDK's `MethodResposeStatusCode` has
//! `BadRequest = 400, UserCodeException = 500, MethodNotImplemented = 501`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::device::DeviceClient;
use crate::device::connection::{Command, filter_qos};
use crate::device::inbound::{FeatureSink, MethodRequest as RawRequest};
use crate::device::state::closed_error;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{METHOD_REQUEST_SUBSCRIPTION, check_payload_size, method_response_topic};

/// The status of the answer to a request the application received and dropped unanswered.
pub const DROPPED_REQUEST_STATUS: i32 = 500;

/// The status of the answer to a request no application code received.
pub const UNHANDLED_REQUEST_STATUS: i32 = 501;

/// Answers one request, once.
struct Responder {
    commands: mpsc::Sender<Command>,
    request_id: String,
}

impl Responder {
    fn command(&self, status: i32, payload: Bytes) -> (Command, oneshot::Receiver<Result<()>>) {
        let (done, result) = oneshot::channel();
        let command = Command::Send {
            topic: method_response_topic(status, &self.request_id),
            payload,
            done,
        };
        (command, result)
    }

    async fn send(self, status: i32, payload: Bytes) -> Result<()> {
        let (command, result) = self.command(status, payload);
        self.commands
            .send(command)
            .await
            .map_err(|_| closed_error())?;
        result.await.map_err(|_| closed_error())?
    }

    /// Answers from `Drop`: without waiting, and without a runtime only if the command
    /// channel has room.
    fn send_detached(self, status: i32, why: &str) {
        let payload = serde_json::to_vec(&serde_json::json!({ "message": why }))
            .map(Bytes::from)
            .unwrap_or_default();
        let (command, _result) = self.command(status, payload);
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        let commands = self.commands.clone();
                        handle.spawn(async move {
                            let _ = commands.send(command).await;
                        });
                    }
                    Err(_) => tracing::warn!(
                        request_id = %self.request_id,
                        "cannot answer a dropped method request: no runtime and a full command queue"
                    ),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A direct-method invocation, to answer with [`Self::respond`].
///
/// Dropping it unanswered answers the caller with status 500 ([`DROPPED_REQUEST_STATUS`]).
pub struct MethodRequest {
    name: String,
    request_id: String,
    payload: Value,
    delivered: bool,
    responder: Option<Responder>,
}

impl std::fmt::Debug for MethodRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodRequest")
            .field("name", &self.name)
            .field("request_id", &self.request_id)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl MethodRequest {
    /// The method name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request id (`$rid`) the hub gave this invocation.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The JSON payload the caller sent ([`Value::Null`] when it sent none).
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Answers with `status` (any integer; the caller sees it as is, 200 meaning success by
    /// convention) and a JSON `payload` ([`Value::Null`] for none). Resolves when the hub has
    /// the answer (PUBACK).
    ///
    /// A payload over 128 KB ([`crate::protocol::MAX_METHOD_PAYLOAD_BYTES`], Microsoft Learn
    /// "Understand and invoke direct methods from IoT Hub") is an
    /// [`ErrorKind::MessageTooLarge`] error, and the caller is then answered with 500. After
    /// the connection that carried the request was lost, the hub no longer waits for the
    /// answer; it is sent anyway and ignored.
    pub async fn respond(mut self, status: i32, payload: Value) -> Result<()> {
        check_payload_size(&payload, "method response")?;
        let body = serde_json::to_vec(&payload)
            .map_err(|e| Error::new(ErrorKind::InvalidMessage, e.to_string()))?;
        let responder = self.responder.take().ok_or_else(closed_error)?;
        responder.send(status, Bytes::from(body)).await
    }
}

impl Drop for MethodRequest {
    fn drop(&mut self) {
        if let Some(responder) = self.responder.take() {
            let (status, why) = if self.delivered {
                (
                    DROPPED_REQUEST_STATUS,
                    "the device application dropped the request without answering it",
                )
            } else {
                (
                    UNHANDLED_REQUEST_STATUS,
                    "no device application code handled the request",
                )
            };
            tracing::debug!(method = %self.name, status, "answering a method request for the application");
            responder.send_detached(status, why);
        }
    }
}

/// Turns a request as received into the application's, or answers it at once when its payload
/// is unreadable.
fn accept(raw: RawRequest, commands: mpsc::Sender<Command>) -> Option<MethodRequest> {
    let payload = if raw.body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(&raw.body)
    };
    let responder = Responder {
        commands,
        request_id: raw.request_id.clone(),
    };
    match payload {
        Ok(payload) => Some(MethodRequest {
            name: raw.name,
            request_id: raw.request_id,
            payload,
            delivered: false,
            responder: Some(responder),
        }),
        Err(e) => {
            tracing::warn!(method = %raw.name, error = %e, "a method request whose payload is not JSON; answering 400");
            responder.send_detached(400, "the method payload is not JSON");
            None
        }
    }
}

/// The application's end of the requests, shared by every [`MethodRequests`].
pub(crate) type MethodReceiver = Arc<Mutex<mpsc::Receiver<MethodRequest>>>;

/// Wraps each received request until the client closes.
async fn forward(
    mut raw: mpsc::Receiver<RawRequest>,
    out: mpsc::Sender<MethodRequest>,
    commands: mpsc::WeakSender<Command>,
) {
    while let Some(request) = raw.recv().await {
        let Some(commands) = commands.upgrade() else {
            return;
        };
        if let Some(request) = accept(request, commands) {
            // When every handle is gone the request comes back and its drop answers 501.
            if out.send(request).await.is_err() {
                return;
            }
        }
    }
}

impl DeviceClient {
    /// The direct-method requests, as a [`Stream`]; returns once the hub granted the
    /// subscription to `$iothub/methods/POST/#` (made on the first call and restored after
    /// every reconnection; before it, the hub answers callers that the device is not
    /// listening), as azure-iot-sdk-python enables a feature when its handler is set
    /// (`azure/iot/device/iothub/sync_clients.py` `_generic_receive_handler_setter`). Every call returns a stream over the same requests: with several readers,
    /// each request goes to one.
    ///
    /// Answer each with [`MethodRequest::respond`]; one dropped unanswered is answered with
    /// 500. Requests wait in a bounded buffer (the builder's message buffer); when it is full
    /// the client stops reading from the network until the application catches up.
    pub async fn method_requests(&self) -> Result<MethodRequests> {
        let receiver = self
            .features()
            .methods
            .get_or_try_init(|| self.start_method_requests())
            .await
            .map_err(|e| self.why_stopped(e))?;
        Ok(MethodRequests {
            receiver: receiver.clone(),
            next: None,
        })
    }

    async fn start_method_requests(&self) -> Result<MethodReceiver> {
        let buffer = self.features().buffer;
        let (raw_tx, raw) = mpsc::channel(buffer);
        let (done, granted) = oneshot::channel();
        let command = Command::Subscribe {
            filter: METHOD_REQUEST_SUBSCRIPTION.to_owned(),
            qos: filter_qos(METHOD_REQUEST_SUBSCRIPTION),
            sink: Some(FeatureSink::MethodRequests(raw_tx)),
            done,
        };
        self.commands()
            .send(command)
            .await
            .map_err(|_| closed_error())?;
        granted.await.map_err(|_| closed_error())??;
        let (out, receiver) = mpsc::channel(buffer);
        tokio::spawn(forward(raw, out, self.commands().downgrade()));
        Ok(Arc::new(Mutex::new(receiver)))
    }
}

/// The stream of [`DeviceClient::method_requests`]; it ends when the client closes.
pub struct MethodRequests {
    receiver: MethodReceiver,
    next: Option<Pin<Box<dyn Future<Output = Option<MethodRequest>> + Send>>>,
}

impl std::fmt::Debug for MethodRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodRequests").finish_non_exhaustive()
    }
}

async fn next_request(receiver: MethodReceiver) -> Option<MethodRequest> {
    let mut request = receiver.lock().await.recv().await?;
    request.delivered = true;
    Some(request)
}

impl MethodRequests {
    /// The next request, waiting for one; [`ErrorKind::Closed`] once the client is closed.
    pub async fn recv(&mut self) -> Result<MethodRequest> {
        next_request(self.receiver.clone())
            .await
            .ok_or_else(closed_error)
    }
}

impl Stream for MethodRequests {
    type Item = MethodRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MethodRequest>> {
        if self.next.is_none() {
            self.next = Some(Box::pin(next_request(self.receiver.clone())));
        }
        let result = match self.next.as_mut() {
            Some(future) => std::task::ready!(future.as_mut().poll(cx)),
            None => return Poll::Pending,
        };
        self.next = None;
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(body: &'static str) -> RawRequest {
        RawRequest {
            name: "reboot".into(),
            request_id: "r 1".into(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn sent(command: Command) -> (String, Bytes) {
        match command {
            Command::Send { topic, payload, .. } => (topic, payload),
            _ => panic!("not a publish"),
        }
    }

    #[tokio::test]
    async fn a_response_goes_to_the_request_id_with_its_status_and_payload() {
        let (commands, mut queue) = mpsc::channel(4);
        let request = accept(raw(r#"{"delay":5}"#), commands).unwrap();
        assert_eq!(request.name(), "reboot");
        assert_eq!(request.payload()["delay"], 5);
        let answer = tokio::spawn(request.respond(200, serde_json::json!({"ok": true})));
        let Some(Command::Send {
            topic,
            payload,
            done,
        }) = queue.recv().await
        else {
            panic!()
        };
        assert_eq!(topic, "$iothub/methods/res/200/?$rid=r%201");
        assert_eq!(&payload[..], br#"{"ok":true}"#);
        done.send(Ok(())).unwrap();
        answer.await.unwrap().unwrap();
        assert!(queue.try_recv().is_err(), "answered once");
    }

    #[tokio::test]
    async fn a_dropped_request_is_answered_for_the_application() {
        let (commands, mut queue) = mpsc::channel(4);
        let mut request = accept(raw(""), commands.clone()).unwrap();
        assert_eq!(request.payload(), &Value::Null);
        request.delivered = true;
        drop(request);
        let (topic, payload) = sent(queue.recv().await.unwrap());
        assert_eq!(topic, "$iothub/methods/res/500/?$rid=r%201");
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        assert!(payload["message"].as_str().unwrap().contains("dropped"));

        drop(accept(raw("  "), commands.clone()).unwrap());
        assert!(sent(queue.recv().await.unwrap()).0.contains("/res/501/"));

        assert!(accept(raw("{not json"), commands).is_none());
        assert!(sent(queue.recv().await.unwrap()).0.contains("/res/400/"));
    }

    #[tokio::test]
    async fn an_oversized_response_is_refused_and_the_caller_gets_500() {
        let (commands, mut queue) = mpsc::channel(4);
        let mut request = accept(raw("1"), commands).unwrap();
        request.delivered = true;
        let big = "x".repeat(crate::protocol::MAX_METHOD_PAYLOAD_BYTES);
        let err = request.respond(200, Value::String(big)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
        assert!(sent(queue.recv().await.unwrap()).0.contains("/res/500/"));
    }

    #[tokio::test]
    async fn a_full_command_queue_still_gets_the_answer() {
        let (commands, mut queue) = mpsc::channel(1);
        commands
            .try_send(Command::Close {
                done: oneshot::channel().0,
            })
            .unwrap();
        let request = accept(raw("{}"), commands).unwrap();
        drop(request);
        assert!(matches!(queue.recv().await, Some(Command::Close { .. })));
        assert!(sent(queue.recv().await.unwrap()).0.contains("/res/501/"));
    }
}
