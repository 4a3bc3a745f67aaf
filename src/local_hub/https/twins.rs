//! Device and module twins: `GET`, `PATCH` (merge) and `PUT` (replace) on `/twins/{id}` and
//! `/twins/{id}/modules/{mid}`.
//!
//! The body is the swagger `Twin` (`azure-iot-sdk-node`, `service/src/service.json`,
//! definitions `Twin` and `TwinProperties`). A write merges (PATCH) or replaces (PUT) the tags
//! and the desired properties; reported properties and identity fields in the body are
//! ignored, since only the device writes those (Microsoft Learn, "Understand and use device
//! twins in IoT Hub", "Back-end operations"). `If-Match` takes `*` or the twin's etag, quoted
//! or not; a mismatch is 412 PreconditionFailed. Every success is 200 with the whole twin, the
//! only status the Python SDK accepts (`azure-iot-hub`, `protocol/operations/
//! devices_operations.py`, `get_twin`/`update_twin`/`replace_twin`).
//!
//! Authorization: reads need `RegistryRead` or `ServiceConnect`, writes `ServiceConnect`
//! (Microsoft Learn, "Control access to IoT Hub by using shared access signatures": service
//! connect grants reading and writing twins).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::errors::{ApiError, ErrorCode, state_error};
use super::{authorize, json_response, time_text};
use crate::auth::Permission;
use crate::local_hub::state::{DeviceStatus, HubState, Identity, TwinView, TwinWrite};

/// The identity in a `/twins/{id}` or `/twins/{id}/modules/{mid}` path.
pub(super) fn twin_identity(
    device: Result<Path<String>, PathRejection>,
) -> Result<Identity, ApiError> {
    device
        .map(|Path(id)| Identity::device(id))
        .map_err(|_| bad_path())
}

/// The identity in a `/twins/{id}/modules/{mid}` path.
pub(super) fn module_twin_identity(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Identity, ApiError> {
    path.map(|Path((device, module))| Identity::module(device, module))
        .map_err(|_| bad_path())
}

fn bad_path() -> ApiError {
    ApiError::new(
        ErrorCode::ArgumentInvalid,
        "the device or module id in the path is not valid percent-encoded UTF-8",
    )
}

/// Reads need registry read or service connect.
fn authorize_read(state: &HubState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize(state, headers, Permission::ServiceConnect)
        .or_else(|_| authorize(state, headers, Permission::RegistryRead))
}

/// `GET /twins/{id}`.
pub(super) async fn get(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&state, &headers)?;
    read(&state, &twin_identity(path)?)
}

/// `GET /twins/{id}/modules/{mid}`.
pub(super) async fn get_module(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&state, &headers)?;
    read(&state, &module_twin_identity(path)?)
}

/// `PATCH /twins/{id}`.
pub(super) async fn patch(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::ServiceConnect)?;
    write(&state, &twin_identity(path)?, &headers, &body, false)
}

/// `PATCH /twins/{id}/modules/{mid}`.
pub(super) async fn patch_module(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::ServiceConnect)?;
    write(&state, &module_twin_identity(path)?, &headers, &body, false)
}

/// `PUT /twins/{id}`.
pub(super) async fn put(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::ServiceConnect)?;
    write(&state, &twin_identity(path)?, &headers, &body, true)
}

/// `PUT /twins/{id}/modules/{mid}`.
pub(super) async fn put_module(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::ServiceConnect)?;
    write(&state, &module_twin_identity(path)?, &headers, &body, true)
}

fn read(state: &HubState, identity: &Identity) -> Result<Response, ApiError> {
    let view = state.twin(identity).map_err(|e| state_error(&e))?;
    Ok(json_response(StatusCode::OK, &twin_json(&view)))
}

fn write(
    state: &HubState,
    identity: &Identity,
    headers: &HeaderMap,
    body: &[u8],
    replace: bool,
) -> Result<Response, ApiError> {
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::new(ErrorCode::ArgumentInvalid, "If-Match is not text"))
        })
        .transpose()?;
    let request = parse_write(body, replace)?;
    let view = state
        .write_twin(identity, request, if_match)
        .map_err(|e| state_error(&e))?;
    Ok(json_response(StatusCode::OK, &twin_json(&view)))
}

/// Reads a write's body: `{"tags": …, "properties": {"desired": …}}`.
fn parse_write(body: &[u8], replace: bool) -> Result<TwinWrite, ApiError> {
    let bad = |text: &str| ApiError::new(ErrorCode::ArgumentInvalid, text);
    let mut twin = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(twin)) => twin,
        Ok(_) => return Err(bad("the twin in the request body is not a JSON object")),
        Err(_) => return Err(bad("the request body is not valid JSON")),
    };
    let tags = twin.remove("tags");
    let desired = match twin.remove("properties") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut properties)) => properties.remove("desired"),
        Some(_) => return Err(bad("'properties' in the twin is not a JSON object")),
    };
    if !replace {
        return Ok(TwinWrite::Patch { tags, desired });
    }
    let object = |value: Option<Value>, what: &str| match value {
        None | Some(Value::Null) => Ok(serde_json::Map::new()),
        Some(Value::Object(members)) => Ok(members),
        Some(_) => Err(bad(&format!("'{what}' in the twin is not a JSON object"))),
    };
    Ok(TwinWrite::Replace {
        tags: object(tags, "tags")?,
        desired: object(desired, "properties.desired")?,
    })
}

/// The swagger `Twin` of an identity; a new device's twin has etag `AAAAAAAAAAE=`, `version`
/// 2 and `$version` 1 on both sides (Microsoft Learn, "Understand the identity registry in
/// your IoT hub", the device lifecycle notification's twin body).
fn twin_json(view: &TwinView) -> Value {
    let mut twin = json!({
        "deviceId": view.identity.device_id,
        "etag": view.etag,
        "deviceEtag": view.device_etag,
        "version": view.version,
        "status": match view.status {
            DeviceStatus::Enabled => "enabled",
            DeviceStatus::Disabled => "disabled",
        },
        "statusReason": view.status_reason,
        "statusUpdateTime": time_text(view.status_updated),
        "connectionState": if view.connected { "Connected" } else { "Disconnected" },
        "lastActivityTime": time_text(view.last_activity),
        "cloudToDeviceMessageCount": view.c2d_count,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
        "capabilities": {"iotEdge": view.iot_edge},
        "tags": view.tags,
        "properties": {
            "desired": view.desired,
            "reported": view.reported,
        },
    });
    if let Some(module) = &view.identity.module_id {
        twin["moduleId"] = Value::String(module.clone());
    }
    twin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bodies_are_read_leniently_but_typed() {
        let patch = parse_write(
            br#"{"deviceId":"d","tags":{"a":1},"properties":{"desired":null,"reported":{"x":1}}}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            patch,
            TwinWrite::Patch {
                tags: Some(json!({"a": 1})),
                desired: Some(Value::Null)
            }
        );
        let replace = parse_write(br#"{"properties":{"desired":{"b":2}}}"#, true).unwrap();
        assert_eq!(
            replace,
            TwinWrite::Replace {
                tags: serde_json::Map::new(),
                desired: json!({"b": 2}).as_object().cloned().unwrap()
            }
        );
        for bad in [&b"nope"[..], b"[]", br#"{"properties":1}"#] {
            assert!(parse_write(bad, false).is_err());
        }
        assert!(parse_write(br#"{"tags":[1]}"#, true).is_err());
    }
}
