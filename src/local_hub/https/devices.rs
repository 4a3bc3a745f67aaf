//! The identity registry: device create, read, update, delete and list, the C2D queue purge
//! and device statistics.
//!
//! Bodies are `protocol::Device`, read leniently and written with every read-only field
//! (`Device::hub_reply`). The statuses the official SDKs insist on:
//! - `PUT /devices/{id}` answers **200** for create and update alike: Python azure-iot-hub
//!   accepts nothing else (`azure-iot-hub-python`,
//!   `src/azure/iot/hub/protocol/operations/devices_operations.py`, `create_or_update_identity`:
//!   `if response.status_code not in [200]`).
//! - `DELETE /devices/{id}` answers **204** (same file, `delete_identity`).
//! - Without `If-Match` a `PUT` creates (409 if the id is taken); with `"*"` or an etag it
//!   updates: Node's `Registry.create` sends none and `Registry.update` sends `If-Match: "*"`
//!   (`azure-iot-sdk-node`, `service/src/registry.ts`, `_ensureQuoted`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::{ApiError, ErrorCode, registry_error};
use super::{authorize, json_response, path_id, time_text};
use crate::auth::{Permission, SasKey};
use crate::local_hub::state::{
    DeviceAuthentication, DeviceRecord, DeviceScopes, DeviceSpec, DeviceStatus, HubState,
    RegistryError, edge_scope,
};
use crate::protocol::{self, Device, DeviceConnectionState, PurgeResult, RegistryStatistics};

/// `PUT /devices/{id}`: create (no `If-Match`) or update (`If-Match` `"*"` or the etag).
pub(super) async fn put(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let id = path_id(path)?;
    let body = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("the request body could not be read: {rejection}"),
        )
    })?;
    let device = read_device(&body)?;
    if !device.device_id.is_empty() && device.device_id != id {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the deviceId in the body differs from the device id in the path",
        ));
    }
    let (spec, scopes) = device_spec(&id, &device)?;
    let if_match = if_match(&headers)?;
    let record = state
        .put_device_with_scopes(spec, scopes, if_match)
        .map_err(|e| registry_error(e, &id))?;
    Ok(json_response(
        StatusCode::OK,
        &device_json(&record).hub_reply(),
    ))
}

/// `GET /devices/{id}`.
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
    Ok(json_response(
        StatusCode::OK,
        &device_json(&record).hub_reply(),
    ))
}

/// The most devices one `GET /devices` returns.
const MAX_LISTED: usize = 1000;

/// The query of `GET /devices`.
#[derive(Deserialize)]
pub(super) struct ListParams {
    /// The most devices to return (optional: Node's `Registry.list` sends none).
    top: Option<String>,
}

/// `GET /devices[?top=N]`.
pub(super) async fn list(
    State(state): State<Arc<HubState>>,
    query: Result<Query<ListParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let Query(params) = query
        .map_err(|_| ApiError::new(ErrorCode::ArgumentInvalid, "the query string is malformed"))?;
    let top = match params.top.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            ApiError::new(
                ErrorCode::ArgumentInvalid,
                "'top' must be a non-negative integer",
            )
        })?),
    };
    // IoT Hub lists at most 1,000 devices; a `top` outside 1..=1000 counts as 1,000
    // (azure-iot-hub-python `IoTHubRegistryManager.get_devices`, `max_number_of_devices`;
    // Microsoft Learn, "Understand the identity registry in your IoT hub": "List up to 1000
    // identities").
    let top = top
        .filter(|n| (1..=MAX_LISTED).contains(n))
        .unwrap_or(MAX_LISTED);
    let devices: Vec<Device> = state
        .list_devices()
        .iter()
        .take(top)
        .map(device_json)
        .collect();
    let replies: Vec<_> = devices.iter().map(Device::hub_reply).collect();
    Ok(json_response(StatusCode::OK, &replies))
}

/// `DELETE /devices/{id}` with `If-Match` `"*"`, the etag, or none.
pub(super) async fn delete(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let id = path_id(path)?;
    let if_match = if_match(&headers)?;
    state
        .delete_device(&id, if_match)
        .map_err(|e| registry_error(e, &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /devices/{id}/commands`: purges the device's C2D queue.
pub(super) async fn purge(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The C2D queue belongs to ServiceConnect, not to the registry permissions.
    authorize(&state, &headers, Permission::ServiceConnect)?;
    let id = path_id(path)?;
    let purged = state.purge_c2d(&id).map_err(|e| registry_error(e, &id))?;
    let body = PurgeResult {
        total_messages_purged: u64::try_from(purged).unwrap_or(u64::MAX),
        device_id: id,
        module_id: None,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /statistics/devices`.
pub(super) async fn statistics(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let (total, enabled, disabled) = state.device_counts();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let body = RegistryStatistics {
        total_device_count: count(total),
        enabled_device_count: count(enabled),
        disabled_device_count: count(disabled),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// The `If-Match` header, passed to the state as sent: it strips quotes and `W/` and treats
/// `*` as a wildcard (both SDKs quote etags first: Node `registry.ts`, `_ensureQuoted`;
/// Python `iothub_registry_manager.py`, `_ensure_quoted`).
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::new(
                    ErrorCode::ArgumentInvalid,
                    "the If-Match header is not visible ASCII",
                )
            })
        })
        .transpose()
}

/// Reads a `PUT /devices/{id}` body: a [`protocol::Device`], read leniently (see its
/// module): both SDKs' bodies and a body copied from a `GET` are accepted, and the read-only
/// fields are ignored.
fn read_device(body: &[u8]) -> Result<Device, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the request body must be a Device JSON object",
        ));
    }
    // serde_json's messages can quote values from the body, keys among them: report only
    // where the body went wrong.
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "the request body is not a valid Device JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// What the state needs from a device body for the device `id`: the spec and its edge scopes.
pub(super) fn device_spec(
    id: &str,
    device: &Device,
) -> Result<(DeviceSpec, DeviceScopes), ApiError> {
    let authentication = device_authentication(&device.authentication)?;
    let keys = &device.authentication.symmetric_key;
    let spec = DeviceSpec {
        device_id: id.to_owned(),
        status: match device.status {
            protocol::DeviceStatus::Enabled => DeviceStatus::Enabled,
            protocol::DeviceStatus::Disabled => DeviceStatus::Disabled,
        },
        primary_key: device_key(&keys.primary_key, "primaryKey")?,
        secondary_key: device_key(&keys.secondary_key, "secondaryKey")?,
        status_reason: device.status_reason.clone(),
        iot_edge: device.capabilities.iot_edge,
        authentication,
    };
    let scopes = DeviceScopes {
        device_scope: device.device_scope.clone(),
        parent_scopes: device.parent_scopes.clone(),
    };
    Ok((spec, scopes))
}

/// The registry's authentication types (Microsoft Learn, "Authenticate identities with X.509
/// certificates"; the forms azure-iot-hub-python writes in `iothub_registry_manager.py`
/// `create_device_with_sas` / `create_device_with_x509` / `create_device_with_certificate_authority`,
/// and azure-iot-sdk-node `service/src/registry.ts` `_normalizeAuthentication`, which sends
/// `selfSigned` when thumbprints are given without a type). Thumbprints are kept as sent:
/// the Node registry e2e tests store opaque `"0000…"` strings and read them back.
fn device_authentication(
    authentication: &protocol::Authentication,
) -> Result<DeviceAuthentication, ApiError> {
    let thumbprints = &authentication.x509_thumbprint;
    let nonempty = |t: &Option<String>| t.clone().filter(|t| !t.trim().is_empty());
    let primary_thumbprint = nonempty(&thumbprints.primary_thumbprint);
    let secondary_thumbprint = nonempty(&thumbprints.secondary_thumbprint);
    let keys = &authentication.symmetric_key;
    let kind = authentication.kind.as_str();
    if kind.eq_ignore_ascii_case("sas") {
        // A body with thumbprints, no keys and no type (read as `sas`) is a self-signed one.
        let thumbprints_only = (primary_thumbprint.is_some() || secondary_thumbprint.is_some())
            && keys.primary_key.is_empty()
            && keys.secondary_key.is_empty();
        if !thumbprints_only {
            return Ok(DeviceAuthentication::Sas);
        }
    } else if kind.eq_ignore_ascii_case("certificateAuthority") {
        return Ok(DeviceAuthentication::CertificateAuthority);
    } else if !kind.eq_ignore_ascii_case("selfSigned") {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "authentication.type must be 'sas', 'selfSigned' or 'certificateAuthority'",
        ));
    }
    if primary_thumbprint.is_none() && secondary_thumbprint.is_none() {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "a selfSigned device needs authentication.x509Thumbprint.primaryThumbprint or \
             secondaryThumbprint",
        ));
    }
    Ok(DeviceAuthentication::SelfSigned {
        primary_thumbprint,
        secondary_thumbprint,
    })
}

/// A key from the body; `None` when empty, for the hub to generate. Node's create sends
/// `"primaryKey":""` and expects the hub to fill it in (`azure-iot-sdk-node`,
/// `service/src/registry.ts`, `_normalizeAuthentication`). An update without keys also gets
/// new ones, as on IoT Hub (Azure/azure-iot-sdk-node#915: fields missing from an update are
/// reset).
pub(super) fn device_key(text: &str, field: &str) -> Result<Option<SasKey>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    // The error names the field, never the key.
    SasKey::from_base64(text).map(Some).map_err(|_| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("authentication.symmetricKey.{field} is not valid base64"),
        )
    })
}

/// A registry record as the one `Device` model, every read-only field filled in.
pub(super) fn device_json(record: &DeviceRecord) -> Device {
    let mut device = Device::new(record.device_id.clone())
        .with_status(match record.status {
            DeviceStatus::Enabled => protocol::DeviceStatus::Enabled,
            DeviceStatus::Disabled => protocol::DeviceStatus::Disabled,
        })
        .with_symmetric_keys(
            record.primary_key.to_base64(),
            record.secondary_key.to_base64(),
        )
        .with_iot_edge(record.iot_edge)
        .with_etag(record.etag.clone());
    match &record.authentication {
        DeviceAuthentication::Sas => {}
        DeviceAuthentication::SelfSigned {
            primary_thumbprint,
            secondary_thumbprint,
        } => {
            device.authentication = x509_authentication("selfSigned");
            device.authentication.x509_thumbprint.primary_thumbprint = primary_thumbprint.clone();
            device.authentication.x509_thumbprint.secondary_thumbprint =
                secondary_thumbprint.clone();
        }
        DeviceAuthentication::CertificateAuthority => {
            device.authentication = x509_authentication("certificateAuthority");
        }
    }
    device.status_reason = record.status_reason.clone();
    device.generation_id = record.generation_id.clone();
    device.connection_state = if record.connected {
        DeviceConnectionState::Connected
    } else {
        DeviceConnectionState::Disconnected
    };
    device.connection_state_updated_time = Some(time_text(record.connection_state_updated));
    device.status_updated_time = Some(time_text(record.status_updated));
    device.last_activity_time = Some(time_text(record.last_activity));
    device.cloud_to_device_message_count = u64::try_from(record.c2d_count).unwrap_or(u64::MAX);
    if record.iot_edge {
        device.device_scope = Some(edge_scope(&record.device_id, &record.generation_id));
        device.parent_scopes = record.scopes.parent_scopes.clone();
    } else {
        device.device_scope = record.scopes.device_scope.clone();
        device.parent_scopes = record.scopes.device_scope.iter().cloned().collect();
    }
    device
}

/// An X.509 device's authentication as the registry answers it: the type, no keys.
fn x509_authentication(kind: &str) -> protocol::Authentication {
    protocol::Authentication {
        kind: kind.to_owned(),
        ..protocol::Authentication::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_authentication_forms_are_read() {
        let spec = |body: &str| {
            let device = read_device(body.as_bytes())?;
            device_spec("d", &device).map(|(s, _)| s.authentication)
        };
        // Python's selfSigned form, Node's untyped thumbprints, certificateAuthority.
        let python = r#"{"deviceId":"d","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":null}}}"#;
        let untyped =
            r#"{"deviceId":"d","authentication":{"x509Thumbprint":{"primaryThumbprint":"AB"}}}"#;
        for body in [python, untyped] {
            assert_eq!(
                spec(body).unwrap(),
                DeviceAuthentication::SelfSigned {
                    primary_thumbprint: Some("AB".to_owned()),
                    secondary_thumbprint: None
                },
                "{body}"
            );
        }
        assert_eq!(
            spec(r#"{"authentication":{"type":"certificateAuthority"}}"#).unwrap(),
            DeviceAuthentication::CertificateAuthority
        );
        assert_eq!(
            spec(r#"{"deviceId":"d"}"#).unwrap(),
            DeviceAuthentication::Sas
        );
        for bad in [
            r#"{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":" "}}}"#,
            r#"{"authentication":{"type":"none"}}"#,
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }
}
