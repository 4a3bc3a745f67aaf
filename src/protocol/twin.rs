//! The twin JSON model, shared by the device client, the service client and the local hub.
//!
//! - [`TwinProperties`] is the `{"desired": {…}, "reported": {…}}` document a device reads with
//!   `$iothub/twin/GET` (Microsoft Learn, "Communicate with an IoT hub using the MQTT
//!   protocol", "Retrieving a device twin's properties") and the `properties` member of the
//!   service's twin; each side carries its `$version` (and, on the service side, `$metadata`).
//! - [`Twin`] is the service's twin document (swagger `Twin` in `azure-iot-sdk-node`,
//!   `service/src/service.json`; `azure-iot-hub` for Python,
//!   `protocol/models/twin_py3.py`).
//! - [`TwinPatch`] is what a service sends to `PATCH /twins/{id}`: tags and desired
//!   properties to merge.
//! - [`merge_patch`] applies a patch: `null` deletes a member, objects merge member by member,
//!   anything else replaces (Microsoft Learn, "Understand and use device twins in IoT Hub",
//!   "Back-end operations": "Partially update …").
//! - [`check_patch`] and [`check_collection`] enforce IoT Hub's key rules and limits, with the
//!   numbers in [`TwinLimits`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::registry_json::{DeviceConnectionState, DeviceStatus};

/// A set of twin properties or tags: a JSON object.
pub type TwinCollection = Map<String, Value>;

/// The member every property side carries its version in.
pub const VERSION_KEY: &str = "$version";
/// The member the service side carries each property's update times in.
pub const METADATA_KEY: &str = "$metadata";

/// The desired and reported property documents, each with its `$version` member.
///
/// This is the body of a device's twin GET response and the `properties` member of the
/// service's [`Twin`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TwinProperties {
    /// The desired properties (written by the back end), with `$version`.
    #[serde(default)]
    pub desired: TwinCollection,
    /// The reported properties (written by the device), with `$version`.
    #[serde(default)]
    pub reported: TwinCollection,
}

impl TwinProperties {
    /// Empty documents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents with the given desired and reported properties.
    pub fn with(desired: TwinCollection, reported: TwinCollection) -> Self {
        TwinProperties { desired, reported }
    }

    /// The desired side's `$version`, if present.
    pub fn desired_version(&self) -> Option<u64> {
        collection_version(&self.desired)
    }

    /// The reported side's `$version`, if present.
    pub fn reported_version(&self) -> Option<u64> {
        collection_version(&self.reported)
    }
}

/// The `$version` member of a property collection (or of a desired-properties patch).
pub fn collection_version(collection: &TwinCollection) -> Option<u64> {
    collection.get(VERSION_KEY).and_then(Value::as_u64)
}

/// A twin as the service reads and writes it (swagger `Twin`).
///
/// The identity fields (status, connection state, …) are read-only: the hub fills them in
/// its answers and ignores them in requests. Serialized, the `None` fields are left out, so a
/// `Twin` is also a valid `PUT /twins/{id}` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Twin {
    /// The device id.
    #[serde(default)]
    pub device_id: String,
    /// The module id, for a module twin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The twin's etag, for `If-Match` on updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The etag of the device (or module) identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_etag: Option<String>,
    /// The twin's version: it grows with every change of the desired or reported properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Whether the identity is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeviceStatus>,
    /// Why the status was set, if the back end said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_update_time: Option<String>,
    /// Whether the identity is connected now (read without regard to case: the twin sample
    /// in "Understand and use device twins in IoT Hub" writes `connected`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "connection_state_any_case"
    )]
    pub connection_state: Option<DeviceConnectionState>,
    /// When the identity last connected or sent something (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// Cloud-to-device messages queued for the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_message_count: Option<u64>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_type: Option<String>,
    /// Tags: read and written by the back end only.
    #[serde(default)]
    pub tags: TwinCollection,
    /// Desired and reported properties.
    #[serde(default)]
    pub properties: TwinProperties,
}

impl Twin {
    /// A device's twin with no tags and no properties (a body for `replace_twin`).
    pub fn new(device_id: impl Into<String>) -> Self {
        Twin {
            device_id: device_id.into(),
            ..Self::default()
        }
    }

    /// A module's twin with no tags and no properties.
    pub fn for_module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Twin {
            module_id: Some(module_id.into()),
            ..Twin::new(device_id)
        }
    }

    /// With these tags.
    pub fn with_tags(mut self, tags: TwinCollection) -> Self {
        self.tags = tags;
        self
    }

    /// With these desired properties.
    pub fn with_desired(mut self, desired: TwinCollection) -> Self {
        self.properties.desired = desired;
        self
    }
}

fn connection_state_any_case<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<DeviceConnectionState>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.and_then(|text| {
        if text.eq_ignore_ascii_case("connected") {
            Some(DeviceConnectionState::Connected)
        } else if text.eq_ignore_ascii_case("disconnected") {
            Some(DeviceConnectionState::Disconnected)
        } else {
            None
        }
    }))
}

/// A partial update of a twin (`PATCH /twins/{id}`): tags and desired properties to merge.
///
/// Within each, a `null` member deletes the property; `desired` set to JSON `null` deletes
/// every desired property (what the official Node SDK's end-to-end twin tests do).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct TwinPatch {
    /// Tags to merge, or `Value::Null` to delete them all; `None` leaves tags alone.
    pub tags: Option<Value>,
    /// Desired properties to merge, or `Value::Null` to delete them all.
    pub desired: Option<Value>,
}

impl TwinPatch {
    /// A patch that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges these tags.
    pub fn tags(mut self, tags: Value) -> Self {
        self.tags = Some(tags);
        self
    }

    /// Merges these desired properties.
    pub fn desired(mut self, desired: Value) -> Self {
        self.desired = Some(desired);
        self
    }

    /// The request body: `{"tags": …, "properties": {"desired": …}}`.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        if let Some(tags) = &self.tags {
            body.insert("tags".into(), tags.clone());
        }
        if let Some(desired) = &self.desired {
            let mut properties = Map::new();
            properties.insert("desired".into(), desired.clone());
            body.insert("properties".into(), Value::Object(properties));
        }
        Value::Object(body)
    }
}

/// Which part of a twin a document or patch is for: each has its own size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TwinSection {
    /// Tags.
    Tags,
    /// Desired properties.
    Desired,
    /// Reported properties.
    Reported,
}

impl TwinSection {
    fn name(self) -> &'static str {
        match self {
            TwinSection::Tags => "tags",
            TwinSection::Desired => "desired properties",
            TwinSection::Reported => "reported properties",
        }
    }
}

/// IoT Hub's twin limits (Microsoft Learn, "Understand and use device twins in IoT Hub",
/// "Tags and properties format", "Device twin size" and "Device twin depth"; the same numbers
/// are in the Python service SDK's model docs, `azure-iot-hub`,
/// `protocol/models/twin_properties_py3.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwinLimits;

impl TwinLimits {
    /// Tags: 8 KB.
    pub const TAGS_BYTES: usize = 8 * 1024;
    /// Desired properties: 32 KB.
    pub const DESIRED_BYTES: usize = 32 * 1024;
    /// Reported properties: 32 KB.
    pub const REPORTED_BYTES: usize = 32 * 1024;
    /// Nesting depth of objects: 10 (a top-level member is at depth 1).
    pub const MAX_DEPTH: usize = 10;
    /// A key: 1 KB of UTF-8.
    pub const KEY_BYTES: usize = 1024;
    /// A string value: 4 KB of UTF-8.
    pub const STRING_BYTES: usize = 4 * 1024;
    /// The smallest integer allowed: -2^52.
    pub const MIN_INTEGER: i64 = -4_503_599_627_370_496;
    /// The largest integer allowed: 2^52 - 1.
    pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;

    /// The size limit of a section.
    pub fn bytes(section: TwinSection) -> usize {
        match section {
            TwinSection::Tags => Self::TAGS_BYTES,
            TwinSection::Desired => Self::DESIRED_BYTES,
            TwinSection::Reported => Self::REPORTED_BYTES,
        }
    }
}

fn invalid(text: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidMessage, text)
}

/// Checks a patch (or a whole document) written by a client: keys, values and depth. `null`
/// members are allowed (they delete); `$`-prefixed keys are refused, so a caller drops the
/// read-only top-level `$version` and `$metadata` first (see [`strip_read_only`]). Error:
/// [`ErrorKind::InvalidMessage`] saying which rule is broken.
pub fn check_patch(section: TwinSection, patch: &TwinCollection) -> Result<()> {
    check_members(section, patch, 1)
}

fn check_members(section: TwinSection, members: &TwinCollection, depth: usize) -> Result<()> {
    if depth > TwinLimits::MAX_DEPTH {
        return Err(invalid(format!(
            "the {} are nested deeper than {} levels",
            section.name(),
            TwinLimits::MAX_DEPTH
        )));
    }
    for (key, value) in members {
        check_key(section, key)?;
        check_value(section, key, value, depth)?;
    }
    Ok(())
}

/// Key rules: at most 1 KB of UTF-8, no C0 or C1 control characters, no `.`, `$` or space.
pub fn check_key(section: TwinSection, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(format!("the {} have an empty key", section.name())));
    }
    if key.len() > TwinLimits::KEY_BYTES {
        return Err(invalid(format!(
            "a key of the {} is longer than {} bytes",
            section.name(),
            TwinLimits::KEY_BYTES
        )));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| c.is_control() || matches!(c, '.' | '$' | ' '))
    {
        return Err(invalid(format!(
            "the key '{}' of the {} contains {bad:?}: keys may not contain '.', '$', spaces or \
             control characters",
            key.escape_debug(),
            section.name()
        )));
    }
    Ok(())
}

fn check_value(section: TwinSection, key: &str, value: &Value, depth: usize) -> Result<()> {
    match value {
        Value::Object(members) => check_members(section, members, depth + 1),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| check_value(section, key, item, depth + 1)),
        Value::String(text) if text.len() > TwinLimits::STRING_BYTES => Err(invalid(format!(
            "the value of '{}' in the {} is longer than {} bytes",
            key.escape_debug(),
            section.name(),
            TwinLimits::STRING_BYTES
        ))),
        Value::Number(n) => {
            let in_range = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => (TwinLimits::MIN_INTEGER..=TwinLimits::MAX_INTEGER).contains(&i),
                (None, Some(_)) => false,
                (None, None) => true, // a float
            };
            if in_range {
                Ok(())
            } else {
                Err(invalid(format!(
                    "the integer value of '{}' in the {} is outside [-2^52, 2^52 - 1]",
                    key.escape_debug(),
                    section.name()
                )))
            }
        }
        _ => Ok(()),
    }
}

/// The size IoT Hub counts for a collection: for each member, its key's length plus its
/// value's size, where strings count their characters (without C0/C1 controls), numbers 8
/// bytes, booleans 4, and objects the sum of their members; `$`-prefixed members (`$version`,
/// `$metadata`) are not counted (Microsoft Learn, "Understand and use device twins in IoT Hub",
/// "Device twin size").
pub fn collection_size(collection: &TwinCollection) -> usize {
    collection
        .iter()
        .filter(|(key, _)| !key.starts_with('$'))
        .map(|(key, value)| text_size(key) + value_size(value))
        .sum()
}

fn text_size(text: &str) -> usize {
    text.chars().filter(|c| !c.is_control()).count()
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(text) => text_size(text),
        Value::Array(items) => items.iter().map(value_size).sum(),
        Value::Object(members) => members
            .iter()
            .map(|(key, value)| text_size(key) + value_size(value))
            .sum(),
    }
}

/// Checks a whole collection (after a patch was merged) against the section's size limit.
/// Error: [`ErrorKind::MessageTooLarge`].
pub fn check_collection(section: TwinSection, collection: &TwinCollection) -> Result<()> {
    let size = collection_size(collection);
    let limit = TwinLimits::bytes(section);
    if size > limit {
        return Err(Error::new(
            ErrorKind::MessageTooLarge,
            format!(
                "the {} would be {size} bytes, over IoT Hub's limit of {limit} bytes",
                section.name()
            ),
        ));
    }
    Ok(())
}

/// Merges `patch` into `target`: a `null` member deletes, an object merges into an object
/// member (replacing a non-object one), anything else replaces. Returns whether `target`
/// changed.
pub fn merge_patch(target: &mut TwinCollection, patch: &TwinCollection) -> bool {
    let mut changed = false;
    for (key, value) in patch {
        match value {
            Value::Null => changed |= target.remove(key).is_some(),
            Value::Object(members) => match target.get_mut(key) {
                Some(Value::Object(existing)) => changed |= merge_patch(existing, members),
                _ => {
                    let mut fresh = Map::new();
                    merge_patch(&mut fresh, members);
                    target.insert(key.clone(), Value::Object(fresh));
                    changed = true;
                }
            },
            other => {
                if target.get(key) != Some(other) {
                    target.insert(key.clone(), other.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Removes the read-only top-level `$version` and `$metadata` members that a collection read
/// from a twin carries, so that it can be written back.
pub fn strip_read_only(collection: &mut TwinCollection) {
    collection.remove(VERSION_KEY);
    collection.remove(METADATA_KEY);
}

/// Reads a JSON object from a request or message body. Error: [`ErrorKind::InvalidMessage`].
pub fn parse_collection(body: &[u8], what: &str) -> Result<TwinCollection> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(members)) => Ok(members),
        Ok(_) => Err(invalid(format!("the {what} is not a JSON object"))),
        Err(e) => Err(invalid(format!("the {what} is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests;
