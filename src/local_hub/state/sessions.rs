//! One MQTT session slot per identity, and the push path into a connected session.
//!
//! IoT Hub keeps one connection per identity: a newer connection for the same device (or the
//! same module) replaces the older one, as MQTT 3.1.1 section 3.1.4 requires for a client id
//! already connected [MQTT-3.1.4-2]; a device's client id is `{device}` and a module's
//! `{device}/{module}` (Microsoft Learn, "Communicate with an IoT hub using the MQTT
//! protocol"), so a device and each of its modules hold separate connections.
//!
//! Each session gets an outbox when it opens: a bounded channel that any part of the hub pushes
//! [`Outbound`] items into with [`HubState::push`], addressed by identity. Pushing never waits,
//! so it is safe under the state lock. When an outbox is full:
//! - a C2D wake-up is dropped: the session pulls the C2D queue after every item it takes from
//!   the outbox, so the backlog already there leads it to the queue; C2D messages stay queued
//!   until their PUBACK, so none is lost;
//! - any other item is refused (`push` returns `false`) and the session is closed as too slow.
//!   What outlives a connection (the persistent subscription, queued C2D messages, which go
//!   back to the queue as abandoned) is kept with the identity and restored when it reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::local_hub::c2d_queue::LockToken;

use super::{HubState, Identity};

/// Items a session's outbox holds at most before pushes are refused.
pub(crate) const OUTBOX_CAPACITY: usize = 64;

/// Something for a connected session to send.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "read by the HTTPS module API and device twins and methods (the next issues)"
)]
pub(crate) enum Outbound {
    /// The device's C2D queue may have a message for it: pull it with
    /// [`HubState::next_c2d`]. At most one is waiting in an outbox at a time.
    C2dReady,
    /// A PUBLISH to send as is. QoS 1 ones are retransmitted by nobody: they are for
    /// notifications whose sender keeps its own state (desired-property patches, method
    /// requests), not for messages the hub must not lose.
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
    },
}

/// The receiving end of a session's outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    rx: mpsc::Receiver<Outbound>,
    c2d_pending: Arc<AtomicBool>,
}

impl Outbox {
    /// The next item; `None` once the identity's slot let go of the session (its identity was
    /// deleted). Cancel-safe.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await?;
        if item == Outbound::C2dReady {
            self.c2d_pending.store(false, Ordering::Release);
        }
        Some(item)
    }

    /// The next item if one is waiting; `None` when none is (or the outbox is closed, which
    /// the next [`Self::recv`] reports).
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok()?;
        if item == Outbound::C2dReady {
            self.c2d_pending.store(false, Ordering::Release);
        }
        Some(item)
    }
}

/// A session's registration: its id, its outbox, and the notification that closes it.
#[derive(Debug)]
pub(crate) struct SessionTicket {
    pub id: u64,
    pub kick: Arc<Notify>,
    pub outbox: Outbox,
    /// An earlier persistent session (clean session 0) is resumed.
    pub session_present: bool,
}

/// The hub's end of a connected session.
struct Session {
    id: u64,
    kick: Arc<Notify>,
    outbox: mpsc::Sender<Outbound>,
    /// A [`Outbound::C2dReady`] is in the outbox.
    c2d_pending: Arc<AtomicBool>,
}

/// One identity's connection, and what outlives it.
pub(super) struct SessionSlot {
    session: Option<Session>,
    /// A persistent (clean session 0) MQTT session exists from an earlier connection.
    persistent: bool,
    /// The persistent session is subscribed to C2D (devices only).
    pub c2d_subscribed: bool,
    pub connection_state_updated: SystemTime,
    pub last_activity: SystemTime,
}

impl SessionSlot {
    pub fn new(now: SystemTime) -> Self {
        SessionSlot {
            session: None,
            persistent: false,
            c2d_subscribed: false,
            connection_state_updated: now,
            last_activity: now,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// Whether `session_id` is the identity's current connection.
    pub fn is_current(&self, session_id: u64) -> bool {
        self.session.as_ref().is_some_and(|s| s.id == session_id)
    }

    /// The id of the current connection, if any.
    pub fn current_session_id(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// Asks the current connection to close; returns whether there was one.
    pub fn kick(&self) -> bool {
        match &self.session {
            Some(session) => {
                session.kick.notify_one();
                true
            }
            None => false,
        }
    }

    /// Registers a new connection, closing the one it replaces. `clean_session` drops the
    /// earlier session's subscriptions.
    fn open(&mut self, id: u64, clean_session: bool, now: SystemTime) -> SessionTicket {
        self.kick();
        let session_present = !clean_session && self.persistent;
        if clean_session {
            self.c2d_subscribed = false;
        }
        self.persistent = !clean_session;
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let kick = Arc::new(Notify::new());
        let c2d_pending = Arc::new(AtomicBool::new(false));
        self.session = Some(Session {
            id,
            kick: kick.clone(),
            outbox: tx,
            c2d_pending: c2d_pending.clone(),
        });
        self.connection_state_updated = now;
        self.last_activity = now;
        SessionTicket {
            id,
            kick,
            outbox: Outbox { rx, c2d_pending },
            session_present,
        }
    }

    /// Lets go of connection `session_id` if it is still the current one.
    fn close(&mut self, session_id: u64, now: SystemTime) {
        if self.is_current(session_id) {
            self.session = None;
            self.connection_state_updated = now;
            if !self.persistent {
                self.c2d_subscribed = false;
            }
        }
    }

    /// Hands `item` to the connected session without waiting (see the module docs for the
    /// policy when its outbox is full). Returns whether a session took it.
    pub fn push(&self, item: Outbound) -> bool {
        let Some(session) = &self.session else {
            return false;
        };
        if item == Outbound::C2dReady {
            if session.c2d_pending.swap(true, Ordering::AcqRel) {
                return true; // one is already waiting
            }
            return match session.outbox.try_send(item) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    // The session pulls the queue after each item of its backlog.
                    session.c2d_pending.store(false, Ordering::Release);
                    true
                }
                Err(TrySendError::Closed(_)) => {
                    session.c2d_pending.store(false, Ordering::Release);
                    false
                }
            };
        }
        match session.outbox.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    capacity = OUTBOX_CAPACITY,
                    "closing a session whose outbox is full"
                );
                session.kick.notify_one();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

impl HubState {
    /// Registers a new connection for an identity, closing the one it replaces (IoT Hub keeps
    /// one connection per identity; a device's and its modules' are separate). `None` if the
    /// identity is not registered.
    pub fn open_session(&self, identity: &Identity, clean_session: bool) -> Option<SessionTicket> {
        let now = self.clock.now();
        let id = self.fresh_id();
        let mut inner = self.lock();
        let slot = inner.slot_mut(identity)?;
        if slot.is_connected() {
            tracing::info!(%identity, "a new connection replaces the old one");
        }
        let ticket = slot.open(id, clean_session, now);
        if !ticket.session_present {
            inner.forget_feature_subscriptions(identity);
        }
        drop(inner);
        // A resumed session may bring its method subscription back without a SUBSCRIBE.
        self.method_subscribers_changed.notify_waiters();
        Some(ticket)
    }

    /// A connection ended: its unacknowledged C2D deliveries go back to the device's queue
    /// (counted as abandoned), and the identity shows as disconnected unless a newer
    /// connection took over.
    pub fn close_session(
        &self,
        identity: &Identity,
        session_id: u64,
        in_flight: impl IntoIterator<Item = LockToken>,
    ) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(device) = inner.devices.get_mut(&identity.device_id) {
            for token in in_flight {
                device.queue.abandon(token);
            }
            self.persist_queue(&inner, &identity.device_id);
        }
        if let Some(slot) = inner.slot_mut(identity) {
            slot.close(session_id, now);
        }
        inner.methods.session_closed(identity, session_id);
        if let Some(device) = inner.devices.get(&identity.device_id) {
            // Abandoned messages are deliverable again, to a newer connection if any.
            device.wake_c2d();
        }
    }

    /// Hands `item` to the identity's connected session, without waiting. Returns whether a
    /// session took it: `false` when the identity is unknown or not connected, or when its
    /// outbox is full (the session is then closed as too slow; see the module docs).
    #[allow(
        dead_code,
        reason = "read by the HTTPS module API and device twins and methods (the next issues)"
    )]
    pub fn push(&self, identity: &Identity, item: Outbound) -> bool {
        self.lock()
            .slot(identity)
            .is_some_and(|slot| slot.push(item))
    }

    /// Closes the identity's current connection; returns whether it had one.
    pub fn disconnect(&self, identity: &Identity) -> bool {
        self.lock().slot(identity).is_some_and(SessionSlot::kick)
    }

    /// Closes the device's current connection (not its modules'); returns whether it had one.
    pub fn disconnect_device(&self, device_id: &str) -> bool {
        self.disconnect(&Identity::device(device_id))
    }

    /// Whether the identity has a connection now.
    pub fn identity_connected(&self, identity: &Identity) -> bool {
        self.lock()
            .slot(identity)
            .is_some_and(SessionSlot::is_connected)
    }

    /// Whether the device has a connection now.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.identity_connected(&Identity::device(device_id))
    }

    /// Closes every connection: devices', modules' and AMQP ones (at shutdown).
    pub fn kick_all(&self) {
        self.stopping.send_replace(true);
        let inner = self.lock();
        for device in inner.devices.values() {
            device.slot.kick();
            for module in device.modules.values() {
                module.slot.kick();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    fn publish(n: usize) -> Outbound {
        Outbound::Publish {
            topic: format!("t/{n}"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
        }
    }

    #[test]
    fn a_slot_without_a_session_takes_nothing() {
        let slot = SessionSlot::new(at(0));
        assert!(!slot.push(Outbound::C2dReady));
        assert!(!slot.push(publish(0)));
        assert!(!slot.kick());
    }

    #[tokio::test]
    async fn c2d_wake_ups_coalesce_into_one() {
        let mut slot = SessionSlot::new(at(0));
        let mut ticket = slot.open(1, true, at(1));
        assert!(slot.push(Outbound::C2dReady));
        assert!(slot.push(Outbound::C2dReady));
        assert!(slot.push(publish(1)));
        assert_eq!(ticket.outbox.recv().await, Some(Outbound::C2dReady));
        assert_eq!(ticket.outbox.recv().await, Some(publish(1)));
        // Taken out, so the next wake-up is queued again.
        assert!(slot.push(Outbound::C2dReady));
        assert_eq!(ticket.outbox.recv().await, Some(Outbound::C2dReady));
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_a_publish_and_closes_the_session() {
        let mut slot = SessionSlot::new(at(0));
        let ticket = slot.open(1, true, at(1));
        for n in 0..OUTBOX_CAPACITY {
            assert!(slot.push(publish(n)));
        }
        assert!(
            slot.push(Outbound::C2dReady),
            "a wake-up is never refused: the backlog leads to the queue"
        );
        assert!(!slot.push(publish(OUTBOX_CAPACITY)));
        // The session was told to close.
        tokio::time::timeout(std::time::Duration::from_secs(1), ticket.kick.notified())
            .await
            .expect("the slow session is kicked");
    }

    #[tokio::test]
    async fn a_newer_session_replaces_the_older_and_keeps_a_persistent_subscription() {
        let mut slot = SessionSlot::new(at(0));
        let first = slot.open(1, false, at(1));
        assert!(!first.session_present);
        slot.c2d_subscribed = true;
        let second = slot.open(2, false, at(2));
        assert!(second.session_present);
        assert!(slot.c2d_subscribed);
        tokio::time::timeout(std::time::Duration::from_secs(1), first.kick.notified())
            .await
            .expect("the older session is kicked");
        slot.close(1, at(3));
        assert!(slot.is_current(2), "closing the older one leaves the newer");
        slot.close(2, at(4));
        assert!(!slot.is_connected());
        assert!(
            slot.c2d_subscribed,
            "clean session 0 keeps the subscription"
        );
        let _third = slot.open(3, true, at(5));
        assert!(!slot.c2d_subscribed, "clean session 1 drops it");
    }
}
