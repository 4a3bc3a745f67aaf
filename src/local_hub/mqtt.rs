//! The MQTT 3.1.1 device endpoint: one task per connection.
//!
//! Packets are read and written with rumqttc's codec (`rumqttc::mqttbytes::v4`). The rules are
//! IoT Hub's (MicrosoftDocs `iot-mqtt-connect-to-iot-hub.md`; protocol.md §3): the user name is
//! `{host}/{device}[/{module}]/?{query}` with any api-version, the client id must name the same
//! identity, the password is a SAS token; CONNACK 5 (not authorized) on any failure; the
//! connection is closed at 1.5 × keep-alive without traffic, on a QoS 2 PUBLISH, when a newer
//! connection for the device arrives, and when the token expires. A device may subscribe only
//! to its own topics. Cloud-to-device messages go out as QoS 1 PUBLISH and the PUBACK completes
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsAcceptor;

use crate::auth::{HostAndPort, SasToken};
use crate::local_hub::c2d_queue::LockToken;
use crate::local_hub::state::HubState;
use crate::protocol::{c2d_subscription, c2d_topic, parse_telemetry_topic};

/// The largest packet accepted: a 256 KB telemetry message plus its topic (MicrosoftDocs
/// `iot-hub-devguide-quotas-throttling.md`; py-device `constant.py` 262144).
const MAX_PACKET: usize = 256 * 1024 + 16 * 1024;
/// Deliveries awaiting PUBACK on one connection at most.
const MAX_IN_FLIGHT: usize = 16;
/// Time a client has to finish TLS and send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts MQTT-over-TLS connections until the listener fails.
pub(crate) async fn serve(state: Arc<HubState>, acceptor: TlsAcceptor, listener: TcpListener) {
    crate::local_hub::tls::accept_loop(
        listener,
        acceptor,
        "MQTT",
        CONNECT_TIMEOUT,
        move |tls, peer| run_session(state.clone(), tls, peer),
    )
    .await
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    Closed,
    Io(std::io::Error),
    Protocol(String),
}

struct Wire<S> {
    stream: S,
    read: BytesMut,
    write: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// A complete packet already buffered, if any.
    fn buffered_packet(&mut self) -> Result<Option<Packet>, End> {
        match Packet::read(&mut self.read, MAX_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(End::Protocol(format!("malformed packet: {e}"))),
        }
    }

    /// Reads more bytes (cancel-safe). `Err(Closed)` at end of stream.
    async fn fill(&mut self) -> Result<(), End> {
        match self.stream.read_buf(&mut self.read).await {
            Ok(0) => Err(End::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(End::Io(e)),
        }
    }

    async fn next_packet(&mut self) -> Result<Packet, End> {
        loop {
            if let Some(packet) = self.buffered_packet()? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), End> {
        self.write.clear();
        packet
            .write(&mut self.write, usize::MAX)
            .map_err(|e| End::Protocol(format!("cannot encode a packet: {e}")))?;
        self.stream.write_all(&self.write).await.map_err(End::Io)?;
        self.stream.flush().await.map_err(End::Io)
    }
}

/// The identity a CONNECT asks for.
struct Identity {
    device_id: String,
    module_id: Option<String>,
}

/// Checks a CONNECT against the registry; `Err` is the CONNACK code to refuse with.
fn authorize(
    state: &HubState,
    connect: &mqttbytes::v4::Connect,
) -> Result<(Identity, SasToken), &'static str> {
    let login = connect
        .login
        .as_ref()
        .ok_or("no user name and password (X.509 is not supported)")?;
    let (path, _query) = login
        .username
        .split_once('?')
        .unwrap_or((&login.username, ""));
    let mut parts = path.trim_end_matches('/').split('/');
    let host = parts.next().unwrap_or_default();
    let device_id = parts
        .next()
        .filter(|d| !d.is_empty())
        .ok_or("the user name names no device")?;
    let module_id = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err("the user name has too many segments");
    }
    let same_hub = HostAndPort::parse(host)
        .is_ok_and(|h| h.host().eq_ignore_ascii_case(&state.settings.host_name));
    if !same_hub {
        return Err("the user name names another hub");
    }
    let expected_client = match &module_id {
        Some(module) => format!("{device_id}/{module}"),
        None => device_id.to_owned(),
    };
    if connect.client_id != expected_client {
        return Err("the client id does not match the user name");
    }
    let token: SasToken = login
        .password
        .parse()
        .map_err(|_| "the password is not a SAS token")?;
    state
        .authorize_device(&token, device_id, module_id.as_deref())
        .map_err(|_| "the token does not grant this device")?;
    Ok((
        Identity {
            device_id: device_id.to_owned(),
            module_id,
        },
        token,
    ))
}

/// Serves one connection from CONNECT to close.
pub(crate) async fn run_session<S>(state: Arc<HubState>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut wire = Wire {
        stream,
        read: BytesMut::with_capacity(4096),
        write: BytesMut::with_capacity(4096),
    };
    let connect = match timeout(CONNECT_TIMEOUT, wire.next_packet()).await {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(_)) => {
            tracing::debug!(%peer, "the first packet was not CONNECT");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, reason = ?e, "connection ended before CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    let (identity, token) = match authorize(&state, &connect) {
        Ok(ok) => ok,
        Err(reason) => {
            tracing::info!(%peer, client_id = %connect.client_id, reason, "MQTT connect refused");
            let refuse = ConnAck::new(ConnectReturnCode::NotAuthorized, false);
            let _ = wire.send(Packet::ConnAck(refuse)).await;
            return;
        }
    };
    let device_id = identity.device_id.clone();
    let Some(ticket) = state.open_session(&device_id, connect.clean_session) else {
        let _ = wire
            .send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::NotAuthorized,
                false,
            )))
            .await;
        return;
    };
    if wire
        .send(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            ticket.session_present,
        )))
        .await
        .is_err()
    {
        state.close_session(&device_id, ticket.id, []);
        return;
    }
    tracing::info!(%peer, device = %device_id, module = ?identity.module_id, keep_alive = connect.keep_alive, "MQTT connected");

    let mut session = Session {
        state: state.clone(),
        identity,
        session_id: ticket.id,
        in_flight: HashMap::new(),
        next_pkid: 0,
        c2d_qos: QoS::AtLeastOnce,
    };
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let token_expiry = state.clock.instant_at(token.expiry());
    let end = session
        .run(
            &mut wire,
            &ticket.kick,
            &ticket.wake,
            keep_alive,
            token_expiry,
        )
        .await;
    let in_flight: Vec<LockToken> = session.in_flight.values().copied().collect();
    state.close_session(&device_id, ticket.id, in_flight);
    tracing::info!(%peer, device = %device_id, reason = %end, "MQTT disconnected");
}

struct Session {
    state: Arc<HubState>,
    identity: Identity,
    session_id: u64,
    in_flight: HashMap<u16, LockToken>,
    next_pkid: u16,
    /// The QoS granted to the C2D subscription: 0 means deliveries are not acknowledged and
    /// count as completed once sent (protocol.md §6, inferred).
    c2d_qos: QoS,
}

/// How a session ended, for the log.
enum Outcome {
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
            Outcome::Ended(End::Closed) => f.write_str("connection closed"),
            Outcome::Ended(End::Io(e)) => write!(f, "I/O error: {e}"),
            Outcome::Ended(End::Protocol(why)) => write!(f, "protocol error: {why}"),
            Outcome::TakenOver => {
                f.write_str("replaced by a newer connection, or the device was disabled or deleted")
            }
            Outcome::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            Outcome::TokenExpired => f.write_str("SAS token expired"),
        }
    }
}

impl Session {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        kick: &tokio::sync::Notify,
        wake: &tokio::sync::Notify,
        keep_alive: Option<Duration>,
        token_expiry: Instant,
    ) -> Outcome {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut alive_until = keep_alive.map_or(far, |k| Instant::now() + k);
        if let Err(e) = self.deliver(wire).await {
            return Outcome::Ended(e);
        }
        loop {
            // Handle every complete packet already read.
            loop {
                match wire.buffered_packet() {
                    Ok(Some(packet)) => {
                        if let Some(k) = keep_alive {
                            alive_until = Instant::now() + k;
                        }
                        match self.handle(wire, packet).await {
                            Ok(true) => {}
                            Ok(false) => return Outcome::Disconnect,
                            Err(e) => return Outcome::Ended(e),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Outcome::Ended(e),
                }
            }
            tokio::select! {
                filled = wire.fill() => {
                    if let Err(e) = filled {
                        return Outcome::Ended(e);
                    }
                }
                _ = wake.notified() => {
                    if let Err(e) = self.deliver(wire).await {
                        return Outcome::Ended(e);
                    }
                }
                _ = kick.notified() => return Outcome::TakenOver,
                _ = sleep_until(alive_until) => return Outcome::KeepAliveTimeout,
                _ = sleep_until(token_expiry) => return Outcome::TokenExpired,
            }
        }
    }

    /// Sends queued C2D messages while there is room in flight.
    async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<(), End> {
        let device_id = self.identity.device_id.clone();
        while self.in_flight.len() < MAX_IN_FLIGHT {
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
            let pkid = if self.c2d_qos == QoS::AtMostOnce {
                0
            } else {
                let pkid = self.fresh_pkid();
                self.in_flight.insert(pkid, token);
                pkid
            };
            let publish = Publish {
                dup: false,
                qos: self.c2d_qos,
                retain: false,
                topic,
                pkid,
                payload: message.body().clone(),
            };
            wire.send(Packet::Publish(publish)).await?;
            if pkid == 0 {
                self.state.complete_c2d(&device_id, token);
            }
        }
        Ok(())
    }

    fn fresh_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Handles one packet; `Ok(false)` ends the session cleanly.
    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        packet: Packet,
    ) -> Result<bool, End> {
        let device_id = self.identity.device_id.clone();
        match packet {
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return Err(End::Protocol("QoS 2 is not supported".into()));
                }
                self.on_publish(&publish)?;
                if publish.qos == QoS::AtLeastOnce {
                    wire.send(Packet::PubAck(PubAck::new(publish.pkid))).await?;
                }
            }
            Packet::PubAck(ack) => {
                if let Some(token) = self.in_flight.remove(&ack.pkid) {
                    self.state.complete_c2d(&device_id, token);
                }
                self.deliver(wire).await?;
            }
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for filter in &subscribe.filters {
                    let code = self.on_subscribe(&filter.path, filter.qos);
                    if let SubscribeReasonCode::Success(granted) = code {
                        if filter.path == c2d_subscription(&device_id) {
                            self.c2d_qos = granted;
                        }
                    }
                    codes.push(code);
                }
                wire.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                    .await?;
                self.deliver(wire).await?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                if unsubscribe
                    .topics
                    .iter()
                    .any(|t| *t == c2d_subscription(&device_id))
                {
                    self.state
                        .set_c2d_subscribed(&device_id, self.session_id, false);
                }
                wire.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await?;
            }
            Packet::PingReq => wire.send(Packet::PingResp).await?,
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

    fn on_publish(&self, publish: &Publish) -> Result<(), End> {
        if publish.topic.starts_with("$iothub/") {
            // Twin and method topics are not emulated yet; acknowledge and ignore.
            tracing::debug!(device = %self.identity.device_id, topic = %publish.topic, "ignored $iothub publish");
            return Ok(());
        }
        let (from, message) = parse_telemetry_topic(&publish.topic, publish.payload.clone())
            .map_err(|e| End::Protocol(format!("bad telemetry topic: {e}")))?;
        if from.device_id != self.identity.device_id || from.module_id != self.identity.module_id {
            return Err(End::Protocol("telemetry for another identity".into()));
        }
        tracing::debug!(device = %from.device_id, message_id = ?message.message_id(), "telemetry");
        self.state.publish_telemetry(&from.device_id, message);
        Ok(())
    }

    fn on_subscribe(&self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        let device = &self.identity.device_id;
        let granted = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let own_module = self
            .identity
            .module_id
            .as_ref()
            .map(|m| format!("devices/{device}/modules/{m}/"));
        let allowed = match filter {
            "$iothub/twin/res/#"
            | "$iothub/methods/POST/#"
            | "$iothub/twin/PATCH/properties/desired/#" => true,
            f if self.identity.module_id.is_none() && f == c2d_subscription(device) => {
                self.state.set_c2d_subscribed(device, self.session_id, true);
                true
            }
            f => own_module.as_ref().is_some_and(|prefix| {
                f.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest == "#" || rest == "inputs/#")
            }),
        };
        if allowed {
            SubscribeReasonCode::Success(granted)
        } else {
            tracing::info!(device = %device, filter, "subscription refused");
            SubscribeReasonCode::Failure
        }
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
