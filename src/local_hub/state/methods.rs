//! Direct-method calls in flight: each waits for the device's answer by its `$rid`.
//!
//! A call ([`HubState::invoke_method`]) waits up to its connect timeout for the identity to be
//! connected with a subscription to `$iothub/methods/POST/#`, then pushes
//! `$iothub/methods/POST/{name}/?$rid={rid}` into the session and waits up to its response
//! timeout for `$iothub/methods/res/{status}/?$rid={rid}` (Microsoft Learn, "Understand and
//! invoke direct methods from IoT Hub"). The outcomes map to IoT Hub's answers:
//! - not connected or not subscribed within the connect timeout: 404103 DeviceNotOnline
//!   (Microsoft Learn, "Troubleshoot Azure IoT Hub error 404103 DeviceNotOnline");
//! - no answer within the response timeout: 504101 GatewayTimeout (Microsoft Learn,
//!   "Troubleshoot Azure IoT Hub error 504101 GatewayTimeout");
//! - the session ends while the call waits: the call fails at once as DeviceNotOnline (the
//!   local hub's choice: IoT Hub does not document this case, and answering at once spares the
//!   caller its timeout).
//!
//! An answer to a call that already ended, or with an unknown `$rid`, or from another identity,
//! is ignored.
//!
//! The request's body is the payload's JSON, `null` when there is none: both device SDKs parse
//! it as JSON (`azure-iot-device`, `iothub/pipeline/pipeline_stages_iothub_mqtt.py`:
//! `json.loads(payload or 'null')`; `azure-iot-device`, `device_method/device_method_request.ts`:
//! `JSON.parse(body)` when there is a body).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use crate::protocol::{MethodResult, method_request_topic};

use super::identities::Identity;
use super::twins::identity_not_found;
use super::{HubState, Outbound};

/// Why a method call got no answer.
#[derive(Debug)]
pub(crate) enum MethodFailure {
    /// The identity is not registered (the error says whether the device or the module).
    NotFound(crate::Error),
    /// Not connected, or not subscribed to methods, within the connect timeout; or the session
    /// ended before the answer.
    NotOnline { disconnected: bool },
    /// No answer within the response timeout.
    Timeout,
}

/// What a waiting call receives.
#[derive(Debug)]
enum Reply {
    Answered(MethodResult),
    Disconnected,
}

struct PendingCall {
    identity: Identity,
    session_id: u64,
    reply: oneshot::Sender<Reply>,
}

/// The calls waiting for an answer, by `$rid`.
#[derive(Default)]
pub(super) struct PendingMethods {
    calls: HashMap<String, PendingCall>,
}

impl PendingMethods {
    /// Fails every call waiting on session `session_id` of `identity`.
    pub fn session_closed(&mut self, identity: &Identity, session_id: u64) {
        let ended: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, call)| call.identity == *identity && call.session_id == session_id)
            .map(|(rid, _)| rid.clone())
            .collect();
        for rid in ended {
            if let Some(call) = self.calls.remove(&rid) {
                let _ = call.reply.send(Reply::Disconnected);
            }
        }
    }

    /// How many calls wait.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.calls.len()
    }
}

/// Removes a call's entry when its caller stops waiting, however that happens.
struct CallGuard<'a> {
    state: &'a HubState,
    rid: String,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.state.lock().methods.calls.remove(&self.rid);
    }
}

impl HubState {
    /// Calls method `name` on `identity` with `payload` and waits for its answer.
    pub async fn invoke_method(
        &self,
        identity: &Identity,
        name: &str,
        payload: &Value,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<MethodResult, MethodFailure> {
        let connect_deadline = Instant::now() + connect_timeout;
        let body = Bytes::from(serde_json::to_vec(payload).unwrap_or_else(|_| b"null".to_vec()));
        let rid = format!("{:x}", self.fresh_id());
        let (tx, rx) = oneshot::channel();
        let mut reply = Some(tx);
        // Wait for a connected, subscribed session, then hand it the request.
        loop {
            let changed = self.method_subscribers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.generation_of(identity).is_none() {
                    return Err(MethodFailure::NotFound(identity_not_found(identity)));
                }
                if let Some(qos) = inner.method_subscription(identity) {
                    let slot = inner.slot(identity).expect("a subscription has a slot");
                    let session_id = slot.current_session_id().expect("connected");
                    let pushed = slot.push(Outbound::Publish {
                        topic: method_request_topic(name, &rid),
                        payload: body.clone(),
                        qos,
                    });
                    if pushed {
                        inner.methods.calls.insert(
                            rid.clone(),
                            PendingCall {
                                identity: identity.clone(),
                                session_id,
                                reply: reply.take().expect("inserted once"),
                            },
                        );
                        break;
                    }
                }
            }
            if timeout_at(connect_deadline, changed).await.is_err() {
                return Err(MethodFailure::NotOnline {
                    disconnected: false,
                });
            }
        }
        let _guard = CallGuard { state: self, rid };
        match tokio::time::timeout(response_timeout, rx).await {
            Ok(Ok(Reply::Answered(result))) => Ok(result),
            Ok(Ok(Reply::Disconnected)) | Ok(Err(_)) => {
                Err(MethodFailure::NotOnline { disconnected: true })
            }
            Err(_) => Err(MethodFailure::Timeout),
        }
    }

    /// A device answered call `rid`; returns whether a call was waiting for it.
    pub fn answer_method(&self, from: &Identity, rid: &str, result: MethodResult) -> bool {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.touch(from, now);
        let is_for_caller = inner
            .methods
            .calls
            .get(rid)
            .is_some_and(|call| call.identity == *from);
        if !is_for_caller {
            return false;
        }
        let call = inner.methods.calls.remove(rid).expect("checked above");
        call.reply.send(Reply::Answered(result)).is_ok()
    }
}
