//! The start of a hub with a state directory: what the directory held, put back into an empty
//! [`HubState`] (see `persist` for the other direction and `local_hub::store` for the files).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::local_hub::c2d_queue::C2dQueue;
use crate::local_hub::store::records::{
    self, StoredC2d, StoredDevice, StoredFeedback, StoredModule, StoredTelemetry,
};
use crate::local_hub::store::{Change, from_key_part};
use crate::local_hub::telemetry_log::{AuthMethod, Stamps, TELEMETRY_SOURCE, TelemetryEvent};

use super::identities::{Device, DeviceAuthentication, DeviceRecord, Module, ModuleRecord};
use super::scopes::DeviceScopes;
use super::sessions::SessionSlot;
use super::twins::TwinRecord;
use super::{DeviceStatus, HubState, Identity, Inner};

impl HubState {
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
        // Restored messages expire on time: file each queue's next deadline.
        let ids: Vec<String> = inner.devices.keys().cloned().collect();
        for id in &ids {
            self.file_c2d_deadline(&mut inner, id);
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
        scopes: DeviceScopes {
            device_scope: d.device_scope,
            parent_scopes: d.parent_scopes,
        },
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
    let device = from_key_part(device);
    Some(if module.is_empty() {
        Identity::device(device)
    } else {
        Identity::module(device, from_key_part(module))
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
    let device_id = from_key_part(device);
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
