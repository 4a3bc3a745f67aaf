//! All of the hub's mutable state behind one type: the identity registry (devices and their
//! modules), the policies, each device's C2D queue, each identity's MQTT session slot, and the
//! feedback queue.
//!
//! Listeners hold an `Arc<HubState>` and call its methods; every method takes the lock for a
//! short, non-blocking step, so no `.await` ever happens while it is held, and nothing sent to
//! a session while it is held can block (see [`HubState::push`]). Keeping state in one place
//! leaves room for persistence later.
//!
//! The methods are grouped by concern:
//! - `identities`: the registry of devices and modules, their keys and authorization;
//! - `sessions`: one MQTT session slot per identity, and the push path into a session;
//! - `c2d`: each device's cloud-to-device queue;
//! - `deadlines`: which devices' queues the sweep must visit, and when;
//! - `feedback`: the hub-wide feedback queue;
//! - `twins`: one twin per identity;
//! - `features`: what each session subscribed to among twin responses, desired patches and
//!   method requests;
//! - `methods`: direct-method calls waiting for the device's answer.

mod c2d;
mod deadlines;
mod features;
mod feedback;
mod identities;
mod methods;
mod persist;
mod restore;
mod scopes;
mod sessions;
mod telemetry;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod twin_method_tests;
mod twins;
mod x509;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::auth::{AccessDenied, AccessPolicy, Permission, SasKey, SasToken, authorize_service};
use crate::local_hub::c2d_queue::C2dLimits;
use crate::local_hub::clock::Clock;
use crate::local_hub::feedback_queue::{FeedbackLimits, FeedbackQueue};
use crate::local_hub::telemetry_log::{LogSettings, TelemetryLog};

pub(crate) use deadlines::sweep_wait;
#[allow(
    unused_imports,
    reason = "read by the HTTPS module API and device twins and methods (the next issues)"
)]
pub(crate) use identities::{
    DeviceAuthentication, DeviceRecord, DeviceSpec, DeviceStatus, Identity, ModuleRecord,
    ModuleSpec, RegistryError, etag_matches,
};
pub(crate) use scopes::{DeviceScopes, edge_scope};
#[allow(
    unused_imports,
    reason = "read by the HTTPS module API and device twins and methods (the next issues)"
)]
pub(crate) use sessions::{OUTBOX_CAPACITY, Outbound, Outbox, SessionTicket};
pub(crate) use telemetry::Credential;

pub(crate) use features::Feature;
pub(crate) use methods::MethodFailure;
pub(crate) use twins::{TwinView, TwinWrite};

use identities::Device;

struct Inner {
    devices: BTreeMap<String, Device>,
    policies: Vec<AccessPolicy>,
    feedback: FeedbackQueue,
    /// The verified CA certificates of X.509 CA-signed devices (DER).
    x509_cas: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Each identity's twin.
    twins: twins::Twins,
    /// What each identity's session subscribed to among desired patches and methods.
    feature_subscriptions: features::Subscriptions,
    /// Direct-method calls waiting for an answer.
    methods: methods::PendingMethods,
    /// When each device's C2D queue next needs the sweep.
    deadlines: deadlines::Deadlines,
}

/// Hub-wide settings.
#[derive(Clone, Debug)]
pub(crate) struct HubSettings {
    pub host_name: String,
    pub c2d: C2dLimits,
    pub feedback_flush_interval: Duration,
    pub feedback: FeedbackLimits,
    /// The telemetry log's partitions, consumer groups and retention.
    pub telemetry: LogSettings,
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
    /// Woken when a session subscribes to method requests.
    method_subscribers_changed: Notify,
    /// Every accepted telemetry message, retained (see `telemetry`).
    telemetry_log: Arc<TelemetryLog>,
    /// The TLS port of the Event Hubs-compatible endpoint, once it listens (the target of
    /// the service endpoint's `amqp:link:redirect`).
    event_hubs_port: std::sync::OnceLock<u16>,
    next_id: AtomicU64,
    /// Set once the hub stops, for connections that have no session slot (AMQP).
    stopping: watch::Sender<bool>,
    /// The state directory's writer, when the hub has one (see `persist`).
    store: std::sync::OnceLock<crate::local_hub::store::Store>,
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
        let telemetry_log = Arc::new(TelemetryLog::new(settings.telemetry.clone()));
        HubState {
            settings,
            clock: Clock::new(),
            inner: Mutex::new(Inner {
                devices: BTreeMap::new(),
                policies,
                feedback: FeedbackQueue::default(),
                x509_cas: Vec::new(),
                twins: Default::default(),
                feature_subscriptions: Default::default(),
                methods: Default::default(),
                deadlines: Default::default(),
            }),
            feedback_ready: Notify::new(),
            sweep_wake: Notify::new(),
            method_subscribers_changed: Notify::new(),
            telemetry_log,
            event_hubs_port: std::sync::OnceLock::new(),
            next_id: AtomicU64::new(1),
            stopping: watch::channel(false).0,
            store: std::sync::OnceLock::new(),
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

    /// The policy called `name` (both keys and its permissions).
    pub fn policy(&self, name: &str) -> Option<AccessPolicy> {
        self.lock()
            .policies
            .iter()
            .find(|p| p.name == name)
            .cloned()
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

    /// Expires messages, releases lapsed locks (waking the session that may deliver them
    /// again), cuts due feedback batches, drops telemetry past retention; returns when the
    /// next sweep is needed.
    ///
    /// Only the devices whose deadline has come are visited (the deadline index), so a sweep
    /// costs nothing per idle registered device.
    pub fn sweep(&self) -> Option<SystemTime> {
        let now = self.clock.now();
        self.telemetry_log.expire(now);
        let mut inner = self.lock();
        let due = inner.deadlines.take_due(now);
        for id in due {
            let mut settled = Vec::new();
            let Some(device) = inner.devices.get_mut(&id) else {
                continue; // deleted since its deadline was filed
            };
            if device.queue.sweep(&self.settings.c2d, now, &mut settled) {
                device.wake_c2d();
            }
            device.record.c2d_count = device.queue.len();
            let deadline = device.queue.next_deadline();
            inner.deadlines.set(&id, deadline);
            self.record_feedback(&mut inner, &id, settled, now);
        }
        let mut next = inner.deadlines.earliest();
        let flush = self.settings.feedback_flush_interval;
        inner.feedback.flush_due(flush, now);
        next = earliest(next, inner.feedback.next_deadline(flush));
        next = earliest(next, inner.feedback.expire(&self.settings.feedback, now));
        if inner.feedback.has_ready() {
            self.feedback_ready.notify_waiters();
            self.feedback_ready.notify_one();
        }
        inner.deadlines.plan_wake(now + sweep_wait(next, now));
        next
    }

    /// Files a device's C2D deadline after its queue changed; wakes the sweep task if the
    /// deadline comes before its planned wake.
    fn file_c2d_deadline(&self, inner: &mut Inner, device_id: &str) {
        let deadline = inner
            .devices
            .get(device_id)
            .and_then(|device| device.queue.next_deadline());
        if inner.deadlines.set(device_id, deadline) {
            self.sweep_wake.notify_one();
        }
    }

    /// A receiver that turns `true` when the hub stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
