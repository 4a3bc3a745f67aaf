//! The task that owns the MQTT connection: one per [`crate::device::DeviceClient`].
//!
//! It drives rumqttc's event loop, turns PUBLISHes on the C2D topic into messages for the
//! application, sends PUBACKs when the application (or auto mode) says so, sends telemetry and
//! resolves each send on its PUBACK, renews the SAS token by a planned reconnect, and reconnects
//! with backoff after a failure. Acknowledgements are tied to the connection ("epoch") that
//! delivered the message: a PUBACK must never go out on a later connection, where the same
//! packet id can mean another message.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, Outgoing,
    PubAck, QoS, Request, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::auth::{IssuedToken, TokenSource};
use crate::device::state::{CloseReason, ConnectionState};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::protocol::{c2d_subscription, parse_c2d_topic};
use crate::retry::RetryPolicy;

/// A received message with the connection it came on.
pub(crate) struct Delivered {
    pub message: Message,
    pub epoch: u64,
    pub pkid: u16,
}

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
        done: oneshot::Sender<Result<()>>,
    },
    /// Disconnect cleanly and stop.
    Close { done: oneshot::Sender<()> },
}

/// Everything the task needs besides the event loop.
pub(crate) struct Task {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
    pub tokens: TokenSource,
    pub username: String,
    pub device_id: String,
    pub retry: RetryPolicy,
    pub commands: mpsc::Receiver<Command>,
    pub incoming: mpsc::Sender<Delivered>,
    pub state: watch::Sender<ConnectionState>,
    pub live_epoch: Arc<AtomicU64>,
}

fn transport_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Transport, detail)
}

fn is_auth_refusal(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
        )
    )
}

/// A description of a connection error without credentials (rumqttc's errors carry none).
fn describe(error: &ConnectionError) -> String {
    error.to_string()
}

fn to_instant(at: SystemTime) -> Instant {
    Instant::now()
        + at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
}

/// Telemetry sends awaiting their PUBACK.
#[derive(Default)]
struct Sends {
    /// Queued in rumqttc, packet id not yet known (rumqttc assigns ids in queue order).
    unassigned: VecDeque<oneshot::Sender<Result<()>>>,
    by_pkid: HashMap<u16, oneshot::Sender<Result<()>>>,
}

impl Sends {
    fn fail_all(&mut self, why: &str) {
        for done in self
            .unassigned
            .drain(..)
            .chain(self.by_pkid.drain().map(|(_, d)| d))
        {
            let _ = done.send(Err(transport_error(why.to_owned())));
        }
    }
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
    fn set_credentials(&mut self, issued: &IssuedToken) {
        self.eventloop
            .mqtt_options
            .set_credentials(self.username.clone(), issued.token.to_string());
    }

    /// Queues a PUBACK. It goes through the request channel: rumqttc's `pending` queue, meant
    /// for retransmissions, waits a timer tick (about 1 ms) before each request it sends,
    /// which caps acknowledgements near 1,000 a second (measured in `benches/device.rs`).
    fn puback(&mut self, pkid: u16) {
        let mut publish = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
        publish.pkid = pkid;
        if self.client.try_ack(&publish).is_err() {
            self.eventloop
                .pending
                .push_back(Request::PubAck(PubAck::new(pkid)));
        }
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
            let issued = match self.tokens.token() {
                Ok(issued) => issued,
                Err(e) => {
                    tracing::warn!(error = %e, "no usable SAS token");
                    self.stop(CloseReason::Unauthorized, &mut sends, ready.take(), Some(e));
                    return;
                }
            };
            self.set_credentials(&issued);
            renew_at = issued.renew_at.map(to_instant);
            warn_at = match issued.renew_at {
                Some(_) => None,
                None => Some(to_instant(
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
            };
            let session_present = match self.establish().await {
                Ok(present) => present,
                Err(e) if is_auth_refusal(&e) => {
                    tracing::warn!("the hub refused the credentials");
                    let err = Error::new(
                        ErrorKind::Unauthorized,
                        "the hub refused the device's credentials (CONNACK not authorized)",
                    );
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
                    if let Some(ready) = ready.take() {
                        let err = transport_error(format!("cannot connect to the hub: {reason}"));
                        let _ = ready.send(Err(err));
                        self.state
                            .send_replace(ConnectionState::Closed(CloseReason::RetriesExhausted));
                        return;
                    }
                    attempt += 1;
                    if self.retry.max_attempts.is_some_and(|max| attempt > max) {
                        self.stop(CloseReason::RetriesExhausted, &mut sends, None, None);
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
            let first = ready.is_some();
            let mut awaiting_suback = first || !session_present;
            if awaiting_suback {
                let filter = c2d_subscription(&self.device_id);
                if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "cannot queue the C2D subscription");
                }
            } else {
                self.state.send_replace(ConnectionState::Connected);
            }
            tracing::info!(device = %self.device_id, session_present, "connected");
            let step = loop {
                let renew =
                    renew_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
                let warn =
                    warn_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
                let step = tokio::select! {
                    event = self.eventloop.poll() => match event {
                        Ok(event) => self.on_event(event, epoch, &mut sends, &mut awaiting_suback, &mut ready).await,
                        Err(e) => Step::Reconnect { planned: false, reason: describe(&e) },
                    },
                    command = self.commands.recv() => self.on_command(command, epoch, &mut sends).await,
                    _ = sleep_until(renew) => Step::Reconnect { planned: true, reason: "SAS token renewal".into() },
                    _ = sleep_until(warn) => {
                        warn_at = None;
                        self.state.send_replace(ConnectionState::TokenExpiring { at: issued.token.expiry() });
                        Step::Continue
                    }
                };
                match step {
                    Step::Continue => continue,
                    other => break other,
                }
            };
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
            tokio::select! {
                _ = sleep_until(until) => return None,
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
        sends.fail_all("the client stopped before the hub acknowledged the message");
        if let Some(ready) = ready {
            let _ = ready.send(Err(
                error.unwrap_or_else(|| transport_error("the client stopped"))
            ));
        }
        tracing::info!(device = %self.device_id, ?reason, "client stopped");
        self.state.send_replace(ConnectionState::Closed(reason));
    }

    async fn on_event(
        &mut self,
        event: Event,
        epoch: u64,
        sends: &mut Sends,
        awaiting_suback: &mut bool,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Step {
        match event {
            Event::Incoming(Incoming::Publish(publish)) => {
                let message = match parse_c2d_topic(&publish.topic, publish.payload.clone()) {
                    Ok((device, message)) if device == self.device_id => message,
                    Ok(_) | Err(_) if !publish.topic.starts_with("devices/") => {
                        // Not a C2D message (twin, methods): nothing here subscribes to them.
                        self.puback(publish.pkid);
                        return Step::Continue;
                    }
                    Ok(_) => {
                        self.puback(publish.pkid);
                        return Step::Continue;
                    }
                    Err(e) => {
                        // Keep the body rather than lose the message over its properties.
                        tracing::error!(error = %e, "a C2D message's properties could not be decoded; delivering its body alone");
                        Message::new(publish.payload.clone())
                    }
                };
                let delivered = Delivered {
                    message,
                    epoch,
                    pkid: publish.pkid,
                };
                if self.incoming.send(delivered).await.is_err() {
                    return Step::Stop(CloseReason::ClosedByApplication);
                }
                Step::Continue
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(done) = sends.by_pkid.remove(&ack.pkid) {
                    let _ = done.send(Ok(()));
                }
                Step::Continue
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if !sends.by_pkid.contains_key(&pkid) {
                    if let Some(done) = sends.unassigned.pop_front() {
                        sends.by_pkid.insert(pkid, done);
                    }
                }
                Step::Continue
            }
            Event::Incoming(Incoming::SubAck(ack)) if *awaiting_suback => {
                *awaiting_suback = false;
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    let err = Error::new(
                        ErrorKind::Unauthorized,
                        "the hub refused the cloud-to-device subscription",
                    );
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(err));
                    }
                    return Step::Stop(CloseReason::Unauthorized);
                }
                self.state.send_replace(ConnectionState::Connected);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
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

    async fn on_command(
        &mut self,
        command: Option<Command>,
        epoch: u64,
        sends: &mut Sends,
    ) -> Step {
        match command {
            None => {
                // Every handle is gone.
                let _ = self.client.try_disconnect();
                self.flush_disconnect().await;
                Step::Stop(CloseReason::ClosedByApplication)
            }
            Some(Command::Ack {
                epoch: delivered_on,
                pkid,
                done,
            }) => {
                let live = delivered_on == epoch && self.live_epoch.load(Ordering::SeqCst) == epoch;
                let result = if live {
                    self.puback(pkid);
                    Ok(())
                } else {
                    Err(transport_error(
                        "the connection that delivered this message was lost; the hub will deliver it again",
                    ))
                };
                if let Some(done) = done {
                    let _ = done.send(result);
                }
                Step::Continue
            }
            Some(Command::Send {
                topic,
                payload,
                done,
            }) => {
                match self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                {
                    Ok(()) => sends.unassigned.push_back(done),
                    Err(e) => {
                        let _ = done.send(Err(transport_error(format!(
                            "cannot queue the message: {e}"
                        ))));
                    }
                }
                Step::Continue
            }
            Some(Command::Close { done }) => {
                let _ = self.client.try_disconnect();
                self.flush_disconnect().await;
                let _ = done.send(());
                Step::Stop(CloseReason::ClosedByApplication)
            }
        }
    }

    /// Lets the event loop write the DISCONNECT (bounded in time).
    async fn flush_disconnect(&mut self) {
        if self.live_epoch.load(Ordering::SeqCst) == 0 {
            return;
        }
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
