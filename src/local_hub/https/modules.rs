//! The module registry: create, read, update, delete and list the module identities of a
//! device, under `/devices/{id}/modules[/{mid}]`.
//!
//! Bodies are `protocol::Module`, read leniently and written with every read-only field
//! (`Module::hub_reply`). The statuses, as Microsoft Learn's REST reference documents them and
//! the official SDKs check them:
//! - `PUT /devices/{id}/modules/{mid}` answers **201 Created** for a create (no `If-Match`) and
//!   **200 OK** for an update (`If-Match` `"*"` or the etag) ("Modules - Create Or Update
//!   Identity" lists both). Python azure-iot-hub accepts 200 or 201 here
//!   (`protocol/operations/modules_operations.py`, `create_or_update_identity`: `if
//!   response.status_code not in [200, 201]`), Node azure-iothub any 2xx.
//! - `GET /devices/{id}/modules` answers 200 with a JSON array, `GET …/{mid}` 200 with the module
//!   (`get_modules_on_device`, `get_identity`).
//! - `DELETE …/{mid}` answers **204** (`delete_identity`: `not in [204]`); Node's
//!   `Registry.removeModule` sends `If-Match: "*"` when given ids and the module's etag when
//!   given the module object (azure-iot-sdk-node `service/src/registry.ts`, `_removeModule`).
//!
//! Refusals: `ModuleNotFound` (404), `ModuleAlreadyExistsOnDevice` (409), `DeviceNotFound`
//! (404) for a device that does not exist, `PreconditionFailed` (412) for a stale etag and
//! `ArgumentInvalid` (400) for a module id that breaks IoT Hub's rules or a malformed body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::devices::{device_key, if_match};
use super::errors::{ApiError, ErrorCode, registry_error, state_error};
use super::{authorize, json_response, path_id, time_text};
use crate::auth::Permission;
use crate::local_hub::state::{HubState, ModuleRecord, ModuleSpec, RegistryError};
use crate::protocol::{DeviceConnectionState, Module};

/// `PUT /devices/{id}/modules/{mid}`: create (no `If-Match`, 201) or update (`If-Match` `"*"`
/// or the etag, 200).
pub(super) async fn put(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let (device_id, module_id) = path_ids(path)?;
    let body = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("the request body could not be read: {rejection}"),
        )
    })?;
    let spec = module_spec(&device_id, &module_id, &body)?;
    let if_match = if_match(&headers)?;
    let status = if if_match.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let record = state
        .put_module(spec, if_match)
        .map_err(|e| state_error(&e))?;
    Ok(json_response(status, &module_json(&record).hub_reply()))
}

/// `GET /devices/{id}/modules/{mid}`.
pub(super) async fn get(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let (device_id, module_id) = path_ids(path)?;
    let Some(record) = state.get_module(&device_id, &module_id) else {
        if state.get_device(&device_id).is_none() {
            return Err(registry_error(RegistryError::DeviceNotFound, &device_id));
        }
        return Err(ApiError::new(
            ErrorCode::ModuleNotFound,
            format!("module '{module_id}' is not registered on device '{device_id}'"),
        ));
    };
    Ok(json_response(
        StatusCode::OK,
        &module_json(&record).hub_reply(),
    ))
}

/// `GET /devices/{id}/modules`: every module of the device, in id order.
pub(super) async fn list(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let device_id = path_id(path)?;
    let modules: Vec<Module> = state
        .list_modules(&device_id)
        .map_err(|e| state_error(&e))?
        .iter()
        .map(module_json)
        .collect();
    let replies: Vec<_> = modules.iter().map(Module::hub_reply).collect();
    Ok(json_response(StatusCode::OK, &replies))
}

/// `DELETE /devices/{id}/modules/{mid}` with `If-Match` `"*"`, the etag, or none: closes the
/// module's connection.
pub(super) async fn delete(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let (device_id, module_id) = path_ids(path)?;
    let if_match = if_match(&headers)?;
    state
        .delete_module(&device_id, &module_id, if_match)
        .map_err(|e| state_error(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The `{id}` and `{mid}` path segments, percent-decoded.
fn path_ids(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(ids)| ids).map_err(|_| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the device or module id in the path is not valid percent-encoded UTF-8",
        )
    })
}

/// Reads a `PUT` body into what the state needs. The ids come from the path; ids in the body
/// must agree with them (both SDKs send both, Node's `addModule` requires them). Empty keys are
/// generated; only `sas` authentication is served.
fn module_spec(device_id: &str, module_id: &str, body: &[u8]) -> Result<ModuleSpec, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the request body must be a Module JSON object",
        ));
    }
    // serde_json's messages can quote the body: report only where it went wrong.
    let module: Module = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "the request body is not a valid Module JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !module.module_id.is_empty() && module.module_id != module_id {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the moduleId in the body differs from the module id in the path",
        ));
    }
    if !module.device_id.is_empty() && module.device_id != device_id {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the deviceId in the body differs from the device id in the path",
        ));
    }
    if !module.authentication.kind.eq_ignore_ascii_case("sas") {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the local hub supports only 'sas' authentication",
        ));
    }
    let keys = &module.authentication.symmetric_key;
    Ok(ModuleSpec {
        device_id: device_id.to_owned(),
        module_id: module_id.to_owned(),
        primary_key: device_key(&keys.primary_key, "primaryKey")?,
        secondary_key: device_key(&keys.secondary_key, "secondaryKey")?,
        managed_by: module.managed_by.filter(|m| !m.is_empty()),
    })
}

/// A registry record as the one `Module` model, every read-only field filled in.
fn module_json(record: &ModuleRecord) -> Module {
    let mut module = Module::new(record.device_id.clone(), record.module_id.clone())
        .with_symmetric_keys(
            record.primary_key.to_base64(),
            record.secondary_key.to_base64(),
        )
        .with_etag(record.etag.clone());
    module.managed_by = record.managed_by.clone();
    module.generation_id = record.generation_id.clone();
    module.connection_state = if record.connected {
        DeviceConnectionState::Connected
    } else {
        DeviceConnectionState::Disconnected
    };
    module.connection_state_updated_time = Some(time_text(record.connection_state_updated));
    module.last_activity_time = Some(time_text(record.last_activity));
    module
}
