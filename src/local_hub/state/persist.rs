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
use crate::local_hub::telemetry_log::{AuthMethod, Stamps, TELEMETRY_SOURCE, TelemetryEvent};
use crate::protocol::FeedbackRecord;

use super::identities::{Device, DeviceAuthentication, DeviceRecord, Module, ModuleRecord};
use super::sessions::SessionSlot;
use super::twins::TwinRecord;
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

    /// Fills an empty hub with what a state directory held (`loaded`: its keys and values).
    /// Entries that do not parse are skipped with a warning.
    pub fn restore(&self, loaded: &BTreeMap<String, String>) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let mut max_id = 0u64;
        let mut feedback = Vec::new();
        let mut telemetry = Vec::new();
        // Devices first: the other entries belong to them.
        let devices_first = loaded
            .iter()
            .filter(|(k, _)| k.starts_with("dev/"))
            .chain(loaded.iter().filter(|(k, _)| !k.starts_with("dev/")));
        for (key, value) in devices_first {
            let kind = key.split('/').next().unwrap_or_default();
            let ok = match kind {
                "dev" => parse::<StoredDevice>(value).map(|d| {
                    max_id = max_id
                        .max(id_of(&d.etag))
                        .max(generation_number(&d.generation_id));
                    restore_device(&mut inner, d, now);
                }),
                "mod" => parse::<StoredModule>(value).map(|m| {
                    max_id = max_id
                        .max(id_of(&m.etag))
                        .max(generation_number(&m.generation_id));
                    restore_module(&mut inner, m, now);
                }),
                "twin" => parse::<TwinRecord>(value).map(|t| restore_twin(&mut inner, key, t)),
                "c2d" => parse::<StoredC2d>(value).map(|c| restore_c2d(&mut inner, key, c)),
                "fb" => parse::<StoredFeedback>(value).map(|f| {
                    let n = key
                        .strip_prefix("fb/")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    feedback.push((n, f));
                }),
                "tel" => parse::<StoredTelemetry>(value).map(|t| telemetry.push(t)),
                _ => Some(()),
            };
            if ok.is_none() {
                tracing::warn!(key = %key, "state directory entry skipped: it does not parse");
            }
        }
        // Feedback older than its TTL would have been dropped by now.
        let ttl = self.settings.feedback.ttl;
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (n, stored) in feedback {
            let at = records::from_millis(stored.at);
            if inner.devices.contains_key(&stored.record.device_id) && at + ttl > now {
                inner.feedback.push(stored.record.clone(), at);
                kept.push((n, stored.record));
            } else {
                dropped.push(n);
            }
        }
        let queues: Vec<(String, BTreeMap<u64, u32>)> = inner
            .devices
            .iter()
            .map(|(id, d)| {
                let tokens = d.queue.stored().map(|(t, _, _, n)| (t, n)).collect();
                (id.clone(), tokens)
            })
            .collect();
        drop(inner);
        for event in telemetry {
            self.telemetry_log.restore(restored_event(event));
        }
        self.telemetry_log.expire(now);
        self.next_id
            .fetch_max(max_id + 1, std::sync::atomic::Ordering::Relaxed);
        if let Some(store) = self.store.get() {
            store.record(|mirror, changes| {
                mirror.queues.extend(queues);
                for (n, record) in kept {
                    mirror.feedback.insert(n, record);
                    mirror.next_feedback = mirror.next_feedback.max(n + 1);
                }
                for n in dropped {
                    mirror.next_feedback = mirror.next_feedback.max(n + 1);
                    changes.push(Change::Del {
                        key: records::feedback_key(n),
                    });
                }
            });
        }
        self.sweep_wake.notify_one();
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

fn parse<T: serde::de::DeserializeOwned>(value: &str) -> Option<T> {
    serde_json::from_str(value).ok()
}

/// The number an etag encodes (base64 of `900000000 + n`, see `identities::encode_etag`).
fn id_of(etag: &str) -> u64 {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(etag)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |n| n.saturating_sub(900_000_000))
}

/// The number a generation id carries (`638000000000000000 + n`).
fn generation_number(generation_id: &str) -> u64 {
    generation_id
        .parse::<u64>()
        .map_or(0, |n| n.saturating_sub(638_000_000_000_000_000))
}

fn restore_device(inner: &mut Inner, d: StoredDevice, now: SystemTime) {
    let (Some(primary_key), Some(secondary_key)) = (d.primary_key.key(), d.secondary_key.key())
    else {
        tracing::warn!(device = %d.device_id, "state directory: device skipped, its keys are not base64");
        return;
    };
    let authentication = match d.authentication.as_str() {
        "selfSigned" => DeviceAuthentication::SelfSigned {
            primary_thumbprint: d.primary_thumbprint,
            secondary_thumbprint: d.secondary_thumbprint,
        },
        "certificateAuthority" => DeviceAuthentication::CertificateAuthority,
        _ => DeviceAuthentication::Sas,
    };
    let record = DeviceRecord {
        device_id: d.device_id.clone(),
        generation_id: d.generation_id,
        etag: d.etag,
        status: if d.enabled {
            DeviceStatus::Enabled
        } else {
            DeviceStatus::Disabled
        },
        status_reason: d.status_reason,
        primary_key,
        secondary_key,
        iot_edge: d.iot_edge,
        authentication,
        connected: false,
        connection_state_updated: now,
        status_updated: records::from_millis(d.status_updated),
        last_activity: now,
        c2d_count: 0,
    };
    let modules = inner
        .devices
        .remove(&d.device_id)
        .map(|old| old.modules)
        .unwrap_or_default();
    inner.devices.insert(
        d.device_id,
        Device {
            record,
            queue: C2dQueue::default(),
            slot: SessionSlot::new(now),
            modules,
        },
    );
}

fn restore_module(inner: &mut Inner, m: StoredModule, now: SystemTime) {
    let (Some(primary_key), Some(secondary_key)) = (m.primary_key.key(), m.secondary_key.key())
    else {
        return;
    };
    let Some(device) = inner.devices.get_mut(&m.device_id) else {
        return;
    };
    device.modules.insert(
        m.module_id.clone(),
        Module {
            record: ModuleRecord {
                device_id: m.device_id,
                module_id: m.module_id,
                generation_id: m.generation_id,
                etag: m.etag,
                primary_key,
                secondary_key,
                managed_by: m.managed_by,
                connected: false,
                connection_state_updated: now,
                last_activity: now,
            },
            slot: SessionSlot::new(now),
        },
    );
}

/// `twin/{device}/{module}` -> the identity.
fn identity_of_twin_key(key: &str) -> Option<Identity> {
    let rest = key.strip_prefix("twin/")?;
    let (device, module) = rest.split_once('/')?;
    let device = crate::local_hub::store::from_key_part(device);
    Some(if module.is_empty() {
        Identity::device(device)
    } else {
        Identity::module(device, crate::local_hub::store::from_key_part(module))
    })
}

fn restore_twin(inner: &mut Inner, key: &str, twin: TwinRecord) {
    if let Some(identity) = identity_of_twin_key(key) {
        inner.twins.insert(identity, twin);
    }
}

fn restore_c2d(inner: &mut Inner, key: &str, c: StoredC2d) {
    let Some((device, token)) = key
        .strip_prefix("c2d/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return;
    };
    let device_id = crate::local_hub::store::from_key_part(device);
    let Ok(token) = token.parse::<u64>() else {
        return;
    };
    if let Some(device) = inner.devices.get_mut(&device_id) {
        device.queue.restore(
            token,
            c.message.message(),
            records::from_millis(c.expires_at),
            c.delivery_count,
        );
        device.record.c2d_count = device.queue.len();
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

fn restored_event(t: StoredTelemetry) -> TelemetryEvent {
    let scope = match t.auth_scope.as_str() {
        "module" => "module",
        "hub" => "hub",
        _ => "device",
    };
    let kind = match t.auth_kind.as_str() {
        "symkey" => "symkey",
        "x509" => "x509",
        _ => "sas",
    };
    TelemetryEvent {
        partition: t.partition,
        sequence_number: t.sequence_number,
        offset: t.offset,
        enqueued_time: records::from_millis(t.enqueued_time),
        stamps: Stamps {
            device_id: t.device_id,
            module_id: t.module_id,
            auth_method: AuthMethod { scope, kind },
            generation_id: t.generation_id,
        },
        source: TELEMETRY_SOURCE,
        message: t.message.message(),
    }
}
