//! What the connection does with each incoming PUBLISH: one route per feature, decided by
//! [`crate::protocol::classify_received_topic`], and the bounded channels that carry each
//! feature to the application.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::device::pending_requests::{PendingRequests, Response};
use crate::message::Message;
use crate::protocol::{PropertyBag, ReceivedTopic, classify_received_topic};

/// A received message with the connection it came on (its PUBACK may only go out on that
/// connection: the same packet id can mean another message on the next one).
pub(crate) struct Delivered {
    pub message: Message,
    pub epoch: u64,
    pub pkid: u16,
}

/// A module input message.
// Read by a module input API (not written yet: module inputs are outside issue 11).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct InputDelivered {
    pub input: String,
    pub delivered: Delivered,
}

/// A desired-properties patch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DesiredPatch {
    pub version: Option<u64>,
    pub body: Bytes,
}

/// A direct-method request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MethodRequest {
    pub name: String,
    pub request_id: String,
    pub body: Bytes,
}

/// A feature's channel, handed to the connection when the application subscribes to it.
pub(crate) enum FeatureSink {
    DesiredPatches(mpsc::Sender<DesiredPatch>),
    MethodRequests(mpsc::Sender<MethodRequest>),
    // Constructed by a module input API (not written yet: module inputs are outside issue 11).
    #[cfg_attr(not(test), allow(dead_code))]
    Inputs(mpsc::Sender<InputDelivered>),
}

/// The channels of the features the application subscribed to.
#[derive(Default)]
pub(crate) struct Sinks {
    pub c2d: Option<mpsc::Sender<Delivered>>,
    pub desired: Option<mpsc::Sender<DesiredPatch>>,
    pub methods: Option<mpsc::Sender<MethodRequest>>,
    pub inputs: Option<mpsc::Sender<InputDelivered>>,
}

impl Sinks {
    pub fn add(&mut self, sink: FeatureSink) {
        match sink {
            FeatureSink::DesiredPatches(tx) => self.desired = Some(tx),
            FeatureSink::MethodRequests(tx) => self.methods = Some(tx),
            FeatureSink::Inputs(tx) => self.inputs = Some(tx),
        }
    }
}

/// What became of a PUBLISH handed to its feature.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handed {
    /// A message the application acknowledges (or auto mode, on hand-over).
    Held,
    /// Taken or dropped: acknowledge it now (if QoS 1).
    AckNow,
    /// The C2D receiver is gone: every handle was dropped.
    C2dClosed,
}

impl Sinks {
    /// Hands a routed PUBLISH to its feature's channel (waiting while the channel is full, so
    /// the connection stops reading until the application catches up), or a twin response to
    /// the request waiting for it. A feature whose receiver is gone is forgotten.
    pub async fn hand_over(
        &mut self,
        routed: Route,
        epoch: u64,
        pkid: u16,
        requests: &mut PendingRequests,
    ) -> Handed {
        match routed {
            Route::CloudToDevice(message) => {
                let Some(tx) = &self.c2d else {
                    return Handed::AckNow;
                };
                let delivered = Delivered {
                    message,
                    epoch,
                    pkid,
                };
                // Room in the channel is the usual case: no wait to set up for it.
                let sent = match tx.try_send(delivered) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(delivered)) => {
                        tx.send(delivered).await.map_err(drop)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                };
                match sent {
                    Ok(()) => Handed::Held,
                    Err(()) => Handed::C2dClosed,
                }
            }
            Route::Input { input, message } => {
                let Some(tx) = &self.inputs else {
                    return Handed::AckNow;
                };
                let delivered = Delivered {
                    message,
                    epoch,
                    pkid,
                };
                if tx.send(InputDelivered { input, delivered }).await.is_ok() {
                    return Handed::Held;
                }
                self.inputs = None;
                Handed::AckNow
            }
            Route::TwinResponse {
                request_id,
                response,
            } => {
                if !requests.resolve(&request_id, response) {
                    tracing::debug!(%request_id, "a twin response no request waits for");
                }
                Handed::AckNow
            }
            Route::DesiredPatch(patch) => {
                if let Some(tx) = &self.desired {
                    if tx.send(patch).await.is_err() {
                        self.desired = None;
                    }
                }
                Handed::AckNow
            }
            Route::MethodRequest(request) => {
                if let Some(tx) = &self.methods {
                    if tx.send(request).await.is_err() {
                        self.methods = None;
                    }
                }
                Handed::AckNow
            }
            Route::Drop(why) => {
                tracing::debug!(%why, "dropping a publish");
                Handed::AckNow
            }
        }
    }
}

/// Where an incoming PUBLISH goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    CloudToDevice(Message),
    Input {
        input: String,
        message: Message,
    },
    TwinResponse {
        request_id: String,
        response: Response,
    },
    DesiredPatch(DesiredPatch),
    MethodRequest(MethodRequest),
    /// Nothing takes it (not for this identity, or not a known kind); acknowledged and dropped.
    Drop(String),
}

/// Decides where a PUBLISH on `topic` goes for `device_id` (and `module_id`).
pub(crate) fn route(
    topic: &str,
    payload: Bytes,
    device_id: &str,
    module_id: Option<&str>,
) -> Route {
    match classify_received_topic(topic) {
        Ok(ReceivedTopic::CloudToDevice {
            device_id: to,
            properties,
        }) if to == device_id && module_id.is_none() => {
            Route::CloudToDevice(decode_message(properties, payload))
        }
        Ok(ReceivedTopic::ModuleInput {
            device_id: to_device,
            module_id: to_module,
            input,
            properties,
        }) if to_device == device_id && Some(to_module) == module_id => Route::Input {
            input,
            message: decode_message(properties, payload),
        },
        Ok(ReceivedTopic::TwinResponse(response)) => Route::TwinResponse {
            response: Response {
                status: response.status,
                version: response.version,
                body: payload,
            },
            request_id: response.request_id,
        },
        Ok(ReceivedTopic::DesiredPatch(patch)) => Route::DesiredPatch(DesiredPatch {
            version: patch.version,
            body: payload,
        }),
        Ok(ReceivedTopic::MethodRequest(request)) => Route::MethodRequest(MethodRequest {
            name: request.name,
            request_id: request.request_id,
            body: payload,
        }),
        Ok(ReceivedTopic::CloudToDevice { .. } | ReceivedTopic::ModuleInput { .. }) => {
            Route::Drop("a message for another identity".into())
        }
        Ok(_) => Route::Drop("a topic this client does not read".into()),
        Err(e) => Route::Drop(format!("an unreadable topic: {e}")),
    }
}

/// The message of a C2D or input PUBLISH. A property bag that cannot be decoded does not lose
/// the message: its body is delivered alone.
fn decode_message(properties: &str, payload: Bytes) -> Message {
    match PropertyBag::decode_message(properties, payload.clone()) {
        Ok(message) => message,
        Err(e) => {
            tracing::error!(error = %e, "a message's properties could not be decoded; delivering its body alone");
            Message::new(payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Bytes {
        Bytes::from_static(b"{\"a\":1}")
    }

    #[test]
    fn routes_each_kind_to_its_feature() {
        let c2d = route(
            "devices/d/messages/devicebound/%24.mid=m1&k=v",
            body(),
            "d",
            None,
        );
        let Route::CloudToDevice(message) = c2d else {
            panic!("{c2d:?}")
        };
        assert_eq!(message.message_id(), Some("m1"));
        assert_eq!(message.property("k"), Some("v"));

        let input = route(
            "devices/d/modules/m/inputs/in%201/%24.mid=i1",
            body(),
            "d",
            Some("m"),
        );
        let Route::Input { input, message } = input else {
            panic!("{input:?}")
        };
        assert_eq!((input.as_str(), message.message_id()), ("in 1", Some("i1")));

        assert_eq!(
            route(
                "$iothub/twin/res/204/?$rid=4&$version=9",
                Bytes::new(),
                "d",
                None
            ),
            Route::TwinResponse {
                request_id: "4".into(),
                response: Response {
                    status: 204,
                    version: Some(9),
                    body: Bytes::new()
                }
            }
        );
        assert_eq!(
            route(
                "$iothub/twin/PATCH/properties/desired/?$version=3",
                body(),
                "d",
                Some("m")
            ),
            Route::DesiredPatch(DesiredPatch {
                version: Some(3),
                body: body()
            })
        );
        assert_eq!(
            route("$iothub/methods/POST/reboot/?$rid=r1", body(), "d", None),
            Route::MethodRequest(MethodRequest {
                name: "reboot".into(),
                request_id: "r1".into(),
                body: body()
            })
        );
    }

    #[test]
    fn messages_for_other_identities_and_bad_topics_are_dropped() {
        for (topic, module) in [
            ("devices/other/messages/devicebound/", None),
            ("devices/d/messages/devicebound/", Some("m")), // modules have no C2D
            ("devices/d/modules/other/inputs/in/", Some("m")),
            ("devices/d/modules/m/inputs/in/", None),
            ("$iothub/twin/res/200/?$version=1", None), // no $rid
            ("something/else", None),
        ] {
            assert!(
                matches!(route(topic, body(), "d", module), Route::Drop(_)),
                "{topic}"
            );
        }
    }

    #[tokio::test]
    async fn each_feature_gets_its_own_channel_and_messages_wait_for_their_ack() {
        let mut requests = PendingRequests::default();
        let mut sinks = Sinks::default();
        let (c2d_tx, mut c2d) = mpsc::channel(1);
        sinks.c2d = Some(c2d_tx);
        let (tx, mut desired) = mpsc::channel(1);
        sinks.add(FeatureSink::DesiredPatches(tx));
        let (tx, mut methods) = mpsc::channel(1);
        sinks.add(FeatureSink::MethodRequests(tx));
        let (tx, mut inputs) = mpsc::channel(1);
        sinks.add(FeatureSink::Inputs(tx));

        let routed = route("devices/d/messages/devicebound/", body(), "d", None);
        assert_eq!(
            sinks.hand_over(routed, 3, 11, &mut requests).await,
            Handed::Held
        );
        let delivered = c2d.recv().await.unwrap();
        assert_eq!((delivered.epoch, delivered.pkid), (3, 11));
        assert_eq!(delivered.message.body(), &body());

        let routed = route("devices/d/modules/m/inputs/in1/", body(), "d", Some("m"));
        assert_eq!(
            sinks.hand_over(routed, 3, 12, &mut requests).await,
            Handed::Held
        );
        let input = inputs.recv().await.unwrap();
        assert_eq!(input.input, "in1");
        assert_eq!((input.delivered.epoch, input.delivered.pkid), (3, 12));

        let routed = route(
            "$iothub/twin/PATCH/properties/desired/?$version=2",
            body(),
            "d",
            None,
        );
        assert_eq!(
            sinks.hand_over(routed, 3, 0, &mut requests).await,
            Handed::AckNow
        );
        assert_eq!(desired.recv().await.unwrap().version, Some(2));

        let routed = route("$iothub/methods/POST/m/?$rid=9", body(), "d", None);
        assert_eq!(
            sinks.hand_over(routed, 3, 0, &mut requests).await,
            Handed::AckNow
        );
        assert_eq!(methods.recv().await.unwrap().request_id, "9");
    }

    #[tokio::test]
    async fn twin_responses_resolve_requests_and_gone_receivers_are_forgotten() {
        let mut requests = PendingRequests::default();
        let (done, response) = tokio::sync::oneshot::channel();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let rid = requests.insert(
            crate::protocol::twin_get_topic,
            Bytes::new(),
            deadline,
            done,
        );
        let mut sinks = Sinks::default();
        let routed = route(
            &format!("$iothub/twin/res/200/?$rid={rid}"),
            body(),
            "d",
            None,
        );
        assert_eq!(
            sinks.hand_over(routed, 1, 0, &mut requests).await,
            Handed::AckNow
        );
        let response = response.await.unwrap().unwrap();
        assert_eq!((response.status, response.body), (200, body()));

        let (tx, methods) = mpsc::channel(1);
        sinks.add(FeatureSink::MethodRequests(tx));
        drop(methods);
        let routed = route("$iothub/methods/POST/m/?$rid=9", body(), "d", None);
        sinks.hand_over(routed, 1, 0, &mut requests).await;
        assert!(sinks.methods.is_none());

        let (tx, c2d) = mpsc::channel(1);
        sinks.c2d = Some(tx);
        drop(c2d);
        let routed = route("devices/d/messages/devicebound/", body(), "d", None);
        assert_eq!(
            sinks.hand_over(routed, 1, 5, &mut requests).await,
            Handed::C2dClosed
        );
        // A module (no C2D channel) acknowledges and drops.
        sinks.c2d = None;
        let routed = route("devices/d/modules/m/inputs/in1/", body(), "d", Some("m"));
        sinks.inputs = None;
        assert_eq!(
            sinks.hand_over(routed, 1, 6, &mut requests).await,
            Handed::AckNow
        );
    }

    #[test]
    fn an_undecodable_bag_keeps_the_body() {
        let routed = route("devices/d/messages/devicebound/a=%zz", body(), "d", None);
        let Route::CloudToDevice(message) = routed else {
            panic!("{routed:?}")
        };
        assert_eq!(message.body(), &body());
    }
}
