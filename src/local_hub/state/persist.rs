//! The hub's side of the state directory (`local_hub::store`): the hooks the mutation points
//! call while they hold the lock, and the restore at start.
//!
//! Each hook returns at once when the hub has no state directory. With one, it records the
//! change in the store's in-memory list (no I/O under the lock); the writer thread makes it
//! durable, and [`HubState::persisted`] waits for that.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::error::Result;
use crate::local_hub::c2d_queue::C2dQueue;
use crate::local_hub::store::records::{
    self, StoredC2d, StoredDevice, StoredFeedback, StoredMessage, StoredModule, StoredTelemetry,
    to_json,
};
use crate::local_hub::store::{Change, Mirror, Store};
use crate::local_hub::telemetry_log::TelemetryEvent;
use crate::protocol::FeedbackRecord;

use super::identities::{DeviceAuthentication, DeviceRecord, ModuleRecord};
use super::{DeviceStatus, HubState, Identity, Inner};

fn stored_device(record: &DeviceRecord) -> StoredDevice {
    let (authentication, primary_thumbprint, secondary_thumbprint) = match &record.authentication {
        DeviceAuthentication::Sas => ("sas", None, None),
        DeviceAuthentication::SelfSigned {
            primary_thumbprint,
            secondary_thumbprint,
        } => (
            "selfSigned",
            primary_thumbprint.clone(),
            secondary_thumbprint.clone(),
        ),
        DeviceAuthentication::CertificateAuthority => ("certificateAuthority", None, None),
    };
    StoredDevice {
        device_id: record.device_id.clone(),
        generation_id: record.generation_id.clone(),
        etag: record.etag.clone(),
        enabled: record.status == DeviceStatus::Enabled,
        status_reason: record.status_reason.clone(),
        primary_key: records::StoredKey::of(&record.primary_key),
        secondary_key: records::StoredKey::of(&record.secondary_key),
        iot_edge: record.iot_edge,
        authentication: authentication.to_owned(),
        primary_thumbprint,
        secondary_thumbprint,
        status_updated: records::millis(record.status_updated),
        device_scope: record.scopes.device_scope.clone(),
        parent_scopes: record.scopes.parent_scopes.clone(),
    }
}

fn stored_module(record: &ModuleRecord) -> StoredModule {
    StoredModule {
        device_id: record.device_id.clone(),
        module_id: record.module_id.clone(),
        generation_id: record.generation_id.clone(),
        etag: record.etag.clone(),
        primary_key: records::StoredKey::of(&record.primary_key),
        secondary_key: records::StoredKey::of(&record.secondary_key),
        managed_by: record.managed_by.clone(),
    }
}

/// The changes that take the stored queue of `device_id` (as `mirror` remembers it) to `queue`.
fn queue_changes(
    device_id: &str,
    queue: &C2dQueue,
    mirror: &mut BTreeMap<u64, u32>,
    changes: &mut Vec<Change>,
) {
    let mut seen = BTreeMap::new();
    for (token, message, expires_at, delivery_count) in queue.stored() {
        seen.insert(token, delivery_count);
        if mirror.get(&token) != Some(&delivery_count) {
            let stored = StoredC2d {
                message: StoredMessage::of(message),
                expires_at: records::millis(expires_at),
                delivery_count,
            };
            changes.push(Change::Put {
                key: records::c2d_key(device_id, token),
                value: to_json(&stored),
            });
        }
    }
    for token in mirror.keys() {
        if !seen.contains_key(token) {
            changes.push(Change::Del {
                key: records::c2d_key(device_id, *token),
            });
        }
    }
    *mirror = seen;
}

impl HubState {
    /// The state directory's writer, if the hub has one.
    pub fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    /// Waits until every change made so far is durable (at once without a state directory).
    /// Errors when the state directory cannot be written.
    pub async fn persisted(&self) -> Result<()> {
        match self.store.get() {
            Some(store) => store.durable().await,
            None => Ok(()),
        }
    }

    /// Hook: the device's queue changed.
    pub(super) fn persist_queue(&self, inner: &Inner, device_id: &str) {
        let Some(store) = self.store.get() else {
            return;
        };
        let Some(device) = inner.devices.get(device_id) else {
            return;
        };
        store.record(|mirror, changes| {
            let stored = mirror.queues.entry(device_id.to_owned()).or_default();
            queue_changes(device_id, &device.queue, stored, changes);
        });
    }

    /// Hook: the device's queue changed, and these feedback records came of it; both are
    /// recorded at once, so that no write has the one without the other.
    pub(super) fn persist_c2d(
        &self,
        inner: &Inner,
        device_id: &str,
        feedback: &[FeedbackRecord],
        now: SystemTime,
    ) {
        let Some(store) = self.store.get() else {
            return;
        };
        let Some(device) = inner.devices.get(device_id) else {
            return;
        };
        store.record(|mirror, changes| {
            let stored = mirror.queues.entry(device_id.to_owned()).or_default();
            queue_changes(device_id, &device.queue, stored, changes);
            feedback_added(mirror, changes, feedback, now);
        });
    }

    /// Hook: a device was created or changed.
    pub(super) fn persist_device(&self, record: &DeviceRecord) {
        if let Some(store) = self.store.get() {
            store.put(
                records::device_key(&record.device_id),
                to_json(&stored_device(record)),
            );
        }
    }

    /// Hook: a device was deleted, with its modules, twins, queue and feedback.
    pub(super) fn persist_device_deleted(&self, device_id: &str) {
        let Some(store) = self.store.get() else {
            return;
        };
        store.record(|mirror, changes| {
            changes.push(Change::Del {
                key: records::device_key(device_id),
            });
            for prefix in [
                records::modules_prefix(device_id),
                records::twins_prefix(device_id),
                records::queue_prefix(device_id),
            ] {
                changes.push(Change::Prefix { prefix });
            }
            mirror.queues.remove(device_id);
            let gone: Vec<u64> = mirror
                .feedback
                .iter()
                .filter(|(_, r)| r.device_id == device_id)
                .map(|(n, _)| *n)
                .collect();
            for n in gone {
                mirror.feedback.remove(&n);
                changes.push(Change::Del {
                    key: records::feedback_key(n),
                });
            }
        });
    }

    /// Hook: a module was created or changed.
    pub(super) fn persist_module(&self, record: &ModuleRecord) {
        if let Some(store) = self.store.get() {
            store.put(
                records::module_key(&record.device_id, &record.module_id),
                to_json(&stored_module(record)),
            );
        }
    }

    /// Hook: a module was deleted, with its twin.
    pub(super) fn persist_module_deleted(&self, device_id: &str, module_id: &str) {
        if let Some(store) = self.store.get() {
            store.record(|_, changes| {
                changes.push(Change::Del {
                    key: records::module_key(device_id, module_id),
                });
                changes.push(Change::Del {
                    key: records::twin_key(device_id, Some(module_id)),
                });
            });
        }
    }

    /// Hook: an identity's twin changed.
    pub(super) fn persist_twin(&self, inner: &Inner, identity: &Identity) {
        let Some(store) = self.store.get() else {
            return;
        };
        if let Some(twin) = inner.twins.get(identity) {
            store.put(
                records::twin_key(&identity.device_id, identity.module_id.as_deref()),
                to_json(twin),
            );
        }
    }

    /// Hook: feedback records were added to the queue (`now`: when).
    pub(super) fn persist_feedback_added(&self, added: &[FeedbackRecord], now: SystemTime) {
        let Some(store) = self.store.get() else {
            return;
        };
        store.record(|mirror, changes| feedback_added(mirror, changes, added, now));
    }

    /// Hook: feedback records left the queue (delivered, or dropped). Equal records are
    /// interchangeable, so each removes the oldest stored one equal to it.
    pub(super) fn persist_feedback_removed(&self, removed: &[FeedbackRecord]) {
        let Some(store) = self.store.get() else {
            return;
        };
        store.record(|mirror, changes| {
            for record in removed {
                let found = mirror
                    .feedback
                    .iter()
                    .find(|(_, r)| *r == record)
                    .map(|(n, _)| *n);
                if let Some(n) = found {
                    mirror.feedback.remove(&n);
                    changes.push(Change::Del {
                        key: records::feedback_key(n),
                    });
                }
            }
        });
    }

    /// The policies as the state directory keeps them.
    pub fn stored_policies(&self) -> Vec<records::StoredPolicy> {
        self.lock()
            .policies
            .iter()
            .map(|p| records::StoredPolicy {
                name: p.name.clone(),
                primary_key: records::StoredKey::of(&p.primary_key),
                secondary_key: records::StoredKey::of(&p.secondary_key),
            })
            .collect()
    }

    /// Sets the hub's store (once, at start, before listeners run) and records retained
    /// telemetry through it from now on.
    pub fn attach_store(&self, store: Store) {
        let keep = self.telemetry_log.settings().retention.max_events as i64;
        let recorder = store.clone();
        self.telemetry_log.set_recorder(Box::new(move |event| {
            let stored = stored_telemetry(event);
            let key = records::telemetry_key(event.partition, event.sequence_number);
            recorder.record(|_, changes| {
                changes.push(Change::Put {
                    key,
                    value: to_json(&stored),
                });
                if event.sequence_number >= keep {
                    changes.push(Change::Del {
                        key: records::telemetry_key(event.partition, event.sequence_number - keep),
                    });
                }
            });
        }));
        let _ = self.store.set(store);
    }
}

fn feedback_added(
    mirror: &mut Mirror,
    changes: &mut Vec<Change>,
    added: &[FeedbackRecord],
    now: SystemTime,
) {
    for record in added {
        let n = mirror.next_feedback;
        mirror.next_feedback += 1;
        let stored = StoredFeedback {
            record: record.clone(),
            at: records::millis(now),
        };
        changes.push(Change::Put {
            key: records::feedback_key(n),
            value: to_json(&stored),
        });
        mirror.feedback.insert(n, record.clone());
    }
}

fn stored_telemetry(event: &TelemetryEvent) -> StoredTelemetry {
    StoredTelemetry {
        partition: event.partition,
        sequence_number: event.sequence_number,
        offset: event.offset,
        enqueued_time: records::millis(event.enqueued_time),
        device_id: event.stamps.device_id.clone(),
        module_id: event.stamps.module_id.clone(),
        auth_scope: event.stamps.auth_method.scope.to_owned(),
        auth_kind: event.stamps.auth_method.kind.to_owned(),
        generation_id: event.stamps.generation_id.clone(),
        message: StoredMessage::of(&event.message),
    }
}
