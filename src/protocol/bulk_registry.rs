//! The bulk registry operation (`POST /devices`): up to 100 devices created, updated or
//! deleted in one request, and IoT Hub's per-device answer.
//!
//! The request is a JSON array of `ExportImportDevice` objects and the answer a
//! `BulkRegistryOperationResult` (Microsoft Learn, REST API "Bulk Registry - Update Registry";
//! azure-iot-hub-python `protocol/models/export_import_device_py3.py`,
//! `bulk_registry_operation_result_py3.py`, `device_registry_operation_error_py3.py`,
//! `device_registry_operation_warning_py3.py`). azure-iothub for Node builds the same array
//! from its `Device` objects (`service/src/registry.ts`, `_processBulkDevices`): it copies the
//! device, renames `deviceId` to `id`, adds `importMode` (`create`, `Update`,
//! `UpdateIfMatchETag`, `Delete`, `DeleteIfMatchETag`) and keeps the device's `etag`, where
//! Python writes `eTag`; both spellings are read, and the mode without regard to case.
//!
//! The hub answers 200 when every operation succeeded and 400 with the same body when one
//! failed: azure-iot-hub-python's `bulk_registry_operations.py` `update_registry` reads a
//! `BulkRegistryOperationResult` from both statuses.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::Device;
use super::registry_json::nullable;

/// The most devices one bulk request may hold (Microsoft Learn, "Bulk Registry - Update
/// Registry"; Node's `_processBulkDevices` refuses more).
pub const MAX_BULK_DEVICES: usize = 100;

/// What a bulk operation does to one device (`importMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImportMode {
    /// Registers the device; an error if the id is taken.
    Create,
    /// Registers the device, or overwrites it when it exists.
    CreateOrUpdate,
    /// Overwrites an existing device whatever its etag; an error if it does not exist.
    Update,
    /// Overwrites an existing device if its etag is the one given.
    UpdateIfMatchETag,
    /// Deletes the device whatever its etag.
    Delete,
    /// Deletes the device if its etag is the one given.
    DeleteIfMatchETag,
    /// Replaces the device's twin (not served by the local hub).
    UpdateTwin,
    /// Replaces the device's twin if its etag matches (not served by the local hub).
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    const ALL: [(ImportMode, &'static str); 8] = [
        (ImportMode::Create, "create"),
        (ImportMode::CreateOrUpdate, "createOrUpdate"),
        (ImportMode::Update, "update"),
        (ImportMode::UpdateIfMatchETag, "updateIfMatchETag"),
        (ImportMode::Delete, "delete"),
        (ImportMode::DeleteIfMatchETag, "deleteIfMatchETag"),
        (ImportMode::UpdateTwin, "updateTwin"),
        (ImportMode::UpdateTwinIfMatchETag, "updateTwinIfMatchETag"),
    ];

    /// The mode as Python's azure-iot-hub writes it (`updateIfMatchETag`).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(mode, _)| *mode == self)
            .map_or("create", |(_, name)| name)
    }
}

impl fmt::Display for ImportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ImportMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ImportMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(&text))
            .map(|(mode, _)| *mode)
            .ok_or_else(|| {
                de::Error::custom(
                    "importMode must be create, createOrUpdate, update, updateIfMatchETag, \
                     delete, deleteIfMatchETag, updateTwin or updateTwinIfMatchETag",
                )
            })
    }
}

/// One device of a bulk request (`ExportImportDevice`): the device (its `device_id` goes on
/// the wire as `id`, its `etag` as `eTag`) and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkDeviceOperation {
    /// The device; for the `IfMatchETag` modes its `etag` is the one that must match.
    pub device: Device,
    /// What to do.
    pub import_mode: ImportMode,
}

impl BulkDeviceOperation {
    /// `import_mode` applied to `device`.
    pub fn new(device: Device, import_mode: ImportMode) -> Self {
        BulkDeviceOperation {
            device,
            import_mode,
        }
    }
}

impl Serialize for BulkDeviceOperation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.device).map_err(serde::ser::Error::custom)?;
        if let Some(object) = value.as_object_mut() {
            let id = object.remove("deviceId").unwrap_or_default();
            let etag = object.remove("etag");
            object.insert("id".to_owned(), id);
            object.insert(
                "importMode".to_owned(),
                serde_json::Value::from(self.import_mode.as_str()),
            );
            if let Some(etag) = etag {
                object.insert("eTag".to_owned(), etag);
            }
        }
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BulkDeviceOperation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| de::Error::custom("each bulk entry must be a JSON object"))?;
        let import_mode = match object.remove("importMode") {
            Some(mode) => ImportMode::deserialize(mode).map_err(de::Error::custom)?,
            None => return Err(de::Error::custom("a bulk entry has no importMode")),
        };
        let id = object.remove("id");
        // Python's `eTag` wins over a Node device's own `etag`.
        if let Some(etag) = object.remove("eTag").filter(|e| !e.is_null()) {
            object.insert("etag".to_owned(), etag);
        }
        let mut device = Device::deserialize(value).map_err(de::Error::custom)?;
        match id {
            Some(serde_json::Value::String(id)) => device.device_id = id,
            Some(serde_json::Value::Null) | None => {}
            Some(_) => return Err(de::Error::custom("a bulk entry's id must be a string")),
        }
        Ok(BulkDeviceOperation {
            device,
            import_mode,
        })
    }
}

/// The answer to a bulk request (`BulkRegistryOperationResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct BulkRegistryOperationResult {
    /// Whether every operation succeeded.
    #[serde(default, deserialize_with = "nullable")]
    pub is_successful: bool,
    /// One entry per device whose operation failed.
    #[serde(default, deserialize_with = "nullable")]
    pub errors: Vec<DeviceRegistryOperationError>,
    /// Warnings (the local hub gives none).
    #[serde(default, deserialize_with = "nullable")]
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

/// A failed operation of a bulk request (`DeviceRegistryOperationError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DeviceRegistryOperationError {
    /// The device.
    #[serde(default, deserialize_with = "nullable")]
    pub device_id: String,
    /// IoT Hub's error code name, e.g. `DeviceAlreadyExists`, `DeviceNotFound`,
    /// `PreconditionFailed`, `ArgumentInvalid`.
    #[serde(default, deserialize_with = "nullable")]
    pub error_code: String,
    /// What went wrong, in words.
    #[serde(default, deserialize_with = "nullable")]
    pub error_status: String,
    /// The module, for a module's operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The import mode that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

impl DeviceRegistryOperationError {
    /// An error for `device_id`'s operation `operation`.
    pub fn new(
        device_id: impl Into<String>,
        error_code: impl Into<String>,
        error_status: impl Into<String>,
        operation: ImportMode,
    ) -> Self {
        DeviceRegistryOperationError {
            device_id: device_id.into(),
            error_code: error_code.into(),
            error_status: error_status.into(),
            module_id: None,
            operation: Some(operation.as_str().to_owned()),
        }
    }
}

/// A warning of a bulk request (`DeviceRegistryOperationWarning`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DeviceRegistryOperationWarning {
    /// The device.
    #[serde(default, deserialize_with = "nullable")]
    pub device_id: String,
    /// The warning's code name.
    #[serde(default, deserialize_with = "nullable")]
    pub warning_code: String,
    /// The warning, in words.
    #[serde(default, deserialize_with = "nullable")]
    pub warning_status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_node_sends() {
        // Node's updateDevices(devices, false): a copied Device, deviceId renamed to id, its
        // own etag, importMode capitalised.
        let body = r#"[{"id":"d1","etag":"OTAw","status":"disabled","importMode":"UpdateIfMatchETag",
            "authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"x509Thumbprint":{},"type":"sas"},
            "connectionState":"Disconnected","generationId":"1"}]"#;
        let ops: Vec<BulkDeviceOperation> = serde_json::from_str(body).unwrap();
        assert_eq!(ops[0].import_mode, ImportMode::UpdateIfMatchETag);
        assert_eq!(ops[0].device.device_id, "d1");
        assert_eq!(ops[0].device.etag, "OTAw");
        assert_eq!(
            ops[0].device.status,
            crate::protocol::DeviceStatus::Disabled
        );
        for (mode, expected) in [
            ("create", ImportMode::Create),
            ("Delete", ImportMode::Delete),
            ("DeleteIfMatchETag", ImportMode::DeleteIfMatchETag),
            ("update", ImportMode::Update),
        ] {
            let body = format!(r#"{{"id":"d","importMode":"{mode}"}}"#);
            let op: BulkDeviceOperation = serde_json::from_str(&body).unwrap();
            assert_eq!(op.import_mode, expected, "{mode}");
        }
        for bad in [
            r#"{"id":"d"}"#,
            r#"{"id":"d","importMode":"explode"}"#,
            "[]",
        ] {
            assert!(
                serde_json::from_str::<BulkDeviceOperation>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn writes_what_python_sends_and_reads_it_back() {
        let op = BulkDeviceOperation::new(
            Device::new("d2")
                .with_etag("abc")
                .with_parent("ms-azure-iot-edge://e-1"),
            ImportMode::DeleteIfMatchETag,
        );
        let text = serde_json::to_string(&op).unwrap();
        assert!(
            text.contains(r#""id":"d2""#) && !text.contains("deviceId"),
            "{text}"
        );
        assert!(text.contains(r#""eTag":"abc""#), "{text}");
        assert!(
            text.contains(r#""importMode":"deleteIfMatchETag""#),
            "{text}"
        );
        assert!(
            text.contains(r#""deviceScope":"ms-azure-iot-edge://e-1""#),
            "{text}"
        );
        let back: BulkDeviceOperation = serde_json::from_str(&text).unwrap();
        assert_eq!(back, op);
    }

    #[test]
    fn the_result_is_the_documented_shape() {
        let result = BulkRegistryOperationResult {
            is_successful: false,
            errors: vec![DeviceRegistryOperationError::new(
                "d1",
                "DeviceAlreadyExists",
                "a device with id 'd1' already exists",
                ImportMode::Create,
            )],
            warnings: Vec::new(),
        };
        let text = serde_json::to_string(&result).unwrap();
        assert_eq!(
            text,
            r#"{"isSuccessful":false,"errors":[{"deviceId":"d1","errorCode":"DeviceAlreadyExists","errorStatus":"a device with id 'd1' already exists","operation":"create"}],"warnings":[]}"#
        );
        let back: BulkRegistryOperationResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back, result);
        let lenient: BulkRegistryOperationResult =
            serde_json::from_str(r#"{"isSuccessful":true,"errors":null}"#).unwrap();
        assert!(lenient.is_successful && lenient.errors.is_empty());
    }
}
