//! `POST /devices`: the bulk registry operation (create, update and delete up to 100 devices
//! in one request), answered with IoT Hub's per-device results.
//!
//! The body and the answer are [`protocol::BulkDeviceOperation`] and
//! [`protocol::BulkRegistryOperationResult`] (see their module for the sources). Each device's
//! operation is applied on its own, in the order given, as IoT Hub does; the answer is 200 when
//! every one succeeded and 400 with the same body otherwise (azure-iot-hub-python
//! `bulk_registry_operations.py`, `update_registry`, reads the result from both). A request
//! that is not a JSON array of 1 to 100 entries, or names a device twice ("A device identity
//! can be specified only once in the list", Microsoft Learn "Bulk Registry - Update
//! Registry"), is refused as a whole with 400 `ArgumentInvalid`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::devices::device_spec;
use super::errors::{ApiError, ErrorCode, registry_error};
use super::{authorize, json_response};
use crate::auth::Permission;
use crate::local_hub::state::HubState;
use crate::protocol::{
    BulkDeviceOperation, BulkRegistryOperationResult, DeviceRegistryOperationError, ImportMode,
    MAX_BULK_DEVICES,
};

/// `POST /devices`.
pub(super) async fn post(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let body = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("the request body could not be read: {rejection}"),
        )
    })?;
    let operations = read_operations(&body)?;
    let errors: Vec<DeviceRegistryOperationError> = operations
        .iter()
        .filter_map(|operation| {
            apply(&state, operation).err().map(|error| {
                DeviceRegistryOperationError::new(
                    operation.device.device_id.clone(),
                    error.code_name(),
                    error.text(),
                    operation.import_mode,
                )
            })
        })
        .collect();
    tracing::debug!(
        devices = operations.len(),
        failed = errors.len(),
        "bulk registry operation"
    );
    let result = BulkRegistryOperationResult {
        is_successful: errors.is_empty(),
        errors,
        warnings: Vec::new(),
    };
    let status = if result.is_successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json_response(status, &result))
}

/// The body: a JSON array of 1 to [`MAX_BULK_DEVICES`] entries, each device named once.
fn read_operations(body: &[u8]) -> Result<Vec<BulkDeviceOperation>, ApiError> {
    let operations: Vec<BulkDeviceOperation> = serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages can quote the body (keys among them): only where, and the
        // rule, which names no value.
        let rule = if e.is_data() {
            " (each entry needs an id and an importMode: create, update, updateIfMatchETag, \
             delete or deleteIfMatchETag)"
        } else {
            ""
        };
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "the request body is not a JSON array of ExportImportDevice objects (line {}, \
                 column {}){rule}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if operations.is_empty() || operations.len() > MAX_BULK_DEVICES {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "a bulk registry request holds 1 to {MAX_BULK_DEVICES} devices, this one {}",
                operations.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for operation in &operations {
        if !seen.insert(operation.device.device_id.as_str()) {
            return Err(ApiError::new(
                ErrorCode::ArgumentInvalid,
                format!(
                    "the device '{}' is named more than once: a device may appear once per \
                     bulk request",
                    operation.device.device_id
                ),
            ));
        }
    }
    Ok(operations)
}

/// Applies one entry's operation.
fn apply(state: &HubState, operation: &BulkDeviceOperation) -> Result<(), ApiError> {
    let device = &operation.device;
    let id = device.device_id.as_str();
    let etag = device.etag.as_str();
    let put = |if_match: Option<&str>| {
        let (spec, scopes) = device_spec(id, device)?;
        state
            .put_device_with_scopes(spec, scopes, if_match)
            .map(drop)
            .map_err(|e| registry_error(e, id))
    };
    match operation.import_mode {
        ImportMode::Create => put(None),
        ImportMode::CreateOrUpdate => match state.get_device(id) {
            Some(_) => put(Some("*")),
            None => put(None),
        },
        ImportMode::Update => put(Some("*")),
        ImportMode::UpdateIfMatchETag => put(Some(etag_or_none(etag)?)),
        ImportMode::Delete => state
            .delete_device(id, None)
            .map_err(|e| registry_error(e, id)),
        ImportMode::DeleteIfMatchETag => state
            .delete_device(id, Some(etag_or_none(etag)?))
            .map_err(|e| registry_error(e, id)),
        ImportMode::UpdateTwin | ImportMode::UpdateTwinIfMatchETag => Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the local hub does not import twins in bulk: update the twin with PATCH \
             /twins/{id}",
        )),
    }
}

/// The etag an `IfMatchETag` mode needs; an entry without one is refused (not treated as `*`).
fn etag_or_none(etag: &str) -> Result<&str, ApiError> {
    if etag.is_empty() {
        Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "an IfMatchETag import mode needs the device's etag (eTag)",
        ))
    } else {
        Ok(etag)
    }
}
