//! One twin per identity (devices and modules): tags, desired and reported properties with
//! their `$version`s and `$metadata`, the twin's etag and version.
//!
//! Counters (Microsoft Learn, "Understand the identity registry in your IoT hub", the device
//! lifecycle notification's twin body, and the twins captured in `azure-iot-cli-extension`
//! `tests/central/json/device_twin.json`): a new twin has etag `AAAAAAAAAAE=` (base64 of the
//! 8-byte big-endian counter 1), desired and reported `$version` 1 and `version` 2; `version`
//! is the sum of the two `$version`s; every accepted desired update adds exactly 1 to the
//! desired `$version` (what the Node SDK's `e2etests/test/twin_e2e_tests.js` waits for) and
//! every reported update 1 to the reported `$version`; the etag changes with every tag or
//! desired write (the back end's writes, which `If-Match` protects).
//!
//! `$metadata` mirrors the properties: each member, and the root, has `$lastUpdated`, and on
//! the desired side also `$lastUpdatedVersion` (Microsoft Learn, "Understand and use device
//! twins in IoT Hub", "Metadata").
//!
//! A twin is created with its identity and dropped with it; a re-created identity (a new
//! generation id) gets a new twin.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};
use crate::protocol::{
    METADATA_KEY, TwinCollection, TwinProperties, TwinSection, VERSION_KEY, check_collection,
    check_patch, desired_patch_topic, expiry_time, merge_patch, strip_read_only,
};

use super::identities::{DeviceStatus, Identity};
use super::{HubState, Inner, Outbound};

/// A twin as the hub keeps it (and the state directory stores it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct TwinRecord {
    /// The generation of the identity this twin belongs to.
    generation_id: String,
    tags: TwinCollection,
    desired: TwinCollection,
    reported: TwinCollection,
    desired_version: u64,
    reported_version: u64,
    desired_metadata: TwinCollection,
    reported_metadata: TwinCollection,
    etag_counter: u64,
}

/// A twin with the identity's fields, for the HTTPS answer.
#[derive(Clone, Debug)]
pub(crate) struct TwinView {
    pub identity: Identity,
    pub etag: String,
    pub device_etag: String,
    pub version: u64,
    pub status: DeviceStatus,
    pub status_reason: Option<String>,
    pub status_updated: SystemTime,
    pub connected: bool,
    pub last_activity: SystemTime,
    pub c2d_count: usize,
    pub iot_edge: bool,
    pub tags: TwinCollection,
    /// With `$metadata` and `$version`.
    pub desired: TwinCollection,
    /// With `$metadata` and `$version`.
    pub reported: TwinCollection,
}

/// What a back-end write asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TwinWrite {
    /// `PATCH`: merge; `Some(Value::Null)` clears the section.
    Patch {
        tags: Option<Value>,
        desired: Option<Value>,
    },
    /// `PUT`: replace tags and desired properties.
    Replace {
        tags: TwinCollection,
        desired: TwinCollection,
    },
}

impl TwinRecord {
    fn new(generation_id: &str, now: SystemTime) -> Self {
        let stamp = metadata_stamp(now, None);
        TwinRecord {
            generation_id: generation_id.to_owned(),
            tags: Map::new(),
            desired: Map::new(),
            reported: Map::new(),
            desired_version: 1,
            reported_version: 1,
            desired_metadata: stamp.clone(),
            reported_metadata: stamp,
            etag_counter: 1,
        }
    }

    fn version(&self) -> u64 {
        self.desired_version + self.reported_version
    }

    fn etag(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.etag_counter.to_be_bytes())
    }

    /// The `{desired, reported}` document a device reads, each with its `$version`.
    fn device_document(&self) -> TwinProperties {
        TwinProperties::with(
            with_version(&self.desired, self.desired_version, None),
            with_version(&self.reported, self.reported_version, None),
        )
    }
}

/// A collection with `$metadata` (when given) and `$version` added.
fn with_version(
    collection: &TwinCollection,
    version: u64,
    metadata: Option<&TwinCollection>,
) -> TwinCollection {
    let mut out = collection.clone();
    if let Some(metadata) = metadata {
        out.insert(METADATA_KEY.into(), Value::Object(metadata.clone()));
    }
    out.insert(VERSION_KEY.into(), Value::from(version));
    out
}

/// `{"$lastUpdated": …}`, with `$lastUpdatedVersion` on the desired side.
fn metadata_stamp(now: SystemTime, version: Option<u64>) -> TwinCollection {
    let mut stamp = Map::new();
    let text = expiry_time::format(now).unwrap_or_else(|_| "0001-01-01T00:00:00Z".into());
    stamp.insert("$lastUpdated".into(), Value::String(text));
    if let Some(version) = version {
        stamp.insert("$lastUpdatedVersion".into(), Value::from(version));
    }
    stamp
}

/// Updates `metadata` for a merged `patch`: deleted members lose theirs, written ones get
/// `stamp`, objects recurse; the level itself is stamped too.
pub(super) fn stamp_metadata(
    metadata: &mut TwinCollection,
    patch: &TwinCollection,
    stamp: &TwinCollection,
) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                metadata.remove(key);
            }
            Value::Object(members) => {
                let entry = metadata
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(nested) = entry {
                    stamp_metadata(nested, members, stamp);
                }
            }
            _ => {
                metadata.insert(key.clone(), Value::Object(stamp.clone()));
            }
        }
    }
    metadata.extend(stamp.clone());
}

/// A patch that takes `old` to `new` at the top level: every member of `new`, and `null` for
/// every member only `old` has.
fn replacement_patch(old: &TwinCollection, new: &TwinCollection) -> TwinCollection {
    let mut patch = new.clone();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

/// A section of a PATCH body: an object to merge, or `null` to clear the section.
fn patch_section(
    section: TwinSection,
    value: Value,
    current: &TwinCollection,
) -> Result<TwinCollection, Error> {
    match value {
        Value::Null => Ok(current.keys().map(|k| (k.clone(), Value::Null)).collect()),
        Value::Object(mut members) => {
            strip_read_only(&mut members);
            check_patch(section, &members)?;
            Ok(members)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidMessage,
            "'tags' and 'properties.desired' in a twin patch must be JSON objects or null",
        )),
    }
}

/// `patch` merged into a copy of `current`, checked against the section's size.
fn merged(
    section: TwinSection,
    current: &TwinCollection,
    patch: &TwinCollection,
) -> Result<TwinCollection, Error> {
    let mut next = current.clone();
    merge_patch(&mut next, patch);
    check_collection(section, &next)?;
    Ok(next)
}

impl Inner {
    /// The identity's twin, created when missing or left from an earlier generation. `None`
    /// if the identity is not registered.
    fn twin_mut(&mut self, identity: &Identity, now: SystemTime) -> Option<&mut TwinRecord> {
        let generation = self.generation_of(identity)?;
        let twin = self
            .twins
            .entry(identity.clone())
            .or_insert_with(|| TwinRecord::new(&generation, now));
        if twin.generation_id != generation {
            *twin = TwinRecord::new(&generation, now);
        }
        Some(twin)
    }

    pub(super) fn generation_of(&self, identity: &Identity) -> Option<String> {
        let device = self.devices.get(&identity.device_id)?;
        match &identity.module_id {
            None => Some(device.record.generation_id.clone()),
            Some(module) => device
                .modules
                .get(module)
                .map(|m| m.record.generation_id.clone()),
        }
    }

    /// Drops the twins and subscriptions of a device and its modules (or of one module).
    pub(super) fn forget_twins(&mut self, device_id: &str, module_id: Option<&str>) {
        let gone = |identity: &Identity| {
            identity.device_id == device_id
                && (module_id.is_none() || identity.module_id.as_deref() == module_id)
        };
        self.twins.retain(|identity, _| !gone(identity));
        self.feature_subscriptions
            .retain(|identity, _| !gone(identity));
    }

    /// Pushes a desired patch to the identity's session if it asked for them.
    fn push_desired(&self, identity: &Identity, patch: &TwinCollection, version: u64) {
        let Some(qos) = self
            .feature_subscriptions
            .get(identity)
            .and_then(|s| s.desired)
        else {
            return;
        };
        let Some(slot) = self.slot(identity) else {
            return;
        };
        let body = with_version(patch, version, None);
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        slot.push(Outbound::Publish {
            topic: desired_patch_topic(version),
            payload: Bytes::from(payload),
            qos,
        });
    }

    fn view(&mut self, identity: &Identity, now: SystemTime) -> Option<TwinView> {
        let twin = self.twin_mut(identity, now)?.clone();
        let device = self.devices.get(&identity.device_id)?;
        let record = device.snapshot();
        let (device_etag, connected, last_activity) = match &identity.module_id {
            None => (record.etag.clone(), record.connected, record.last_activity),
            Some(module) => {
                let module = device.modules.get(module)?.snapshot();
                (module.etag, module.connected, module.last_activity)
            }
        };
        Some(TwinView {
            identity: identity.clone(),
            etag: twin.etag(),
            device_etag,
            version: twin.version(),
            status: record.status,
            status_reason: record.status_reason.clone(),
            status_updated: record.status_updated,
            connected,
            last_activity,
            c2d_count: if identity.module_id.is_none() {
                record.c2d_count
            } else {
                0
            },
            iot_edge: record.iot_edge,
            tags: twin.tags.clone(),
            desired: with_version(
                &twin.desired,
                twin.desired_version,
                Some(&twin.desired_metadata),
            ),
            reported: with_version(
                &twin.reported,
                twin.reported_version,
                Some(&twin.reported_metadata),
            ),
        })
    }
}

/// The error for an identity that is not registered.
pub(crate) fn identity_not_found(identity: &Identity) -> Error {
    match &identity.module_id {
        None => Error::new(
            ErrorKind::DeviceNotFound,
            format!("device '{}' is not registered", identity.device_id),
        ),
        Some(module) => Error::new(
            ErrorKind::ModuleNotFound,
            format!(
                "module '{module}' of device '{}' is not registered",
                identity.device_id
            ),
        ),
    }
}

impl HubState {
    /// The twin with the identity's fields. Errors: [`ErrorKind::DeviceNotFound`],
    /// [`ErrorKind::ModuleNotFound`].
    pub fn twin(&self, identity: &Identity) -> Result<TwinView, Error> {
        let now = self.clock.now();
        self.lock()
            .view(identity, now)
            .ok_or_else(|| identity_not_found(identity))
    }

    /// The `{desired, reported}` document a device reads with `$iothub/twin/GET`.
    pub fn device_twin(&self, identity: &Identity) -> Result<TwinProperties, Error> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.touch(identity, now);
        inner
            .twin_mut(identity, now)
            .map(|twin| twin.device_document())
            .ok_or_else(|| identity_not_found(identity))
    }

    /// Merges a device's reported-properties patch; returns the new reported `$version`.
    ///
    /// Errors: [`ErrorKind::InvalidMessage`] (key rules, depth, values),
    /// [`ErrorKind::MessageTooLarge`] (over 32 KB), [`ErrorKind::DeviceNotFound`].
    pub fn update_reported(
        &self,
        identity: &Identity,
        mut patch: TwinCollection,
    ) -> Result<u64, Error> {
        strip_read_only(&mut patch);
        check_patch(TwinSection::Reported, &patch)?;
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.touch(identity, now);
        let twin = inner
            .twin_mut(identity, now)
            .ok_or_else(|| identity_not_found(identity))?;
        let next = merged(TwinSection::Reported, &twin.reported, &patch)?;
        twin.reported = next;
        twin.reported_version += 1;
        stamp_metadata(
            &mut twin.reported_metadata,
            &patch,
            &metadata_stamp(now, None),
        );
        let version = twin.reported_version;
        self.persist_twin(&inner, identity);
        Ok(version)
    }

    /// A back-end write of tags and desired properties, checked against `if_match` (`*` or
    /// the twin's etag). A desired change adds 1 to the desired `$version` and is pushed to
    /// the identity's session if it subscribed to desired patches.
    ///
    /// Errors: [`ErrorKind::InvalidMessage`], [`ErrorKind::MessageTooLarge`],
    /// [`ErrorKind::PreconditionFailed`], [`ErrorKind::DeviceNotFound`],
    /// [`ErrorKind::ModuleNotFound`].
    pub fn write_twin(
        &self,
        identity: &Identity,
        write: TwinWrite,
        if_match: Option<&str>,
    ) -> Result<TwinView, Error> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let twin = inner
            .twin_mut(identity, now)
            .ok_or_else(|| identity_not_found(identity))?;
        if let Some(tag) = if_match {
            if !super::etag_matches(tag, &twin.etag()) {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    "the If-Match etag is not the twin's current etag: read the twin again",
                ));
            }
        }
        let (tags_patch, desired_patch) = match write {
            TwinWrite::Patch { tags, desired } => (
                tags.map(|t| patch_section(TwinSection::Tags, t, &twin.tags))
                    .transpose()?,
                desired
                    .map(|d| patch_section(TwinSection::Desired, d, &twin.desired))
                    .transpose()?,
            ),
            TwinWrite::Replace {
                mut tags,
                mut desired,
            } => {
                strip_read_only(&mut tags);
                strip_read_only(&mut desired);
                check_patch(TwinSection::Tags, &tags)?;
                check_patch(TwinSection::Desired, &desired)?;
                (
                    Some(replacement_patch(&twin.tags, &tags)),
                    Some(replacement_patch(&twin.desired, &desired)),
                )
            }
        };
        let tags = tags_patch
            .as_ref()
            .map(|p| merged(TwinSection::Tags, &twin.tags, p))
            .transpose()?;
        let desired = desired_patch
            .as_ref()
            .map(|p| merged(TwinSection::Desired, &twin.desired, p))
            .transpose()?;
        let mut wrote = false;
        if let Some(tags) = tags {
            wrote |= tags_patch.as_ref().is_some_and(|p| !p.is_empty());
            twin.tags = tags;
        }
        let mut pushed = None;
        if let (Some(desired), Some(patch)) = (desired, desired_patch) {
            if !patch.is_empty() {
                twin.desired = desired;
                twin.desired_version += 1;
                let version = twin.desired_version;
                stamp_metadata(
                    &mut twin.desired_metadata,
                    &patch,
                    &metadata_stamp(now, Some(version)),
                );
                pushed = Some((patch, version));
                wrote = true;
            }
        }
        if wrote {
            twin.etag_counter += 1;
        }
        if let Some((patch, version)) = pushed {
            inner.push_desired(identity, &patch, version);
        }
        self.persist_twin(&inner, identity);
        inner
            .view(identity, now)
            .ok_or_else(|| identity_not_found(identity))
    }
}

/// Per-identity maps kept in [`Inner`].
pub(super) type Twins = HashMap<Identity, TwinRecord>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> TwinCollection {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn metadata_follows_the_properties() {
        let mut metadata = Map::new();
        let stamp = object(json!({"$lastUpdated": "t1", "$lastUpdatedVersion": 2}));
        stamp_metadata(
            &mut metadata,
            &object(json!({"a": 1, "b": {"c": 2}})),
            &stamp,
        );
        assert_eq!(
            Value::Object(metadata.clone()),
            json!({
                "$lastUpdated": "t1", "$lastUpdatedVersion": 2,
                "a": {"$lastUpdated": "t1", "$lastUpdatedVersion": 2},
                "b": {"$lastUpdated": "t1", "$lastUpdatedVersion": 2,
                      "c": {"$lastUpdated": "t1", "$lastUpdatedVersion": 2}}
            })
        );
        let stamp = object(json!({"$lastUpdated": "t2", "$lastUpdatedVersion": 3}));
        stamp_metadata(&mut metadata, &object(json!({"a": null, "b": 5})), &stamp);
        assert_eq!(
            Value::Object(metadata),
            json!({
                "$lastUpdated": "t2", "$lastUpdatedVersion": 3,
                "b": {"$lastUpdated": "t2", "$lastUpdatedVersion": 3}
            })
        );
    }

    #[test]
    fn a_replacement_deletes_what_is_gone() {
        let patch = replacement_patch(
            &object(json!({"a": 1, "b": 2})),
            &object(json!({"b": 3, "c": 4})),
        );
        assert_eq!(Value::Object(patch), json!({"a": null, "b": 3, "c": 4}));
    }

    #[test]
    fn new_twins_have_the_documented_counters() {
        let twin = TwinRecord::new("g", SystemTime::UNIX_EPOCH);
        assert_eq!(twin.etag(), "AAAAAAAAAAE=");
        assert_eq!(twin.version(), 2);
        let document = serde_json::to_value(twin.device_document()).unwrap();
        assert_eq!(
            document,
            json!({"desired": {"$version": 1}, "reported": {"$version": 1}})
        );
    }
}
