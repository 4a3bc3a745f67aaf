//! The stored forms of what the state directory keeps, as JSON values, and their keys.
//!
//! Keys: `hub`; `dev/{device}`; `mod/{device}/{module}`; `twin/{device}/` and
//! `twin/{device}/{module}`; `c2d/{device}/{token}`; `fb/{n}`; `tel/{partition}/{sequence}`
//! (numbers zero-padded so that keys sort in order; ids escaped by [`key_part`]). Times are
//! milliseconds since the Unix epoch. Keys are base64, as in connection strings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::key_part;
use crate::auth::SasKey;
use crate::message::{Ack, Message};

/// The key of the hub's own record.
pub(crate) const HUB_KEY: &str = "hub";

/// `dev/{device}`.
pub(crate) fn device_key(device_id: &str) -> String {
    format!("dev/{}", key_part(device_id))
}

/// `mod/{device}/`: every module of a device.
pub(crate) fn modules_prefix(device_id: &str) -> String {
    format!("mod/{}/", key_part(device_id))
}

/// `mod/{device}/{module}`.
pub(crate) fn module_key(device_id: &str, module_id: &str) -> String {
    format!("{}{}", modules_prefix(device_id), key_part(module_id))
}

/// `twin/{device}/`: the twins of a device and its modules (the device's own key is this).
pub(crate) fn twins_prefix(device_id: &str) -> String {
    format!("twin/{}/", key_part(device_id))
}

/// `twin/{device}/{module}`, or `twin/{device}/` for the device's own twin.
pub(crate) fn twin_key(device_id: &str, module_id: Option<&str>) -> String {
    format!(
        "{}{}",
        twins_prefix(device_id),
        module_id.map(key_part).unwrap_or_default()
    )
}

/// `c2d/{device}/`: a device's queue.
pub(crate) fn queue_prefix(device_id: &str) -> String {
    format!("c2d/{}/", key_part(device_id))
}

/// `c2d/{device}/{token}`.
pub(crate) fn c2d_key(device_id: &str, token: u64) -> String {
    format!("{}{token:020}", queue_prefix(device_id))
}

/// `fb/{n}`.
pub(crate) fn feedback_key(n: u64) -> String {
    format!("fb/{n:020}")
}

/// `tel/{partition}/{sequence}`.
pub(crate) fn telemetry_key(partition: u32, sequence: i64) -> String {
    format!("tel/{partition:05}/{sequence:020}")
}

/// Milliseconds since the epoch.
pub(crate) fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the epoch.
pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A key as stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct StoredKey(String);

impl StoredKey {
    /// The stored form of `key`.
    pub fn of(key: &SasKey) -> Self {
        StoredKey(key.to_base64().to_owned())
    }

    /// The key; `None` if the file was edited into something that is not a key.
    pub fn key(&self) -> Option<SasKey> {
        SasKey::from_base64(&self.0).ok()
    }
}

/// A shared access policy's keys (its permissions follow from its name).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredPolicy {
    pub name: String,
    pub primary_key: StoredKey,
    pub secondary_key: StoredKey,
}

/// The ports the hub listened on, reused by a restart that asks for port 0.
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct StoredPorts {
    pub mqtt: u16,
    pub https: u16,
    pub amqp: u16,
    pub event_hubs: u16,
    pub event_hubs_emulator: u16,
}

/// The hub itself: its name, CA, policies and ports.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct HubRecord {
    pub host_name: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub policies: Vec<StoredPolicy>,
    pub ports: StoredPorts,
}

/// A message: body and properties.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredMessage {
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    properties: Vec<(String, Option<String>)>,
}

impl StoredMessage {
    /// The stored form of `message`.
    pub fn of(message: &Message) -> Self {
        let owned = |v: Option<&str>| v.map(str::to_owned);
        StoredMessage {
            body: base64::engine::general_purpose::STANDARD.encode(message.body()),
            message_id: owned(message.message_id()),
            correlation_id: owned(message.correlation_id()),
            user_id: owned(message.user_id()),
            content_type: owned(message.content_type()),
            content_encoding: owned(message.content_encoding()),
            expiry: message.expiry().map(millis),
            to: owned(message.to()),
            ack: message.ack().map(|a| a.as_str().to_owned()),
            properties: message
                .properties()
                .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
                .collect(),
        }
    }

    /// The message again.
    pub fn message(&self) -> Message {
        let body = base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .unwrap_or_default();
        let mut message = Message::new(body);
        if let Some(v) = &self.message_id {
            message = message.with_message_id(v.clone());
        }
        if let Some(v) = &self.correlation_id {
            message = message.with_correlation_id(v.clone());
        }
        if let Some(v) = &self.user_id {
            message = message.with_user_id(v.clone());
        }
        if let Some(v) = &self.content_type {
            message = message.with_content_type(v.clone());
        }
        if let Some(v) = &self.content_encoding {
            message = message.with_content_encoding(v.clone());
        }
        if let Some(v) = self.expiry {
            message = message.with_expiry(from_millis(v));
        }
        if let Some(v) = &self.to {
            message = message.with_to(v.clone());
        }
        if let Some(ack) = self.ack.as_deref().and_then(Ack::from_wire) {
            message = message.with_ack(ack);
        }
        for (name, value) in &self.properties {
            message = match value {
                Some(value) => message.with_property(name.clone(), value.clone()),
                None => message.with_bare_property(name.clone()),
            };
        }
        message
    }
}

/// A queued cloud-to-device message (its lock is not kept).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredC2d {
    pub message: StoredMessage,
    pub expires_at: u64,
    pub delivery_count: u32,
}

/// A retained telemetry event.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredTelemetry {
    pub partition: u32,
    pub sequence_number: i64,
    pub offset: i64,
    pub enqueued_time: u64,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    pub auth_scope: String,
    pub auth_kind: String,
    pub generation_id: String,
    pub message: StoredMessage,
}

/// A pending feedback record, with when it was recorded.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredFeedback {
    pub record: crate::protocol::FeedbackRecord,
    pub at: u64,
}

/// A device's registry entry.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredDevice {
    pub device_id: String,
    pub generation_id: String,
    pub etag: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub primary_key: StoredKey,
    pub secondary_key: StoredKey,
    pub iot_edge: bool,
    /// `sas`, `selfSigned` or `certificateAuthority`.
    pub authentication: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_thumbprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_thumbprint: Option<String>,
    pub status_updated: u64,
    /// A leaf device's parent scope (IoT Edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// An edge device's parent scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_scopes: Vec<String>,
}

/// A module's registry entry.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredModule {
    pub device_id: String,
    pub module_id: String,
    pub generation_id: String,
    pub etag: String,
    pub primary_key: StoredKey,
    pub secondary_key: StoredKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

/// `value` as stored JSON text.
pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_every_property_through_the_store() {
        let message = Message::new(vec![0u8, 255, 10])
            .with_message_id("m")
            .with_correlation_id("c")
            .with_user_id("u")
            .with_content_type("application/json")
            .with_content_encoding("utf-8")
            .with_expiry(from_millis(1_800_000_000_000))
            .with_to("/devices/d/messages/devicebound")
            .with_ack(Ack::Full)
            .with_property("k", "v;=")
            .with_bare_property("flag");
        let text = to_json(&StoredMessage::of(&message));
        let back: StoredMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back.message(), message);
    }

    #[test]
    fn keys_sort_in_numeric_order_and_separate_ids() {
        assert!(c2d_key("d", 9) < c2d_key("d", 10));
        assert!(telemetry_key(0, 99) < telemetry_key(0, 100));
        assert!(!device_key("a/b").ends_with("a/b"));
        assert!(!module_key("d", "m").starts_with(&modules_prefix("dx")));
        assert_eq!(twin_key("d", None), twins_prefix("d"));
    }
}
