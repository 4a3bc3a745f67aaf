//! Device twins: today a read-only `GET /twins/{id}` of a twin whose tags and properties were
//! never written.
//!
//! The body is the swagger `Twin` (`azure-iot-sdk-node`, `service/src/service.json`,
//! definitions `Twin` and `TwinProperties`); a new twin has etag `AAAAAAAAAAE=`, `version` 2
//! and `$version` 1 on both property sides (Microsoft Learn, "Understand the identity registry
//! in your IoT hub", the device lifecycle notification's twin body).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::errors::{ApiError, registry_error};
use super::{authorize, json_response, path_id, time_text};
use crate::auth::Permission;
use crate::local_hub::state::{DeviceRecord, DeviceStatus, HubState, RegistryError};

/// A new twin's etag.
const NEW_TWIN_ETAG: &str = "AAAAAAAAAAE=";
/// A new twin's `version`.
const NEW_TWIN_VERSION: u64 = 2;
/// A new twin's desired and reported `$version`.
const NEW_TWIN_PROPERTIES_VERSION: u64 = 1;

/// `GET /twins/{id}`.
pub(super) async fn get(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let id = path_id(path)?;
    let record = state
        .get_device(&id)
        .ok_or_else(|| registry_error(RegistryError::DeviceNotFound, &id))?;
    Ok(json_response(StatusCode::OK, &twin_json(&record)))
}

/// The twin of a device whose tags and properties were never written.
fn twin_json(record: &DeviceRecord) -> serde_json::Value {
    let updated = time_text(record.status_updated);
    json!({
        "deviceId": record.device_id,
        "etag": NEW_TWIN_ETAG,
        "deviceEtag": record.etag,
        "version": NEW_TWIN_VERSION,
        "status": match record.status {
            DeviceStatus::Enabled => "enabled",
            DeviceStatus::Disabled => "disabled",
        },
        "statusReason": record.status_reason,
        "statusUpdateTime": updated,
        "connectionState": if record.connected { "Connected" } else { "Disconnected" },
        "lastActivityTime": time_text(record.last_activity),
        "cloudToDeviceMessageCount": record.c2d_count,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
        "capabilities": {"iotEdge": record.iot_edge},
        "properties": {
            "desired": {
                "$metadata": {"$lastUpdated": updated},
                "$version": NEW_TWIN_PROPERTIES_VERSION,
            },
            "reported": {
                "$metadata": {"$lastUpdated": updated},
                "$version": NEW_TWIN_PROPERTIES_VERSION,
            },
        },
    })
}
