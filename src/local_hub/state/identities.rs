//! The identity registry: devices, the modules under them, their keys, and who may connect as
//! whom.
//!
//! An identity is a device or one of its modules (Microsoft Learn, "Understand the identity
//! registry in your IoT hub": modules are identities under a device, each with its own keys,
//! generation id and etag). Each identity has its own session slot, so a module's connection
//! never replaces its device's or a sibling's. Deleting a device deletes its modules; disabling
//! it closes their connections too.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use crate::auth::{AccessDenied, SasKey, SasToken, authorize_device};
use crate::error::{Error, ErrorKind};
use crate::local_hub::c2d_queue::C2dQueue;
use crate::protocol::{check_device_id, check_module_id};

use super::scopes::DeviceScopes;
use super::sessions::SessionSlot;
use super::{HubState, Inner, generate_key};

/// A device, or a module of a device: whom a connection, a token or a message is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Identity {
    pub device_id: String,
    pub module_id: Option<String>,
}

impl Identity {
    /// The device itself.
    pub fn device(device_id: impl Into<String>) -> Self {
        Identity {
            device_id: device_id.into(),
            module_id: None,
        }
    }

    /// A module of a device.
    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Identity {
            device_id: device_id.into(),
            module_id: Some(module_id.into()),
        }
    }
}

impl fmt::Display for Identity {
    /// `device` or `device/module`, as in an MQTT client id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module_id {
            Some(module) => write!(f, "{}/{module}", self.device_id),
            None => f.write_str(&self.device_id),
        }
    }
}

/// A device's status in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Enabled,
    Disabled,
}

/// How a device authenticates (the registry's `authentication.type`: Microsoft Learn,
/// "Authenticate identities with X.509 certificates"; azure-iot-hub-python
/// `iothub_registry_manager.py`, `create_device_with_sas`, `create_device_with_x509`,
/// `create_device_with_certificate_authority`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum DeviceAuthentication {
    /// `sas`: its symmetric keys (or a policy with DeviceConnect) sign its tokens.
    #[default]
    Sas,
    /// `selfSigned`: the certificate whose SHA-1 or SHA-256 thumbprint is registered.
    SelfSigned {
        primary_thumbprint: Option<String>,
        secondary_thumbprint: Option<String>,
    },
    /// `certificateAuthority`: a certificate chaining to a verified CA, CN = the device id.
    CertificateAuthority,
}

impl DeviceAuthentication {
    /// Whether the device authenticates with a certificate (and never with a SAS token).
    pub fn is_x509(&self) -> bool {
        !matches!(self, DeviceAuthentication::Sas)
    }
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
    pub authentication: DeviceAuthentication,
    pub connected: bool,
    pub connection_state_updated: SystemTime,
    pub status_updated: SystemTime,
    pub last_activity: SystemTime,
    pub c2d_count: usize,
    /// A leaf device's parent scope, or an edge device's parents (the edge device's own scope
    /// is derived: [`super::edge_scope`]).
    pub scopes: DeviceScopes,
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
    pub authentication: DeviceAuthentication,
}

/// A module as the registry keeps it (swagger `Module`: node-hub `src/service.json`).
#[derive(Clone, Debug)]
pub(crate) struct ModuleRecord {
    pub device_id: String,
    pub module_id: String,
    pub generation_id: String,
    pub etag: String,
    pub primary_key: SasKey,
    pub secondary_key: SasKey,
    /// The IoT Edge agent that manages the module, if any (`managedBy`).
    pub managed_by: Option<String>,
    pub connected: bool,
    pub connection_state_updated: SystemTime,
    pub last_activity: SystemTime,
}

/// What a module registry write asks for.
#[derive(Clone, Debug)]
pub(crate) struct ModuleSpec {
    pub device_id: String,
    pub module_id: String,
    /// `None` keys are generated.
    pub primary_key: Option<SasKey>,
    pub secondary_key: Option<SasKey>,
    pub managed_by: Option<String>,
}

/// Registry failures, mapped to IoT Hub's error codes by the HTTPS layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RegistryError {
    DeviceNotFound,
    DeviceAlreadyExists,
    PreconditionFailed,
    /// The id breaks IoT Hub's rules; the text says which character and the rule.
    InvalidId(String),
    /// A `deviceScope` or `parentScopes` entry that names no edge device of this hub, or an
    /// edge device naming itself.
    InvalidScope(String),
}

/// A registered device, its modules, its C2D queue and its session slot.
pub(super) struct Device {
    pub record: DeviceRecord,
    pub queue: C2dQueue,
    pub slot: SessionSlot,
    pub modules: BTreeMap<String, Module>,
}

/// A registered module and its session slot. Modules have no C2D queue: azure-iot-device-mqtt
/// (Node) `mqtt.js` subscribes a module to `inputs/#` instead of `messages/devicebound`, and the
/// Python SDK's e2e `service_helper_sync.py` refuses to send C2D to a module.
pub(super) struct Module {
    pub record: ModuleRecord,
    pub slot: SessionSlot,
}

impl Device {
    /// The record, with the connection state read from the session slot.
    pub fn snapshot(&self) -> DeviceRecord {
        let mut record = self.record.clone();
        record.connected = self.slot.is_connected();
        record.connection_state_updated = self.slot.connection_state_updated;
        record.last_activity = self.slot.last_activity;
        record
    }

    /// Closes the connections of the device and of every module.
    fn kick_everyone(&self) {
        self.slot.kick();
        for module in self.modules.values() {
            module.slot.kick();
        }
    }
}

impl Module {
    /// The record, with the connection state read from the session slot.
    pub fn snapshot(&self) -> ModuleRecord {
        let mut record = self.record.clone();
        record.connected = self.slot.is_connected();
        record.connection_state_updated = self.slot.connection_state_updated;
        record.last_activity = self.slot.last_activity;
        record
    }
}

impl Inner {
    /// The session slot of a registered identity.
    pub(super) fn slot(&self, identity: &Identity) -> Option<&SessionSlot> {
        let device = self.devices.get(&identity.device_id)?;
        match &identity.module_id {
            None => Some(&device.slot),
            Some(module) => device.modules.get(module).map(|m| &m.slot),
        }
    }

    /// The session slot of a registered identity, to change.
    pub(super) fn slot_mut(&mut self, identity: &Identity) -> Option<&mut SessionSlot> {
        let device = self.devices.get_mut(&identity.device_id)?;
        match &identity.module_id {
            None => Some(&mut device.slot),
            Some(module) => device.modules.get_mut(module).map(|m| &mut m.slot),
        }
    }

    /// Records activity of an identity.
    pub(super) fn touch(&mut self, identity: &Identity, now: SystemTime) {
        if let Some(slot) = self.slot_mut(identity) {
            slot.last_activity = now;
        }
    }
}

fn device_not_found(device_id: &str) -> Error {
    Error::new(
        ErrorKind::DeviceNotFound,
        format!("device '{device_id}' is not registered"),
    )
}

fn module_not_found(device_id: &str, module_id: &str) -> Error {
    Error::new(
        ErrorKind::ModuleNotFound,
        format!("module '{module_id}' is not registered on device '{device_id}'"),
    )
}

fn precondition_failed() -> Error {
    Error::new(ErrorKind::PreconditionFailed, "the etag does not match")
}

impl HubState {
    fn fresh_generation_id(&self) -> String {
        format!("{}", 638_000_000_000_000_000 + self.fresh_id())
    }

    /// Checks a device's or module's token: the identity's own keys or a policy with
    /// DeviceConnect, `sr` covering `{host}/devices/{device}[/modules/{module}]`, the device
    /// registered and enabled and the module (if any) registered under it. A device's keys
    /// never sign for one of its modules, nor a module's for its device.
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
        let keys = match module_id {
            None => [&device.record.primary_key, &device.record.secondary_key],
            Some(module_id) => {
                let module = device
                    .modules
                    .get(module_id)
                    .ok_or(AccessDenied::UnknownDevice)?;
                [&module.record.primary_key, &module.record.secondary_key]
            }
        };
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

    // ---- devices -------------------------------------------------------------------------

    /// Creates (`if_match` absent) or updates (`*` or the current etag) a device. Disabling a
    /// device closes its connection and its modules'.
    pub fn put_device(
        &self,
        spec: DeviceSpec,
        if_match: Option<&str>,
    ) -> Result<DeviceRecord, RegistryError> {
        self.put_device_with_scopes(spec, DeviceScopes::default(), if_match)
    }

    /// [`Self::put_device`] with the device's edge scopes (checked: every scope must be an
    /// edge device's of this hub, and an edge device cannot be its own parent).
    pub fn put_device_with_scopes(
        &self,
        spec: DeviceSpec,
        scopes: DeviceScopes,
        if_match: Option<&str>,
    ) -> Result<DeviceRecord, RegistryError> {
        check_device_id(&spec.device_id)
            .map_err(|e| RegistryError::InvalidId(e.detail().to_owned()))?;
        let now = self.clock.now();
        let etag = encode_etag(self.fresh_id());
        let generation_id = self.fresh_generation_id();
        let mut inner = self.lock();
        let scopes = inner.checked_scopes(&spec, scopes)?;
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
                record.scopes = scopes;
                // A device whose authentication changes reconnects under the new one.
                let reauthenticate = record.authentication != spec.authentication;
                record.authentication = spec.authentication;
                record.etag = etag;
                if reauthenticate || device.record.status == DeviceStatus::Disabled {
                    device.kick_everyone();
                }
                self.persist_device(&device.record);
                Ok(device.snapshot())
            }
            (None, None) => {
                let device = Device {
                    record: DeviceRecord {
                        device_id: spec.device_id.clone(),
                        generation_id,
                        etag,
                        status: spec.status,
                        status_reason: spec.status_reason,
                        primary_key: spec.primary_key.unwrap_or_else(generate_key),
                        secondary_key: spec.secondary_key.unwrap_or_else(generate_key),
                        iot_edge: spec.iot_edge,
                        authentication: spec.authentication,
                        connected: false,
                        connection_state_updated: now,
                        status_updated: now,
                        last_activity: now,
                        c2d_count: 0,
                        scopes,
                    },
                    queue: C2dQueue::default(),
                    slot: SessionSlot::new(now),
                    modules: BTreeMap::new(),
                };
                let record = device.snapshot();
                self.persist_device(&record);
                inner.devices.insert(spec.device_id, device);
                Ok(record)
            }
        }
    }

    /// A device's record.
    pub fn get_device(&self, device_id: &str) -> Option<DeviceRecord> {
        self.lock().devices.get(device_id).map(Device::snapshot)
    }

    /// Every device's record, in id order.
    pub fn list_devices(&self) -> Vec<DeviceRecord> {
        self.lock().devices.values().map(Device::snapshot).collect()
    }

    /// Deletes a device (`if_match`: `*` or its etag) with its modules, closing their
    /// sessions and dropping its queue and pending feedback.
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
        device.kick_everyone();
        inner.forget_twins(device_id, None);
        inner.feedback.forget_device(device_id);
        self.persist_device_deleted(device_id);
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

    // ---- modules -------------------------------------------------------------------------

    /// Creates (`if_match` absent) or updates (`*` or the current etag) a module of a
    /// registered device.
    ///
    /// Errors: [`ErrorKind::InvalidMessage`] for an id that breaks the rules,
    /// [`ErrorKind::DeviceNotFound`], [`ErrorKind::ModuleAlreadyExists`] (create),
    /// [`ErrorKind::ModuleNotFound`] and [`ErrorKind::PreconditionFailed`] (update).
    pub fn put_module(
        &self,
        spec: ModuleSpec,
        if_match: Option<&str>,
    ) -> Result<ModuleRecord, Error> {
        check_module_id(&spec.module_id)?;
        let now = self.clock.now();
        let etag = encode_etag(self.fresh_id());
        let generation_id = self.fresh_generation_id();
        let mut inner = self.lock();
        let device = inner
            .devices
            .get_mut(&spec.device_id)
            .ok_or_else(|| device_not_found(&spec.device_id))?;
        match (device.modules.get_mut(&spec.module_id), if_match) {
            (Some(_), None) => Err(Error::new(
                ErrorKind::ModuleAlreadyExists,
                format!(
                    "module '{}' already exists on device '{}'",
                    spec.module_id, spec.device_id
                ),
            )),
            (None, Some(_)) => Err(module_not_found(&spec.device_id, &spec.module_id)),
            (Some(module), Some(tag)) => {
                if !etag_matches(tag, &module.record.etag) {
                    return Err(precondition_failed());
                }
                let record = &mut module.record;
                record.primary_key = spec.primary_key.unwrap_or_else(generate_key);
                record.secondary_key = spec.secondary_key.unwrap_or_else(generate_key);
                record.managed_by = spec.managed_by;
                record.etag = etag;
                self.persist_module(&module.record);
                Ok(module.snapshot())
            }
            (None, None) => {
                let module = Module {
                    record: ModuleRecord {
                        device_id: spec.device_id.clone(),
                        module_id: spec.module_id.clone(),
                        generation_id,
                        etag,
                        primary_key: spec.primary_key.unwrap_or_else(generate_key),
                        secondary_key: spec.secondary_key.unwrap_or_else(generate_key),
                        managed_by: spec.managed_by,
                        connected: false,
                        connection_state_updated: now,
                        last_activity: now,
                    },
                    slot: SessionSlot::new(now),
                };
                let record = module.snapshot();
                self.persist_module(&record);
                device.modules.insert(spec.module_id, module);
                Ok(record)
            }
        }
    }

    /// A module's record; `None` if the device or the module is unknown.
    pub fn get_module(&self, device_id: &str, module_id: &str) -> Option<ModuleRecord> {
        let inner = self.lock();
        let module = inner.devices.get(device_id)?.modules.get(module_id)?;
        Some(module.snapshot())
    }

    /// The modules of a device, in id order. Error: [`ErrorKind::DeviceNotFound`].
    pub fn list_modules(&self, device_id: &str) -> Result<Vec<ModuleRecord>, Error> {
        let inner = self.lock();
        let device = inner
            .devices
            .get(device_id)
            .ok_or_else(|| device_not_found(device_id))?;
        Ok(device.modules.values().map(Module::snapshot).collect())
    }

    /// Deletes a module (`if_match`: `*` or its etag), closing its session.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::ModuleNotFound`],
    /// [`ErrorKind::PreconditionFailed`].
    pub fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        let device = inner
            .devices
            .get_mut(device_id)
            .ok_or_else(|| device_not_found(device_id))?;
        let module = device
            .modules
            .get(module_id)
            .ok_or_else(|| module_not_found(device_id, module_id))?;
        if let Some(tag) = if_match {
            if !etag_matches(tag, &module.record.etag) {
                return Err(precondition_failed());
            }
        }
        let module = device.modules.remove(module_id).expect("checked above");
        module.slot.kick();
        inner.forget_twins(device_id, Some(module_id));
        self.persist_module_deleted(device_id, module_id);
        Ok(())
    }
}

/// Device and module etags look like base64 of an ASCII decimal (`OTg0MjI1NzE1` =
/// "984225715", as in the registry samples of azure-iot-cli-extension `tests/conftest.py`).
/// Clients treat them as opaque.
fn encode_etag(n: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{}", 900_000_000 + n))
}

/// `If-Match` semantics (RFC 7232 section 3.1; azure-iot-hub for Python and azure-iothub for
/// Node send `"*"` or the quoted etag): quotes and a `W/` prefix are stripped; `*` matches
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

    #[test]
    fn if_match_accepts_quoted_weak_and_wildcard() {
        assert!(etag_matches("\"*\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("W/\"abc\"", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
        assert!(!etag_matches("\"\"", "abc"));
    }

    #[test]
    fn identities_display_as_mqtt_client_ids() {
        assert_eq!(Identity::device("d").to_string(), "d");
        assert_eq!(Identity::module("d", "m").to_string(), "d/m");
    }
}
