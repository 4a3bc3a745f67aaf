//! The task that owns the MQTT connection: one per [`crate::device::DeviceClient`].
//!
//! It drives rumqttc's event loop and routes every incoming PUBLISH to its feature's channel
//! ([`crate::device::inbound::route`]), sends PUBACKs when the application (or auto mode) says
//! so, sends telemetry and resolves each send on its PUBACK, keeps the subscriptions the
//! application asked for (restored after a reconnect without a session), matches `$rid`
//! responses to their requests, renews the SAS token by a planned reconnect (after the
//! application's pending acknowledgements, within [`RENEWAL_ACK_WAIT`]), and reconnects
//! with backoff after a failure. Acknowledgements are tied to the connection ("epoch") that
//! delivered the message: a PUBACK must never go out on a later connection, where the same
//! packet id can mean another message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, Incoming, Outgoing, Packet, PubAck,
    QoS, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::auth::{IssuedToken, TokenSource};
use crate::device::inbound::{FeatureSink, Handed, Route, Sinks, route};
use crate::device::pending_requests::{PendingRequests, Responder};
use crate::device::sends::{SendDone, Sends};
use crate::device::state::{CloseReason, ConnectionState};
use crate::device::subscriptions::{Subscriptions, Waiter};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{TWIN_RESPONSE_SUBSCRIPTION, TwinRequestKind, twin_request_topic};
use crate::retry::RetryPolicy;

pub(crate) mod acks;
mod commands;
mod failures;
pub(crate) mod receipts;

pub(crate) use acks::PacketIds;
pub(crate) use failures::transport_error;
use failures::{describe, is_auth_refusal};

/// How far away "never" is for the timers of the select loop.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// How long a planned reconnect (SAS token renewal) waits for the application to acknowledge
/// the messages the current connection delivered (never past the token's expiry). Their
/// PUBACKs can go out on this connection only; a message still unacknowledged then is
/// delivered again on the next connection, and its `complete()` returns an error.
pub(crate) const RENEWAL_ACK_WAIT: Duration = Duration::from_secs(5);

/// What the handle asks of the task.
pub(crate) enum Command {
    /// PUBACK `pkid` if the connection `epoch` is still the live one.
    Ack {
        epoch: u64,
        pkid: u16,
        done: Option<oneshot::Sender<Result<()>>>,
    },
    /// Publish telemetry at QoS 1; `done` resolves on the PUBACK.
    Send {
        topic: String,
        payload: Bytes,
        done: SendDone,
    },
    /// Subscribe to `filter` (kept across reconnects) and install the feature's channel at
    /// once; `done` resolves on the SUBACK.
    Subscribe {
        filter: String,
        qos: QoS,
        sink: Option<FeatureSink>,
        done: Waiter,
    },
    /// Publish a twin request at QoS 0 with a fresh `$rid`; `done` resolves with the response
    /// carrying it, [`ErrorKind::Timeout`] after `timeout`, or a transport error when the
    /// connection is lost once it is sent.
    Request {
        kind: TwinRequestKind,
        payload: Bytes,
        timeout: Duration,
        done: Responder,
    },
    /// Disconnect cleanly and stop.
    Close { done: oneshot::Sender<()> },
}

/// Everything the task needs besides the event loop.
pub(crate) struct Task {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
    /// The SAS tokens; `None` for a device that authenticates with its TLS client
    /// certificate (no password, nothing to renew).
    pub tokens: Option<TokenSource>,
    pub username: String,
    /// The hub's `host:port` as dialled, for error texts.
    pub endpoint: String,
    pub device_id: String,
    pub module_id: Option<String>,
    pub retry: RetryPolicy,
    pub commands: mpsc::Receiver<Command>,
    /// The feature channels; C2D (devices only) is there from the start.
    pub sinks: Sinks,
    /// The wanted subscriptions; C2D (devices only) is there from the start.
    pub subscriptions: Subscriptions,
    /// The filter whose refusal stops the client (a device's C2D filter).
    pub essential_filter: Option<String>,
    pub requests: PendingRequests,
    pub state: watch::Sender<ConnectionState>,
    pub live_epoch: Arc<AtomicU64>,
    /// Packet ids of the QoS 1 messages the live connection handed to the application and
    /// that it has not acknowledged yet.
    pub awaiting_ack: PacketIds,
    /// PUBACKs due on the live connection, written together (`connection/acks.rs`).
    pub acks_due: acks::DueAcks,
    /// The application's count of C2D deliveries taken, in automatic mode only
    /// (`connection/receipts.rs`).
    pub receipts: Option<Arc<receipts::Receipts>>,
    /// The C2D deliveries handed to the application in automatic mode, not yet resolved.
    pub handed_over: receipts::HandedOver,
}

/// The QoS a feature's filter is subscribed at: 1 for messages, 0 for twin and methods, as
/// azure-iot-sdk-node `mqtt.ts` / `mqtt_twin_client.ts` and azure-iot-sdk-c
/// `iothubtransport_mqtt_common.c` do.
pub(crate) fn filter_qos(filter: &str) -> QoS {
    if filter.starts_with("$iothub/") {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn to_instant(at: SystemTime) -> Instant {
    Instant::now()
        + at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
}

enum Step {
    /// Keep going on this connection.
    Continue,
    /// The connection is gone; reconnect (planned: no backoff, no state change).
    Reconnect { planned: bool, reason: String },
    /// Stop for good.
    Stop(CloseReason),
}

impl Task {
    /// The user name and the token; with a client certificate the user name alone (rumqttc
    /// sends no password field for an empty one).
    fn set_credentials(&mut self, issued: Option<&IssuedToken>) {
        let password = issued.map(|i| i.token.to_string()).unwrap_or_default();
        self.eventloop
            .mqtt_options
            .set_credentials(self.username.clone(), password);
    }

    /// Polls until the CONNACK of a new connection; `Ok(session_present)`.
    async fn establish(&mut self) -> std::result::Result<bool, ConnectionError> {
        loop {
            if let Event::Incoming(Incoming::ConnAck(ConnAck {
                session_present, ..
            })) = self.eventloop.poll().await?
            {
                return Ok(session_present);
            }
        }
    }

    /// Runs the connection until the client stops. `ready` learns the outcome of the first
    /// connection (CONNACK and C2D SUBACK).
    pub async fn run(mut self, mut ready: Option<oneshot::Sender<Result<()>>>) {
        let mut epoch = 0u64;
        let mut attempt = 0u32;
        let mut sends = Sends::default();
        let mut renew_at: Option<Instant>;
        let mut warn_at: Option<Instant>;
        let mut planned = false;
        loop {
            // A fresh token for every connection, so a reconnect never presents a stale one.
            let issued = match self.tokens.as_ref().map(TokenSource::token).transpose() {
                Ok(issued) => issued,
                Err(e) => {
                    tracing::warn!(error = %e, "no usable SAS token");
                    self.stop(CloseReason::Unauthorized, &mut sends, ready.take(), Some(e));
                    return;
                }
            };
            self.set_credentials(issued.as_ref());
            renew_at = issued.as_ref().and_then(|i| i.renew_at).map(to_instant);
            warn_at = match &issued {
                Some(issued) if issued.renew_at.is_none() => Some(to_instant(
                    issued.token.expiry()
                        - Duration::from_secs(300).min(
                            issued
                                .token
                                .expiry()
                                .duration_since(SystemTime::now())
                                .unwrap_or_default()
                                / 5,
                        ),
                )),
                _ => None,
            };
            let session_present = match self.establish().await {
                Ok(present) => present,
                Err(e) if is_auth_refusal(&e) => {
                    tracing::warn!("the hub refused the credentials");
                    let err = Error::new(ErrorKind::Unauthorized, self.refusal_text());
                    self.stop(
                        CloseReason::Unauthorized,
                        &mut sends,
                        ready.take(),
                        Some(err),
                    );
                    return;
                }
                Err(e) => {
                    let reason = describe(&e);
                    let reason =
                        format!("cannot connect to the hub at {}: {reason}", self.endpoint);
                    if let Some(ready) = ready.take() {
                        let err = transport_error(reason.clone());
                        let _ = ready.send(Err(err));
                        self.state.send_replace(ConnectionState::Closed(
                            CloseReason::RetriesExhausted {
                                attempts: 1,
                                last_error: reason,
                            },
                        ));
                        return;
                    }
                    attempt += 1;
                    tracing::warn!(device = %self.device_id, attempt, %reason, "connection attempt failed");
                    if self.retry.max_attempts.is_some_and(|max| attempt > max) {
                        let exhausted = CloseReason::RetriesExhausted {
                            attempts: attempt - 1,
                            last_error: reason,
                        };
                        self.stop(exhausted, &mut sends, None, None);
                        return;
                    }
                    if !planned || attempt > 1 {
                        self.state
                            .send_replace(ConnectionState::Disconnected { reason });
                    }
                    let delay = self.retry.delay(attempt);
                    self.state
                        .send_replace(ConnectionState::Reconnecting { attempt });
                    if let Some(reason) = self.wait_backoff(delay, &mut sends, epoch).await {
                        self.stop(reason, &mut sends, None, None);
                        return;
                    }
                    continue;
                }
            };
            attempt = 0;
            epoch += 1;
            self.live_epoch.store(epoch, Ordering::SeqCst);
            if !session_present {
                // rumqttc dropped what it had not yet sent: those sends did not happen.
                sends.fail_all("the connection was lost before the hub acknowledged the message");
            }
            self.purge_stale_requests();
            self.awaiting_ack.clear();
            self.acks_due.clear();
            // Set when the token is due for renewal while messages await their ack.
            let mut ack_wait: Option<Instant> = None;
            self.subscriptions.on_connected(session_present);
            self.flush_subscriptions();
            // Until every wanted filter is granted again, the connection is not "Connected".
            let mut restoring = true;
            self.check_restored(&mut restoring, &mut ready);
            self.flush_requests();
            tracing::info!(device = %self.device_id, module = ?self.module_id, session_present, "connected");
            // One timer for the connection's deadlines (token renewal, the renewal's wait for
            // acknowledgements, the expiry warning, twin request timeouts), moved only when the
            // earliest of them changes: no timer is registered and dropped per event.
            let far = Instant::now() + FAR;
            let receipts = self.receipts.clone();
            let timer = tokio::time::sleep_until(far);
            tokio::pin!(timer);
            let step = loop {
                let renew = if ack_wait.is_none() {
                    renew_at.unwrap_or(far)
                } else {
                    far
                };
                let warn = warn_at.unwrap_or(far);
                let deadline = self.requests.next_deadline().unwrap_or(far);
                let ack_wait_end = ack_wait.unwrap_or(far);
                let wake = renew.min(warn).min(deadline).min(ack_wait_end);
                if timer.deadline() != wake {
                    timer.as_mut().reset(wake);
                }
                let step = tokio::select! {
                    event = self.eventloop.poll() => match event {
                        Ok(event) => self.on_event(event, epoch, &mut sends, &mut restoring, &mut ready).await,
                        Err(e) => Step::Reconnect { planned: false, reason: describe(&e) },
                    },
                    command = self.commands.recv() => self.on_command(command, epoch, &mut sends).await,
                    // The application took C2D messages: their PUBACKs are due.
                    _ = async {
                        match &receipts {
                            Some(receipts) => receipts.taken_more().await,
                            None => std::future::pending().await,
                        }
                    } => Step::Continue,
                    _ = &mut timer => {
                        let now = Instant::now();
                        if renew <= now {
                            if self.awaiting_ack.is_empty() {
                                Step::Reconnect { planned: true, reason: "SAS token renewal".into() }
                            } else {
                                let expiry = issued.as_ref().map_or(FAR, |i| {
                                    i.token.expiry().duration_since(SystemTime::now()).unwrap_or_default()
                                });
                                ack_wait = Some(now + RENEWAL_ACK_WAIT.min(expiry));
                                Step::Continue
                            }
                        } else if ack_wait_end <= now {
                            Step::Reconnect { planned: true, reason: "SAS token renewal".into() }
                        } else if warn <= now {
                            warn_at = None;
                            if let Some(issued) = &issued {
                                self.state.send_replace(ConnectionState::TokenExpiring { at: issued.token.expiry() });
                            }
                            Step::Continue
                        } else {
                            self.requests.expire(now);
                            Step::Continue
                        }
                    }
                };
                let step = self
                    .handle_ready(step, epoch, &mut sends, &mut restoring, &mut ready)
                    .await;
                match step {
                    Step::Continue if ack_wait.is_some() && self.awaiting_ack.is_empty() => {
                        break Step::Reconnect {
                            planned: true,
                            reason: "SAS token renewal".into(),
                        };
                    }
                    Step::Continue => {
                        if let Err(reason) = self.write_acks_if_idle().await {
                            break Step::Reconnect {
                                planned: false,
                                reason,
                            };
                        }
                    }
                    other => break other,
                }
            };
            if matches!(step, Step::Reconnect { planned: true, .. }) {
                // A clean DISCONNECT after the PUBACKs already queued, so the hub takes them
                // before the next connection.
                let _ = self.client.try_disconnect();
                self.flush_disconnect().await;
            }
            self.subscriptions.on_disconnected();
            self.requests.on_disconnected();
            self.live_epoch.store(0, Ordering::SeqCst);
            match step {
                Step::Stop(reason) => {
                    self.stop(reason, &mut sends, ready.take(), None);
                    return;
                }
                Step::Reconnect {
                    planned: is_planned,
                    reason,
                } => {
                    tracing::info!(device = %self.device_id, %reason, "reconnecting");
                    planned = is_planned;
                    if is_planned {
                        // Drop the connection; rumqttc keeps unacknowledged sends for the next.
                        self.eventloop.clean();
                    } else {
                        self.state
                            .send_replace(ConnectionState::Disconnected { reason });
                        attempt += 1;
                        let delay = self.retry.delay(attempt);
                        self.state
                            .send_replace(ConnectionState::Reconnecting { attempt });
                        if let Some(reason) = self.wait_backoff(delay, &mut sends, epoch).await {
                            self.stop(reason, &mut sends, None, None);
                            return;
                        }
                    }
                }
                Step::Continue => unreachable!("handled in the loop"),
            }
        }
    }

    /// Waits `delay` while still taking commands; `Some` when the client must stop.
    async fn wait_backoff(
        &mut self,
        delay: Duration,
        sends: &mut Sends,
        epoch: u64,
    ) -> Option<CloseReason> {
        let until = Instant::now() + delay;
        loop {
            let deadline = self
                .requests
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + FAR);
            tokio::select! {
                _ = sleep_until(until) => return None,
                _ = sleep_until(deadline) => {
                    self.requests.expire(Instant::now());
                }
                command = self.commands.recv() => {
                    if let Step::Stop(reason) = self.on_command(command, epoch, sends).await {
                        return Some(reason);
                    }
                }
            }
        }
    }

    fn stop(
        &mut self,
        reason: CloseReason,
        sends: &mut Sends,
        ready: Option<oneshot::Sender<Result<()>>>,
        error: Option<Error>,
    ) {
        self.live_epoch.store(0, Ordering::SeqCst);
        // The state first, so that a caller woken by the failures below reads why.
        self.state
            .send_replace(ConnectionState::Closed(reason.clone()));
        sends.fail_all("the client stopped before the hub acknowledged the message");
        self.subscriptions
            .fail_all("the client stopped before the hub granted the subscription");
        self.requests
            .fail_all("the client stopped before the hub answered the request");
        if let Some(ready) = ready {
            let _ = ready.send(Err(
                error.unwrap_or_else(|| transport_error("the client stopped"))
            ));
        }
        tracing::info!(device = %self.device_id, ?reason, "client stopped");
    }

    async fn on_event(
        &mut self,
        event: Event,
        epoch: u64,
        sends: &mut Sends,
        restoring: &mut bool,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Step {
        match event {
            Event::Incoming(Incoming::Publish(publish)) => {
                let pkid = publish.pkid;
                let needs_ack = publish.qos != QoS::AtMostOnce;
                let routed = route(
                    &publish.topic,
                    publish.payload,
                    &self.device_id,
                    self.module_id.as_deref(),
                );
                // Automatic mode counts the C2D deliveries the application takes.
                let counted = self.receipts.is_some() && matches!(routed, Route::CloudToDevice(_));
                // Messages are acknowledged by the application (or auto mode); everything
                // else as soon as it is handed over.
                match self
                    .sinks
                    .hand_over(routed, epoch, pkid, &mut self.requests)
                    .await
                {
                    Handed::Held => {
                        if counted {
                            self.handed_over.push(epoch, pkid, needs_ack);
                        }
                        if needs_ack {
                            self.awaiting_ack.insert(pkid);
                        }
                        return Step::Continue;
                    }
                    Handed::C2dClosed => return Step::Stop(CloseReason::ClosedByApplication),
                    Handed::AckNow => {}
                }
                if needs_ack {
                    self.puback(pkid);
                }
                Step::Continue
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                sends.on_puback(ack.pkid);
                Step::Continue
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                sends.on_outgoing(pkid);
                Step::Continue
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                self.subscriptions.on_outgoing(pkid);
                Step::Continue
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                let granted: Vec<bool> = ack
                    .return_codes
                    .iter()
                    .map(|c| !matches!(c, SubscribeReasonCode::Failure))
                    .collect();
                let outcome = self.subscriptions.on_suback(ack.pkid, &granted);
                for filter in &outcome.refused {
                    tracing::warn!(%filter, "the hub refused a subscription");
                    if self.essential_filter.as_ref() == Some(filter) {
                        let err = Error::new(
                            ErrorKind::Unauthorized,
                            "the hub refused the cloud-to-device subscription",
                        );
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(err));
                        }
                        return Step::Stop(CloseReason::Unauthorized);
                    }
                    self.forget_feature(filter);
                }
                self.check_restored(restoring, ready);
                if outcome
                    .granted
                    .iter()
                    .any(|f| f == TWIN_RESPONSE_SUBSCRIPTION)
                {
                    self.flush_requests();
                }
                Step::Continue
            }
            Event::Incoming(Incoming::Disconnect) => Step::Reconnect {
                planned: false,
                reason: "the hub sent DISCONNECT".into(),
            },
            _ => Step::Continue,
        }
    }

    /// Whether a connection is up (between CONNACK and its loss).
    fn is_live(&self) -> bool {
        self.live_epoch.load(Ordering::SeqCst) != 0
    }

    /// Lets the event loop write the DISCONNECT (bounded in time).
    async fn flush_disconnect(&mut self) {
        if self.live_epoch.load(Ordering::SeqCst) == 0 {
            return;
        }
        // The PUBACKs due go before the DISCONNECT, those of the messages the application
        // took last included.
        self.resolve_receipts();
        let _ = self.write_acks().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}
