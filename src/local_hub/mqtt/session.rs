//! One connected MQTT session: packets from the client, items from the outbox, deliveries of
//! the device's C2D queue.
//!
//! Cloud-to-device messages go out as QoS 1 PUBLISH (or QoS 0 when the subscription asked for
//! it) and the PUBACK completes them; at most [`MAX_IN_FLIGHT`] wait for their PUBACK at once.
//! A PUBLISH pushed into the outbox by another part of the hub goes out as it is.
//!
//! Writes are batched per wake-up: everything the session sends in answer to the packets of one
//! read, to the outbox items waiting, and the C2D deliveries these allow, is encoded into the
//! write buffer and goes out in one write and one flush before the session waits again.
//!
//! Twin and method traffic (Microsoft Learn, "Communicate with an IoT hub using the MQTT
//! protocol"): `$iothub/twin/GET/?$rid=` is answered on `$iothub/twin/res/200/?$rid=` with the
//! `{desired, reported}` document; `$iothub/twin/PATCH/properties/reported/?$rid=` on
//! `$iothub/twin/res/204/?$rid=&$version=` with the new reported version, or with status 400
//! and a `{"errorCode": 400004, "message": …}` body for a malformed or refused patch (Python
//! reads the status: `azure-iot-device`, `iothub/pipeline/pipeline_stages_iothub.py` fails a
//! twin request whose status is 300 or more; Node ignores it and looks for `errorCode` in the
//! body: `azure-iot-device-mqtt`, `mqtt_twin_client.ts`, `_onResponseMessage`);
//! `$iothub/methods/res/{status}/?$rid=` answers a pending method call. Answers go out at QoS 0,
//! which every subscription allows, and only to a session subscribed to `$iothub/twin/res/#`.
//! Subscriptions to desired patches and method requests are recorded with the hub, which then
//! pushes them into this session's outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::local_hub::c2d_queue::LockToken;
use crate::local_hub::state::{Credential, Feature, HubState, Identity, Outbound, Outbox};
use crate::protocol::{
    DESIRED_PATCH_SUBSCRIPTION, METHOD_REQUEST_SUBSCRIPTION, MethodResult,
    TWIN_RESPONSE_SUBSCRIPTION, TwinRequestKind, c2d_subscription, c2d_topic, parse_collection,
    parse_method_response_topic, parse_telemetry_topic, parse_twin_request_topic, response_payload,
    twin_response_topic,
};

use super::wire::{End, Wire};

/// C2D deliveries awaiting PUBACK on one connection at most.
const MAX_IN_FLIGHT: usize = 16;

/// What a packet id sent by the hub waits for.
#[derive(Clone, Copy, Debug)]
enum InFlight {
    /// A C2D delivery, completed by its PUBACK.
    C2d(LockToken),
    /// A pushed QoS 1 PUBLISH; its PUBACK only frees the packet id.
    Pushed,
}

pub(super) struct Session {
    state: Arc<HubState>,
    identity: Identity,
    session_id: u64,
    in_flight: HashMap<u16, InFlight>,
    next_pkid: u16,
    /// The QoS granted to the C2D subscription: with 0, deliveries are not acknowledged
    /// (MQTT 3.1.1 section 4.3.1) and so count as completed once sent (inferred: the IoT Hub
    /// docs do not say what a QoS 0 C2D subscription does to the queue).
    c2d_qos: QoS,
    /// How the connection authenticated, stamped on its telemetry.
    credential: Credential,
    /// A PUBACK for telemetry is queued: the next flush waits for the state directory.
    awaiting_durable: bool,
}

/// How a session ended, for the log.
pub(super) enum Outcome {
    Disconnect,
    Ended(End),
    TakenOver,
    KeepAliveTimeout,
    TokenExpired,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Disconnect => f.write_str("DISCONNECT"),
            Outcome::Ended(end) => end.fmt(f),
            Outcome::TakenOver => f.write_str(
                "replaced by a newer connection, too slow for its outbox, or the identity was \
                 disabled or deleted",
            ),
            Outcome::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            Outcome::TokenExpired => f.write_str("SAS token expired"),
        }
    }
}

impl Session {
    pub fn new(state: Arc<HubState>, identity: Identity, session_id: u64) -> Self {
        Session {
            state,
            identity,
            session_id,
            in_flight: HashMap::new(),
            next_pkid: 0,
            c2d_qos: QoS::AtLeastOnce,
            credential: Credential::Sas,
            awaiting_durable: false,
        }
    }

    /// Records that the connection authenticated with `credential` (SAS by default).
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// The C2D deliveries still waiting for their PUBACK.
    pub fn in_flight_c2d(&self) -> Vec<LockToken> {
        self.in_flight
            .values()
            .filter_map(|f| match f {
                InFlight::C2d(token) => Some(*token),
                InFlight::Pushed => None,
            })
            .collect()
    }

    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        kick: &Notify,
        outbox: &mut Outbox,
        keep_alive: Option<Duration>,
        token_expiry: Instant,
    ) -> Outcome {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut alive_until = keep_alive.map_or(far, |k| Instant::now() + k);
        if let Err(e) = self.deliver(wire) {
            return Outcome::Ended(e);
        }
        // One timer for the keep-alive and the token's expiry. A packet moves `alive_until`
        // without touching the timer: when it fires early, it is set to the new deadline.
        // (A timer made per wake-up costs a registration and a removal in Tokio's wheel each.)
        let wake = sleep_until(alive_until.min(token_expiry));
        tokio::pin!(wake);
        loop {
            // Handle every complete packet already read.
            loop {
                match wire.buffered_packet() {
                    Ok(Some(packet)) => {
                        if let Some(k) = keep_alive {
                            alive_until = Instant::now() + k;
                        }
                        match self.handle(wire, packet) {
                            Ok(true) => {}
                            Ok(false) => {
                                // Answers queued before the DISCONNECT still go out.
                                let _ = self.flush(wire).await;
                                return Outcome::Disconnect;
                            }
                            Err(e) => return Outcome::Ended(e),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Outcome::Ended(e),
                }
            }
            // Outbox items already waiting join the same write.
            while let Some(item) = outbox.try_recv() {
                if let Err(e) = self.send_outbound(wire, item) {
                    return Outcome::Ended(e);
                }
            }
            if let Err(e) = self.flush(wire).await {
                return Outcome::Ended(e);
            }
            tokio::select! {
                filled = wire.fill() => {
                    if let Err(e) = filled {
                        return Outcome::Ended(e);
                    }
                }
                item = outbox.recv() => {
                    let Some(item) = item else {
                        return Outcome::TakenOver;
                    };
                    if let Err(e) = self.send_outbound(wire, item) {
                        return Outcome::Ended(e);
                    }
                }
                _ = kick.notified() => return Outcome::TakenOver,
                _ = &mut wake => {
                    let now = Instant::now();
                    if token_expiry <= now {
                        return Outcome::TokenExpired;
                    }
                    if alive_until <= now {
                        return Outcome::KeepAliveTimeout;
                    }
                    wake.as_mut().reset(alive_until.min(token_expiry));
                }
            }
        }
    }

    /// Writes the queued packets in one flush; PUBACKs for telemetry wait until the state
    /// directory (if any) has the messages they acknowledge.
    async fn flush<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<(), End> {
        if std::mem::take(&mut self.awaiting_durable) {
            self.state
                .persisted()
                .await
                .map_err(|e| End::Protocol(e.to_string()))?;
        }
        wire.flush().await
    }

    /// Sends what was pushed, then pulls the C2D queue: after any item, so that a wake-up
    /// dropped because the outbox was full is never missed.
    fn send_outbound<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        item: Outbound,
    ) -> Result<(), End> {
        if let Outbound::Publish {
            topic,
            payload,
            qos,
        } = item
        {
            self.publish(wire, topic, payload, qos, InFlight::Pushed)?;
        }
        self.deliver(wire)
    }

    /// Queues a PUBLISH; a QoS 1 one is remembered until its PUBACK.
    fn publish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        topic: String,
        payload: Bytes,
        qos: QoS,
        waits_for: InFlight,
    ) -> Result<(), End> {
        let qos = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            let pkid = self.fresh_pkid();
            self.in_flight.insert(pkid, waits_for);
            pkid
        };
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            pkid,
            payload,
        };
        wire.queue(Packet::Publish(publish))
    }

    /// Queues C2D messages for sending while there is room in flight. Modules have no C2D.
    fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<(), End> {
        if self.identity.module_id.is_some() {
            return Ok(());
        }
        let device_id = self.identity.device_id.clone();
        while self.in_flight_c2d_count() < MAX_IN_FLIGHT {
            let Some((token, message)) = self.state.next_c2d(&device_id, self.session_id) else {
                break;
            };
            let topic = match c2d_topic(&device_id, &message) {
                Ok(topic) => topic,
                Err(e) => {
                    // The service side refuses such messages; complete rather than loop.
                    tracing::warn!(device = %device_id, error = %e, "dropping a C2D message that has no topic form");
                    self.state.complete_c2d(&device_id, token);
                    continue;
                }
            };
            let qos = self.c2d_qos;
            self.publish(
                wire,
                topic,
                message.body().clone(),
                qos,
                InFlight::C2d(token),
            )?;
            if qos == QoS::AtMostOnce {
                self.state.complete_c2d(&device_id, token);
            }
        }
        Ok(())
    }

    fn in_flight_c2d_count(&self) -> usize {
        self.in_flight
            .values()
            .filter(|f| matches!(f, InFlight::C2d(_)))
            .count()
    }

    fn fresh_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Handles one packet, queueing the answers; `Ok(false)` ends the session cleanly.
    fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        packet: Packet,
    ) -> Result<bool, End> {
        match packet {
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return Err(End::Protocol("QoS 2 is not supported".into()));
                }
                let answer = self.on_publish(&publish)?;
                if publish.qos == QoS::AtLeastOnce {
                    // Durable before the PUBACK goes out when the hub keeps a state
                    // directory: `flush` waits for the store once per batch.
                    self.awaiting_durable = true;
                    wire.queue(Packet::PubAck(PubAck::new(publish.pkid)))?;
                }
                if let Some((topic, payload)) = answer {
                    self.publish(wire, topic, payload, QoS::AtMostOnce, InFlight::Pushed)?;
                }
            }
            Packet::PubAck(ack) => {
                if let Some(InFlight::C2d(token)) = self.in_flight.remove(&ack.pkid) {
                    self.state.complete_c2d(&self.identity.device_id, token);
                }
                self.deliver(wire)?;
            }
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for filter in &subscribe.filters {
                    codes.push(self.on_subscribe(&filter.path, filter.qos));
                }
                wire.queue(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))?;
                self.deliver(wire)?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                for topic in &unsubscribe.topics {
                    if let Some(feature) = feature_of(topic) {
                        self.state.set_feature_subscription(
                            &self.identity,
                            self.session_id,
                            feature,
                            None,
                        );
                    }
                }
                let device_id = &self.identity.device_id;
                if self.identity.module_id.is_none()
                    && unsubscribe
                        .topics
                        .iter()
                        .any(|t| *t == c2d_subscription(device_id))
                {
                    self.state
                        .set_c2d_subscribed(device_id, self.session_id, false);
                }
                wire.queue(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))?;
            }
            Packet::PingReq => wire.queue(Packet::PingResp)?,
            Packet::Disconnect => return Ok(false),
            other => {
                return Err(End::Protocol(format!(
                    "unexpected packet {:?}",
                    packet_name(&other)
                )));
            }
        }
        Ok(true)
    }

    /// Handles a PUBLISH from the client; returns the answer to send, if any.
    fn on_publish(&self, publish: &Publish) -> Result<Option<(String, Bytes)>, End> {
        if publish.topic.starts_with("$iothub/") {
            return Ok(self.on_iothub_publish(publish));
        }
        let (from, message) = parse_telemetry_topic(&publish.topic, publish.payload.clone())
            .map_err(|e| End::Protocol(format!("bad telemetry topic: {e}")))?;
        if from.device_id != self.identity.device_id || from.module_id != self.identity.module_id {
            return Err(End::Protocol("telemetry for another identity".into()));
        }
        tracing::debug!(identity = %self.identity, message_id = ?message.message_id(), "telemetry");
        self.state
            .publish_telemetry_authenticated(&self.identity, self.credential, message);
        Ok(None)
    }

    /// Twin requests and method answers. A bad topic is logged and ignored (IoT Hub closes
    /// the connection; the local hub keeps it, so one bad publish does not hide what follows).
    fn on_iothub_publish(&self, publish: &Publish) -> Option<(String, Bytes)> {
        let topic = publish.topic.as_str();
        if topic.starts_with("$iothub/methods/res/") {
            match parse_method_response_topic(topic) {
                Ok(answer) => {
                    let result =
                        MethodResult::new(answer.status, response_payload(&publish.payload));
                    if !self
                        .state
                        .answer_method(&self.identity, &answer.request_id, result)
                    {
                        tracing::debug!(identity = %self.identity, rid = %answer.request_id, "method answer for no waiting call (unknown $rid or timed out): ignored");
                    }
                }
                Err(e) => {
                    tracing::info!(identity = %self.identity, error = %e, "bad method answer topic: ignored")
                }
            }
            return None;
        }
        let request = match parse_twin_request_topic(topic) {
            Ok(request) => request,
            Err(e) => {
                tracing::info!(identity = %self.identity, error = %e, "unknown $iothub topic: ignored");
                return None;
            }
        };
        let rid = &request.request_id;
        let answer = match request.kind {
            TwinRequestKind::Get => self
                .state
                .device_twin(&self.identity)
                .and_then(|twin| {
                    serde_json::to_vec(&twin).map_err(|e| {
                        crate::Error::new(crate::ErrorKind::InvalidMessage, e.to_string())
                    })
                })
                .map(|body| (twin_response_topic(200, rid, None), Bytes::from(body))),
            TwinRequestKind::PatchReported => {
                parse_collection(&publish.payload, "reported-properties patch")
                    .and_then(|patch| self.state.update_reported(&self.identity, patch))
                    .map(|version| (twin_response_topic(204, rid, Some(version)), Bytes::new()))
            }
        };
        if !self
            .state
            .subscribed_to(&self.identity, Feature::TwinResponses)
        {
            // A server sends only what matches a subscription (MQTT 3.1.1 section 3.3.5); the
            // request was still carried out.
            tracing::debug!(identity = %self.identity, "twin request without a subscription to '$iothub/twin/res/#': no answer sent");
            return None;
        }
        Some(answer.unwrap_or_else(|e| {
            tracing::debug!(identity = %self.identity, error = %e, "twin request refused");
            let body = serde_json::json!({ "errorCode": 400004, "message": e.detail() });
            (
                twin_response_topic(400, rid, None),
                Bytes::from(body.to_string()),
            )
        }))
    }

    /// Grants the filters an identity may use (Microsoft Learn, "Communicate with an IoT hub
    /// using the MQTT protocol"): twin and method topics; a device's own C2D topic; a module's
    /// own `inputs/#` (azure-iot-device, azure-iot-device-mqtt for Node) or `#` (azure-iot-sdk-c
    /// `iothubtransport_mqtt_common.c`). QoS 2 is granted as 1.
    fn on_subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        let device = self.identity.device_id.clone();
        let granted = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        if let Some(feature) = feature_of(filter) {
            self.state.set_feature_subscription(
                &self.identity,
                self.session_id,
                feature,
                Some(granted),
            );
            return SubscribeReasonCode::Success(granted);
        }
        let allowed = match (&self.identity.module_id, filter) {
            (None, f) if f == c2d_subscription(&device) => {
                self.c2d_qos = granted;
                self.state
                    .set_c2d_subscribed(&device, self.session_id, true);
                true
            }
            (None, _) => false,
            (Some(module), f) => f
                .strip_prefix(&format!("devices/{device}/modules/{module}/"))
                .is_some_and(|rest| rest == "#" || rest == "inputs/#"),
        };
        if allowed {
            SubscribeReasonCode::Success(granted)
        } else {
            tracing::info!(identity = %self.identity, filter, "subscription refused");
            SubscribeReasonCode::Failure
        }
    }
}

/// The twin feature a subscription filter asks for.
fn feature_of(filter: &str) -> Option<Feature> {
    match filter {
        TWIN_RESPONSE_SUBSCRIPTION => Some(Feature::TwinResponses),
        DESIRED_PATCH_SUBSCRIPTION => Some(Feature::DesiredPatches),
        METHOD_REQUEST_SUBSCRIPTION => Some(Feature::MethodRequests),
        _ => None,
    }
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "packet",
    }
}
