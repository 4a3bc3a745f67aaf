//! All of the hub's mutable state behind one type: the identity registry, the policies, each
//! device's C2D queue and MQTT session slot, and the feedback queue.
//!
//! Listeners hold an `Arc<HubState>` and call its methods; every method takes the lock for a
//! short, non-blocking step, so no `.await` ever happens while it is held. Keeping state in one
//! place leaves room for persistence later.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast, watch};

use crate::auth::{
    AccessDenied, AccessPolicy, Permission, SasKey, SasToken, authorize_device, authorize_service,
};
use crate::error::{Error, ErrorKind};
use crate::local_hub::c2d_queue::{C2dLimits, C2dQueue, EnqueueRefusal, LockToken, Settled};
use crate::local_hub::clock::Clock;
use crate::local_hub::feedback_queue::{
    FeedbackDelivery, FeedbackLimits, FeedbackLock, FeedbackQueue,
};
use crate::message::Message;
use crate::protocol::{FeedbackRecord, expiry_time};

/// A device's status in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Enabled,
    Disabled,
}

/// A device as the registry keeps it.
#[derive(Clone, Debug)]
pub(crate) struct DeviceRecord {
    pub device_id: String,
    pub generation_id: String,
    pub etag: String,
    pub status: DeviceStatus,
    pub status_reason: Option<String>,
    pub primary_key: SasKey,
    pub secondary_key: SasKey,
    pub iot_edge: bool,
    pub connected: bool,
    pub connection_state_updated: SystemTime,
    pub status_updated: SystemTime,
    pub last_activity: SystemTime,
    pub c2d_count: usize,
}

/// What a registry write asks for.
#[derive(Clone, Debug)]
pub(crate) struct DeviceSpec {
    pub device_id: String,
    pub status: DeviceStatus,
    pub status_reason: Option<String>,
    /// `None` (or empty) keys are generated.
    pub primary_key: Option<SasKey>,
    pub secondary_key: Option<SasKey>,
    pub iot_edge: bool,
}

/// Registry failures, mapped to IoT Hub's error codes by the HTTPS layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RegistryError {
    DeviceNotFound,
    DeviceAlreadyExists,
    PreconditionFailed,
}

struct Session {
    id: u64,
    kick: Arc<Notify>,
}

struct Device {
    record: DeviceRecord,
    queue: C2dQueue,
    /// Woken when the queue has something to deliver.
    wake: Arc<Notify>,
    session: Option<Session>,
    /// A persistent (clean session 0) MQTT session is subscribed to C2D.
    c2d_subscribed: bool,
    /// A persistent MQTT session exists from an earlier connection.
    session_present: bool,
}

struct Inner {
    devices: BTreeMap<String, Device>,
    policies: Vec<AccessPolicy>,
    feedback: FeedbackQueue,
}

/// Hub-wide settings.
#[derive(Clone, Debug)]
pub(crate) struct HubSettings {
    pub host_name: String,
    pub c2d: C2dLimits,
    pub feedback_flush_interval: Duration,
    pub feedback: FeedbackLimits,
}

/// A session's registration: its id, and the notifications it waits on.
pub(crate) struct SessionTicket {
    pub id: u64,
    pub kick: Arc<Notify>,
    pub wake: Arc<Notify>,
    pub session_present: bool,
}

/// The hub.
pub(crate) struct HubState {
    pub settings: HubSettings,
    /// The hub's time: every TTL, lock and flush deadline reads it.
    pub clock: Clock,
    inner: Mutex<Inner>,
    /// Woken when a feedback batch is ready.
    pub feedback_ready: Notify,
    /// Woken when a sweep may be needed sooner than planned.
    pub sweep_wake: Notify,
    telemetry: broadcast::Sender<(String, Message)>,
    next_id: AtomicU64,
    /// Set once the hub stops, for connections that have no per-device kick (AMQP).
    stopping: watch::Sender<bool>,
}

/// Random bytes for keys and ids.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

/// A new 32-byte key, as IoT Hub generates (44 base64 characters).
pub(crate) fn generate_key() -> SasKey {
    SasKey::from_bytes(&random_bytes::<32>())
}

impl HubState {
    pub fn new(settings: HubSettings, policies: Vec<AccessPolicy>) -> Self {
        let (telemetry, _) = broadcast::channel(1024);
        HubState {
            settings,
            clock: Clock::new(),
            inner: Mutex::new(Inner {
                devices: BTreeMap::new(),
                policies,
                feedback: FeedbackQueue::default(),
            }),
            feedback_ready: Notify::new(),
            sweep_wake: Notify::new(),
            telemetry,
            next_id: AtomicU64::new(1),
            stopping: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters more than stopping the hub would, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The primary key of the policy called `name`.
    pub fn policy_key(&self, name: &str) -> Option<SasKey> {
        self.lock()
            .policies
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.primary_key.clone())
    }

    /// Checks a back-end token for `needed`.
    pub fn authorize_service(
        &self,
        token: &SasToken,
        needed: Permission,
    ) -> Result<(), AccessDenied> {
        let inner = self.lock();
        authorize_service(
            token,
            &self.settings.host_name,
            &inner.policies,
            needed,
            self.clock.now(),
        )
    }

    /// Checks a device's token: device keys or a DeviceConnect policy, device registered and
    /// enabled.
    pub fn authorize_device(
        &self,
        token: &SasToken,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<(), AccessDenied> {
        let inner = self.lock();
        let device = inner
            .devices
            .get(device_id)
            .filter(|d| d.record.status == DeviceStatus::Enabled)
            .ok_or(AccessDenied::UnknownDevice)?;
        let keys = [&device.record.primary_key, &device.record.secondary_key];
        authorize_device(
            token,
            &self.settings.host_name,
            device_id,
            module_id,
            &keys,
            &inner.policies,
            self.clock.now(),
        )
    }

    // ---- registry ------------------------------------------------------------------------

    /// Creates (`if_match` absent) or updates (`*` or the current etag) a device.
    pub fn put_device(
        &self,
        spec: DeviceSpec,
        if_match: Option<&str>,
    ) -> Result<DeviceRecord, RegistryError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let etag = encode_etag(self.fresh_id());
        match (inner.devices.get_mut(&spec.device_id), if_match) {
            (Some(_), None) => Err(RegistryError::DeviceAlreadyExists),
            (None, Some(_)) => Err(RegistryError::DeviceNotFound),
            (Some(device), Some(tag)) => {
                if !etag_matches(tag, &device.record.etag) {
                    return Err(RegistryError::PreconditionFailed);
                }
                let record = &mut device.record;
                if record.status != spec.status {
                    record.status_updated = now;
                }
                record.status = spec.status;
                record.status_reason = spec.status_reason;
                record.primary_key = spec.primary_key.unwrap_or_else(generate_key);
                record.secondary_key = spec.secondary_key.unwrap_or_else(generate_key);
                record.iot_edge = spec.iot_edge;
                record.etag = etag;
                let record = record.clone();
                if record.status == DeviceStatus::Disabled {
                    if let Some(session) = &device.session {
                        session.kick.notify_one();
                    }
                }
                Ok(record)
            }
            (None, None) => {
                let record = DeviceRecord {
                    device_id: spec.device_id.clone(),
                    generation_id: format!("{}", 638_000_000_000_000_000 + self.fresh_id()),
                    etag,
                    status: spec.status,
                    status_reason: spec.status_reason,
                    primary_key: spec.primary_key.unwrap_or_else(generate_key),
                    secondary_key: spec.secondary_key.unwrap_or_else(generate_key),
                    iot_edge: spec.iot_edge,
                    connected: false,
                    connection_state_updated: now,
                    status_updated: now,
                    last_activity: now,
                    c2d_count: 0,
                };
                inner.devices.insert(
                    spec.device_id,
                    Device {
                        record: record.clone(),
                        queue: C2dQueue::default(),
                        wake: Arc::new(Notify::new()),
                        session: None,
                        c2d_subscribed: false,
                        session_present: false,
                    },
                );
                Ok(record)
            }
        }
    }

    /// A device's record.
    pub fn get_device(&self, device_id: &str) -> Option<DeviceRecord> {
        let inner = self.lock();
        inner.devices.get(device_id).map(snapshot)
    }

    /// Every device's record, in id order.
    pub fn list_devices(&self) -> Vec<DeviceRecord> {
        self.lock().devices.values().map(snapshot).collect()
    }

    /// Deletes a device (`if_match`: `*` or its etag), closing its session and dropping its
    /// queue and pending feedback.
    pub fn delete_device(
        &self,
        device_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let device = inner
            .devices
            .get(device_id)
            .ok_or(RegistryError::DeviceNotFound)?;
        if let Some(tag) = if_match {
            if !etag_matches(tag, &device.record.etag) {
                return Err(RegistryError::PreconditionFailed);
            }
        }
        let device = inner.devices.remove(device_id).expect("checked above");
        if let Some(session) = device.session {
            session.kick.notify_one();
        }
        inner.feedback.forget_device(device_id);
        Ok(())
    }

    /// `(total, enabled, disabled)` device counts.
    pub fn device_counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let enabled = inner
            .devices
            .values()
            .filter(|d| d.record.status == DeviceStatus::Enabled)
            .count();
        (inner.devices.len(), enabled, inner.devices.len() - enabled)
    }

    // ---- cloud to device -----------------------------------------------------------------

    /// Queues a message for a device; `to` is set to the device's path when absent.
    ///
    /// Refusals: [`ErrorKind::DeviceNotFound`], [`ErrorKind::QueueFull`] and
    /// [`ErrorKind::MessageTooLarge`], with a description fit for the sender.
    pub fn enqueue_c2d(&self, device_id: &str, message: Message) -> Result<(), Error> {
        let now = self.clock.now();
        let mut settled = Vec::new();
        let mut inner = self.lock();
        let device = inner.devices.get_mut(device_id).ok_or_else(|| {
            Error::new(
                ErrorKind::DeviceNotFound,
                format!("device '{device_id}' is not registered"),
            )
        })?;
        let message = if message.to().is_none() {
            message.with_to(crate::protocol::c2d_address(device_id))
        } else {
            message
        };
        let message_id = message.message_id().map(str::to_owned);
        let result = device
            .queue
            .enqueue(message, &self.settings.c2d, now, &mut settled)
            .map_err(|refusal| match refusal {
                EnqueueRefusal::QueueFull => Error::new(
                    ErrorKind::QueueFull,
                    format!(
                        "the queue of device '{device_id}' already holds the maximum of messages"
                    ),
                ),
                EnqueueRefusal::TooLarge => Error::new(
                    ErrorKind::MessageTooLarge,
                    "the message is larger than the cloud-to-device limit",
                ),
            });
        if result.is_ok() {
            device.record.c2d_count = device.queue.len();
            device.wake.notify_one();
            tracing::info!(device = device_id, message_id = ?message_id, "c2d enqueued");
        }
        self.record_feedback(&mut inner, device_id, settled, now);
        drop(inner);
        self.sweep_wake.notify_one();
        result
    }

    /// Purges a device's queue; returns how many messages it held.
    pub fn purge_c2d(&self, device_id: &str) -> Result<usize, RegistryError> {
        let now = self.clock.now();
        let mut settled = Vec::new();
        let mut inner = self.lock();
        let device = inner
            .devices
            .get_mut(device_id)
            .ok_or(RegistryError::DeviceNotFound)?;
        let count = device.queue.purge(now, &mut settled);
        device.record.c2d_count = 0;
        self.record_feedback(&mut inner, device_id, settled, now);
        tracing::info!(device = device_id, count, "c2d queue purged");
        Ok(count)
    }

    /// The next message for a subscribed device's session, locked for it.
    pub fn next_c2d(&self, device_id: &str, session_id: u64) -> Option<(LockToken, Message)> {
        let now = self.clock.now();
        let mut settled = Vec::new();
        let mut inner = self.lock();
        let device = inner.devices.get_mut(device_id)?;
        if device.session.as_ref().map(|s| s.id) != Some(session_id) || !device.c2d_subscribed {
            return None;
        }
        let next = device
            .queue
            .next_delivery(&self.settings.c2d, now, &mut settled);
        device.record.c2d_count = device.queue.len();
        self.record_feedback(&mut inner, device_id, settled, now);
        if let Some((_, message)) = &next {
            tracing::info!(device = device_id, message_id = ?message.message_id(), "c2d delivered");
        }
        next
    }

    /// The device acknowledged a delivery.
    pub fn complete_c2d(&self, device_id: &str, token: LockToken) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(device_id) else {
            return;
        };
        let settled = device.queue.complete(token, now);
        device.record.c2d_count = device.queue.len();
        device.record.last_activity = now;
        match settled {
            Some(settled) => {
                tracing::info!(device = device_id, message_id = ?settled.message_id, "c2d completed");
                self.record_feedback(&mut inner, device_id, vec![settled], now);
            }
            None => tracing::info!(device = device_id, "c2d completion after the lock was lost"),
        }
    }

    fn record_feedback(
        &self,
        inner: &mut Inner,
        device_id: &str,
        settled: Vec<Settled>,
        now: SystemTime,
    ) {
        if settled.is_empty() {
            return;
        }
        let generation_id = inner
            .devices
            .get(device_id)
            .map(|d| d.record.generation_id.clone())
            .unwrap_or_default();
        let mut any = false;
        for s in settled {
            if !s.status.is_requested_by(s.ack) {
                continue;
            }
            any = true;
            tracing::info!(device = device_id, message_id = ?s.message_id, status = %s.status, "feedback record");
            inner.feedback.push(
                FeedbackRecord {
                    original_message_id: s.message_id.unwrap_or_default(),
                    status_code: s.status,
                    description: s.status.as_str().to_owned(),
                    device_id: device_id.to_owned(),
                    device_generation_id: generation_id.clone(),
                    enqueued_time_utc: expiry_time::format(s.at).unwrap_or_default(),
                },
                now,
            );
        }
        if any {
            self.sweep_wake.notify_one();
        }
    }

    /// Expires messages, releases lapsed locks, cuts due feedback batches; returns when the
    /// next sweep is needed.
    pub fn sweep(&self) -> Option<SystemTime> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let ids: Vec<String> = inner.devices.keys().cloned().collect();
        let mut next = None::<SystemTime>;
        for id in ids {
            let mut settled = Vec::new();
            let device = inner.devices.get_mut(&id).expect("id taken from the map");
            if device.queue.sweep(&self.settings.c2d, now, &mut settled) {
                device.wake.notify_one();
            }
            device.record.c2d_count = device.queue.len();
            next = earliest(next, device.queue.next_deadline());
            self.record_feedback(&mut inner, &id, settled, now);
        }
        let flush = self.settings.feedback_flush_interval;
        inner.feedback.flush_due(flush, now);
        next = earliest(next, inner.feedback.next_deadline(flush));
        next = earliest(next, inner.feedback.expire(&self.settings.feedback, now));
        if inner.feedback.has_ready() {
            self.feedback_ready.notify_waiters();
            self.feedback_ready.notify_one();
        }
        next
    }

    /// The oldest ready feedback batch.
    pub fn take_feedback(&self) -> Option<Vec<FeedbackRecord>> {
        self.lock().feedback.take()
    }

    /// Puts a feedback batch back, for a receiver that could not deliver it.
    pub fn return_feedback(&self, batch: Vec<FeedbackRecord>) {
        self.lock().feedback.put_back(batch, self.clock.now());
        self.feedback_ready.notify_one();
    }

    /// The oldest ready feedback batch, locked for an AMQP receiver until it settles.
    pub fn lock_feedback(&self) -> Option<FeedbackDelivery> {
        let delivery = self
            .lock()
            .feedback
            .lock_next(&self.settings.feedback, self.clock.now());
        if delivery.is_some() {
            // The sweep must see the lock's deadline.
            self.sweep_wake.notify_one();
        }
        delivery
    }

    /// The receiver accepted a batch: it leaves the queue.
    pub fn complete_feedback(&self, lock: FeedbackLock) {
        if !self.lock().feedback.complete(lock) {
            tracing::info!("feedback settled after its lock was lost");
        }
    }

    /// The receiver released a batch (or its link went away): it is ready again, unless it
    /// reached the maximum delivery count.
    pub fn release_feedback(&self, lock: FeedbackLock) {
        let requeued = self.lock().feedback.release(lock, &self.settings.feedback);
        if requeued {
            self.feedback_ready.notify_waiters();
            self.feedback_ready.notify_one();
        } else {
            tracing::info!("feedback batch dropped: maximum delivery count reached or lock lost");
        }
    }

    // ---- MQTT sessions -------------------------------------------------------------------

    /// Registers a new connection for a device, closing the one it replaces (IoT Hub keeps
    /// one connection per device). `clean_session` drops the earlier session's subscription.
    pub fn open_session(&self, device_id: &str, clean_session: bool) -> Option<SessionTicket> {
        let now = self.clock.now();
        let id = self.fresh_id();
        let mut inner = self.lock();
        let device = inner.devices.get_mut(device_id)?;
        if let Some(old) = device.session.take() {
            tracing::info!(device = device_id, "a new connection replaces the old one");
            old.kick.notify_one();
        }
        let session_present = !clean_session && device.session_present;
        if clean_session {
            device.c2d_subscribed = false;
        }
        device.session_present = !clean_session;
        let kick = Arc::new(Notify::new());
        device.session = Some(Session {
            id,
            kick: kick.clone(),
        });
        device.record.connected = true;
        device.record.connection_state_updated = now;
        device.record.last_activity = now;
        Some(SessionTicket {
            id,
            kick,
            wake: device.wake.clone(),
            session_present,
        })
    }

    /// Records whether the session subscribed to (or unsubscribed from) C2D.
    pub fn set_c2d_subscribed(&self, device_id: &str, session_id: u64, subscribed: bool) {
        let mut inner = self.lock();
        if let Some(device) = inner.devices.get_mut(device_id) {
            if device.session.as_ref().map(|s| s.id) == Some(session_id) {
                device.c2d_subscribed = subscribed;
                device.wake.notify_one();
            }
        }
    }

    /// A connection ended: its unacknowledged deliveries go back to the queue (counted as
    /// abandoned), and the device shows as disconnected unless a newer connection took over.
    pub fn close_session(
        &self,
        device_id: &str,
        session_id: u64,
        in_flight: impl IntoIterator<Item = LockToken>,
    ) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(device_id) else {
            return;
        };
        for token in in_flight {
            device.queue.abandon(token);
        }
        if device.session.as_ref().map(|s| s.id) == Some(session_id) {
            device.session = None;
            device.record.connected = false;
            device.record.connection_state_updated = now;
            if !device.session_present {
                device.c2d_subscribed = false;
            }
        }
        device.wake.notify_one();
    }

    /// A receiver that turns `true` when the hub stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Closes every device's connection and every AMQP connection (at shutdown).
    pub fn kick_all(&self) {
        self.stopping.send_replace(true);
        let inner = self.lock();
        for device in inner.devices.values() {
            if let Some(session) = &device.session {
                session.kick.notify_one();
            }
        }
    }

    /// Closes the device's current connection; returns whether it had one.
    pub fn disconnect_device(&self, device_id: &str) -> bool {
        let inner = self.lock();
        match inner
            .devices
            .get(device_id)
            .and_then(|d| d.session.as_ref())
        {
            Some(session) => {
                session.kick.notify_one();
                true
            }
            None => false,
        }
    }

    /// Whether the device has a connection now.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.lock()
            .devices
            .get(device_id)
            .is_some_and(|d| d.session.is_some())
    }

    /// Messages in a device's queue, delivered or not.
    pub fn c2d_queue_len(&self, device_id: &str) -> Option<usize> {
        self.lock().devices.get(device_id).map(|d| d.queue.len())
    }

    /// Publishes telemetry to the handle's subscribers.
    pub fn publish_telemetry(&self, device_id: &str, message: Message) {
        {
            let mut inner = self.lock();
            if let Some(device) = inner.devices.get_mut(device_id) {
                device.record.last_activity = self.clock.now();
            }
        }
        let _ = self.telemetry.send((device_id.to_owned(), message));
    }

    /// A receiver of every telemetry message from now on.
    pub fn subscribe_telemetry(&self) -> broadcast::Receiver<(String, Message)> {
        self.telemetry.subscribe()
    }
}

fn snapshot(device: &Device) -> DeviceRecord {
    device.record.clone()
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Device etags look like base64 of an ASCII decimal (`OTg0MjI1NzE1` = "984225715";
/// protocol.md §5.4).
fn encode_etag(n: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{}", 900_000_000 + n))
}

/// `If-Match` semantics (protocol.md §5.9): quotes and a `W/` prefix are stripped; `*` matches
/// anything.
pub(crate) fn etag_matches(if_match: &str, etag: &str) -> bool {
    let tag = if_match.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag.trim_matches('"');
    tag == "*" || tag == etag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Ack;
    use crate::protocol::FeedbackStatus;

    fn hub() -> HubState {
        HubState::new(
            HubSettings {
                host_name: "localhost".to_owned(),
                c2d: C2dLimits::default(),
                feedback_flush_interval: Duration::from_secs(15),
                feedback: FeedbackLimits::default(),
            },
            Vec::new(),
        )
    }

    fn register(hub: &HubState, device_id: &str) {
        let spec = DeviceSpec {
            device_id: device_id.to_owned(),
            status: DeviceStatus::Enabled,
            status_reason: None,
            primary_key: None,
            secondary_key: None,
            iot_edge: false,
        };
        hub.put_device(spec, None).unwrap();
    }

    /// On paused Tokio time: a message whose expiry passes gives `Expired` feedback once the
    /// flush interval has passed, with no real wait.
    #[tokio::test(start_paused = true)]
    async fn an_expired_message_gives_expired_feedback_on_paused_time() {
        let hub = hub();
        register(&hub, "dev1");
        let expiry = hub.clock.now() + Duration::from_secs(30);
        let message = Message::new("late")
            .with_message_id("m1")
            .with_ack(Ack::Full)
            .with_expiry(expiry);
        hub.enqueue_c2d("dev1", message).unwrap();
        hub.sweep();
        assert_eq!(hub.c2d_queue_len("dev1"), Some(1));
        assert!(hub.take_feedback().is_none());

        tokio::time::advance(Duration::from_secs(31)).await;
        hub.sweep();
        assert_eq!(hub.c2d_queue_len("dev1"), Some(0), "the message expired");
        assert!(
            hub.take_feedback().is_none(),
            "not before the flush interval"
        );

        tokio::time::advance(Duration::from_secs(15)).await;
        hub.sweep();
        let batch = hub
            .take_feedback()
            .expect("a batch after the flush interval");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].original_message_id, "m1");
        assert_eq!(batch[0].status_code, FeedbackStatus::Expired);
        assert_eq!(batch[0].device_id, "dev1");
    }

    #[test]
    fn if_match_accepts_quoted_weak_and_wildcard() {
        assert!(etag_matches("\"*\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("W/\"abc\"", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
        assert!(!etag_matches("\"\"", "abc"));
    }
}
