//! The identity registry's JSON, as IoT Hub's REST API carries it, and its error bodies.
//!
//! [`Device`] is the one model for both ends: the service client writes it in requests and
//! reads IoT Hub's answers with it, and the local hub reads requests with it and writes its
//! answers from it. Field names and enums follow the swagger `Device` model of the service API
//! (`azure-iot-sdk-node`, `service/src/pl/models/mappers.ts`, `Device`; `azure-iot-hub-python`,
//! `src/azure/iot/hub/protocol/models/device_py3.py`).
//!
//! The read-only fields (set by the hub, never by a client) are handled here, in one place:
//! - Reading is lenient, as IoT Hub's is: a `null` anywhere reads as the field's default, every
//!   field is optional, unknown fields are ignored, and a read-only field whose value cannot be
//!   read is ignored too (it is the hub's to set), so a body copied from a `GET` is a valid
//!   request.
//! - Writing a request ([`Device`]'s `Serialize`) leaves the read-only fields out, and writes
//!   `generationId`, `etag` and `statusReason` only when set: the body Python's azure-iot-hub
//!   sends for a new device (`IoTHubRegistryManager.create_device_with_sas`).
//! - The hub's answer carries every field, read-only ones included (`Device::hub_reply`).

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// A device identity in the registry.
///
/// Build one with [`Device::new`] and the `with_*` setters; the fields marked read-only are
/// set by the hub and ignored when the device is written back.
///
/// ```
/// use iothub::protocol::{Device, DeviceStatus};
///
/// let device = Device::new("dev1")
///     .with_status(DeviceStatus::Disabled)
///     .with_status_reason("maintenance");
/// let body = serde_json::to_string(&device).unwrap();
/// assert!(body.starts_with(r#"{"deviceId":"dev1","status":"disabled""#));
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Device {
    /// The device id.
    #[serde(default, deserialize_with = "nullable")]
    pub device_id: String,
    /// Read-only: tells apart a device deleted and re-created with the same id.
    #[serde(default, deserialize_with = "read_only")]
    pub generation_id: String,
    /// Set by the hub: changes with every update; give it back to update or delete only the
    /// version you read.
    #[serde(default, deserialize_with = "nullable")]
    pub etag: String,
    /// `enabled` or `disabled`.
    #[serde(default, deserialize_with = "nullable")]
    pub status: DeviceStatus,
    /// Why the status was set, free text.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Read-only: whether the device is connected now.
    #[serde(default, deserialize_with = "read_only")]
    pub connection_state: DeviceConnectionState,
    /// Read-only: when the connection state last changed, ISO 8601.
    #[serde(default, deserialize_with = "read_only")]
    pub connection_state_updated_time: Option<String>,
    /// Read-only: when the status last changed, ISO 8601.
    #[serde(default, deserialize_with = "read_only")]
    pub status_updated_time: Option<String>,
    /// Read-only: when the device was last active, ISO 8601.
    #[serde(default, deserialize_with = "read_only")]
    pub last_activity_time: Option<String>,
    /// Read-only: cloud-to-device messages waiting for the device.
    #[serde(default, deserialize_with = "read_only")]
    pub cloud_to_device_message_count: u64,
    /// The device's credentials.
    #[serde(default, deserialize_with = "nullable")]
    pub authentication: Authentication,
    /// What the device can do.
    #[serde(default, deserialize_with = "nullable")]
    pub capabilities: Capabilities,
    /// The device's scope under IoT Edge. An edge device's own scope is set by the hub
    /// (`ms-azure-iot-edge://{id}-{generationId}`); for a leaf device, set it to its parent
    /// edge device's `device_scope` to place it under that gateway ([`Device::with_parent`]).
    #[serde(default)]
    pub device_scope: Option<String>,
    /// The scopes of the edge devices above this one: for a leaf device its `device_scope`
    /// (set by the hub), for an edge device at most one parent edge device's scope (nested
    /// IoT Edge).
    #[serde(default, deserialize_with = "nullable")]
    pub parent_scopes: Vec<String>,
}

impl Device {
    /// A device with this id, enabled, whose keys the hub generates.
    pub fn new(device_id: impl Into<String>) -> Self {
        Device {
            device_id: device_id.into(),
            ..Device::default()
        }
    }

    /// Sets the status.
    pub fn with_status(mut self, status: DeviceStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the status reason.
    pub fn with_status_reason(mut self, reason: impl Into<String>) -> Self {
        self.status_reason = Some(reason.into());
        self
    }

    /// Sets the two base64 symmetric keys; empty ones are generated by the hub.
    pub fn with_symmetric_keys(
        mut self,
        primary_key: impl Into<String>,
        secondary_key: impl Into<String>,
    ) -> Self {
        self.authentication.symmetric_key = SymmetricKey::new(primary_key, secondary_key);
        self
    }

    /// Marks the device as an IoT Edge device (or not).
    pub fn with_iot_edge(mut self, iot_edge: bool) -> Self {
        self.capabilities.iot_edge = iot_edge;
        self
    }

    /// A self-signed X.509 device (`type` `selfSigned`): it connects with the certificate whose
    /// SHA-1 or SHA-256 thumbprint (hex) is the primary or the secondary one. The form
    /// azure-iot-hub-python's `create_device_with_x509` sends (`iothub_registry_manager.py`).
    pub fn with_x509_thumbprints(
        mut self,
        primary_thumbprint: impl Into<String>,
        secondary_thumbprint: Option<String>,
    ) -> Self {
        self.authentication = Authentication {
            kind: "selfSigned".to_owned(),
            symmetric_key: SymmetricKey::default(),
            x509_thumbprint: X509Thumbprint {
                primary_thumbprint: Some(primary_thumbprint.into()),
                secondary_thumbprint,
            },
        };
        self
    }

    /// A CA-signed X.509 device (`type` `certificateAuthority`): it connects with a certificate
    /// chaining to a verified CA whose subject CN is its device id
    /// (`create_device_with_certificate_authority` in azure-iot-hub-python).
    pub fn with_certificate_authority(mut self) -> Self {
        self.authentication = Authentication {
            kind: "certificateAuthority".to_owned(),
            ..Authentication::default()
        };
        self
    }

    /// Places the device under the edge device whose `device_scope` is `parent_scope` (read it
    /// from the edge device): a leaf device gets it as its `device_scope`, an edge device as
    /// its one parent scope (Microsoft Learn, "Understand the identity registry in your IoT
    /// hub", `deviceScope` and `parentScopes`).
    pub fn with_parent(mut self, parent_scope: impl Into<String>) -> Self {
        let scope = parent_scope.into();
        if self.capabilities.iot_edge {
            self.parent_scopes = vec![scope];
        } else {
            self.device_scope = Some(scope);
        }
        self
    }

    /// Sets the etag an update or delete must match.
    pub fn with_etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = etag.into();
        self
    }

    /// The device as the hub writes it in its answers: every field, read-only ones included,
    /// `null` for what is unset (the shape of `az iot hub device-identity show`).
    #[cfg(feature = "local-hub")]
    pub(crate) fn hub_reply(&self) -> impl Serialize + '_ {
        Written {
            device: self,
            form: Form::HubReply,
        }
    }

    fn write<S: Serializer>(&self, form: Form, serializer: S) -> Result<S::Ok, S::Error> {
        let reply = form == Form::HubReply;
        let mut s = serializer.serialize_struct("Device", 14)?;
        s.serialize_field("deviceId", &self.device_id)?;
        write_if(
            &mut s,
            "generationId",
            &self.generation_id,
            reply || !self.generation_id.is_empty(),
        )?;
        write_if(&mut s, "etag", &self.etag, reply || !self.etag.is_empty())?;
        write_if(&mut s, "connectionState", &self.connection_state, reply)?;
        s.serialize_field("status", &self.status)?;
        write_if(
            &mut s,
            "statusReason",
            &self.status_reason,
            reply || self.status_reason.is_some(),
        )?;
        write_if(
            &mut s,
            "connectionStateUpdatedTime",
            &self.connection_state_updated_time,
            reply,
        )?;
        write_if(
            &mut s,
            "statusUpdatedTime",
            &self.status_updated_time,
            reply,
        )?;
        write_if(&mut s, "lastActivityTime", &self.last_activity_time, reply)?;
        write_if(
            &mut s,
            "cloudToDeviceMessageCount",
            &self.cloud_to_device_message_count,
            reply,
        )?;
        s.serialize_field("authentication", &self.authentication.wire(reply))?;
        s.serialize_field("capabilities", &self.capabilities)?;
        write_if(
            &mut s,
            "deviceScope",
            &self.device_scope,
            reply || self.device_scope.is_some(),
        )?;
        write_if(
            &mut s,
            "parentScopes",
            &self.parent_scopes,
            reply || !self.parent_scopes.is_empty(),
        )?;
        s.end()
    }
}

/// Which fields a written [`Device`] carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A client's request: writable fields, and the hub-set ones only when they are known.
    Request,
    /// The hub's answer: every field.
    #[cfg_attr(not(feature = "local-hub"), allow(dead_code))]
    HubReply,
}

#[cfg(feature = "local-hub")]
struct Written<'a> {
    device: &'a Device,
    form: Form,
}

#[cfg(feature = "local-hub")]
impl Serialize for Written<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.device.write(self.form, serializer)
    }
}

/// A device's request body: the writable fields (see the module documentation).
impl Serialize for Device {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.write(Form::Request, serializer)
    }
}

pub(super) fn write_if<S: SerializeStruct, T: Serialize + ?Sized>(
    s: &mut S,
    key: &'static str,
    value: &T,
    present: bool,
) -> Result<(), S::Error> {
    if present {
        s.serialize_field(key, value)
    } else {
        s.skip_field(key)
    }
}

/// `null` reads as the default.
pub(super) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A read-only field: whatever a client wrote there is the hub's to overwrite, so a value
/// that does not read (or `null`) becomes the default instead of failing the request.
pub(super) fn read_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("device_id", &self.device_id)
            .field("generation_id", &self.generation_id)
            .field("etag", &self.etag)
            .field("status", &self.status)
            .field("connection_state", &self.connection_state)
            .field(
                "cloud_to_device_message_count",
                &self.cloud_to_device_message_count,
            )
            .field("authentication", &self.authentication)
            .finish_non_exhaustive()
    }
}

/// Whether a device may connect. Read without regard to case (`Enabled` is `enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// The device may connect.
    #[default]
    Enabled,
    /// The device may not connect.
    Disabled,
}

impl<'de> Deserialize<'de> for DeviceStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.eq_ignore_ascii_case("enabled") {
            Ok(DeviceStatus::Enabled)
        } else if text.eq_ignore_ascii_case("disabled") {
            Ok(DeviceStatus::Disabled)
        } else {
            Err(de::Error::custom("status must be 'enabled' or 'disabled'"))
        }
    }
}

/// Whether a device is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DeviceConnectionState {
    /// Not connected.
    #[default]
    Disconnected,
    /// Connected.
    Connected,
}

/// A device's credentials (swagger `AuthenticationMechanism`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Authentication {
    /// `sas` for symmetric keys (the default when absent).
    #[serde(rename = "type", default = "sas", deserialize_with = "nullable_sas")]
    pub kind: String,
    /// The symmetric keys; empty keys in a create request are generated by the hub.
    #[serde(default, deserialize_with = "nullable")]
    pub symmetric_key: SymmetricKey,
    /// X.509 thumbprints, unset for `sas` devices.
    #[serde(default, deserialize_with = "nullable")]
    pub x509_thumbprint: X509Thumbprint,
}

fn sas() -> String {
    "sas".to_owned()
}

fn nullable_sas<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_else(sas))
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            kind: sas(),
            symmetric_key: SymmetricKey::default(),
            x509_thumbprint: X509Thumbprint::default(),
        }
    }
}

impl Serialize for Authentication {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire(false).serialize(serializer)
    }
}

impl Authentication {
    /// How the credentials are written: in a request the thumbprints only when set, in the
    /// hub's answer always (`null`s included). Shared by devices and modules.
    pub(super) fn wire(&self, hub_reply: bool) -> AuthenticationWire<'_> {
        AuthenticationWire {
            symmetric_key: &self.symmetric_key,
            kind: &self.kind,
            x509_thumbprint: (hub_reply || self.x509_thumbprint.is_set())
                .then_some(&self.x509_thumbprint),
        }
    }
}

/// How [`Authentication`] goes on the wire, in the order Python's azure-iot-hub writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AuthenticationWire<'a> {
    symmetric_key: &'a SymmetricKey,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x509_thumbprint: Option<&'a X509Thumbprint>,
}

impl fmt::Debug for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authentication")
            .field("kind", &self.kind)
            .field("symmetric_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A device's two symmetric keys, base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SymmetricKey {
    /// The primary key.
    #[serde(default, deserialize_with = "nullable")]
    pub primary_key: String,
    /// The secondary key.
    #[serde(default, deserialize_with = "nullable")]
    pub secondary_key: String,
}

impl SymmetricKey {
    /// Two base64 keys; empty ones are generated by the hub.
    pub fn new(primary_key: impl Into<String>, secondary_key: impl Into<String>) -> Self {
        SymmetricKey {
            primary_key: primary_key.into(),
            secondary_key: secondary_key.into(),
        }
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

/// A device's X.509 thumbprints (swagger `X509Thumbprint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct X509Thumbprint {
    /// The primary certificate's thumbprint.
    #[serde(default)]
    pub primary_thumbprint: Option<String>,
    /// The secondary certificate's thumbprint.
    #[serde(default)]
    pub secondary_thumbprint: Option<String>,
}

impl X509Thumbprint {
    fn is_set(&self) -> bool {
        self.primary_thumbprint.is_some() || self.secondary_thumbprint.is_some()
    }
}

/// What a device can do (swagger `DeviceCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether the device is an IoT Edge device.
    #[serde(default, deserialize_with = "nullable")]
    pub iot_edge: bool,
}

impl Capabilities {
    /// Sets whether the device is an IoT Edge device.
    pub fn with_iot_edge(mut self, iot_edge: bool) -> Self {
        self.iot_edge = iot_edge;
        self
    }
}

/// Device counts (`GET /statistics/devices`, swagger `RegistryStatistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RegistryStatistics {
    /// All devices.
    pub total_device_count: u64,
    /// Enabled devices.
    pub enabled_device_count: u64,
    /// Disabled devices.
    pub disabled_device_count: u64,
}

/// The answer to a queue purge (`DELETE /devices/{id}/commands`, swagger `PurgeMessageQueueResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PurgeResult {
    /// How many messages were removed.
    pub total_messages_purged: u64,
    /// The device.
    pub device_id: String,
    /// The module, `null` for a device's queue.
    #[serde(default)]
    pub module_id: Option<String>,
}

/// The error code IoT Hub gives for a failed REST call: from the `iothub-errorcode` header or
/// either body form, the legacy `{"Message":"ErrorCode:<Name>;<text>"}` or the newer
/// `{"Message":"{\"errorCode\":404001,...}"}` (`azure-iot-sdk-csharp`,
/// `common/src/service/ExceptionHandlingHelper.cs`, which parses both).
/// Returns the code name (e.g. `DeviceNotFound`) or the numeric code as text.
pub fn error_code(header: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(name) = header.map(str::trim).filter(|h| !h.is_empty()) {
        return Some(name.to_owned());
    }
    #[derive(Deserialize)]
    struct Outer {
        #[serde(rename = "Message")]
        message: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        error_code: serde_json::Value,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    if let Some(rest) = outer.message.strip_prefix("ErrorCode:") {
        let code = rest.split(';').next().unwrap_or_default().trim();
        return (!code.is_empty()).then(|| code.to_owned());
    }
    let inner: Inner = serde_json::from_str(&outer.message).ok()?;
    Some(match inner.error_code {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// The text of IoT Hub's error body, either form (see [`error_code`]): what follows the code in
/// the legacy `ErrorCode:<Name>;<text>`, or the `message` of the newer form. `None` when the
/// body has neither. At most 300 characters are kept.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        #[serde(rename = "Message")]
        message: String,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    let text = match outer.message.strip_prefix("ErrorCode:") {
        Some(rest) => rest.split_once(';').map(|(_, text)| text.to_owned())?,
        None => serde_json::from_str::<Inner>(&outer.message).ok()?.message,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(300).collect())
}

#[cfg(test)]
mod tests;
