//! The identity-registry part of the hub's HTTPS API: device create, read, update, delete and
//! list, the C2D queue purge, device statistics and a read-only device twin.
//!
//! Wire facts follow `/work/shared/protocol.md` §5 (HTTPS REST) and `/work/shared/interop.md`
//! §7; each is cited where it is used, with the SDK file the protocol notes name as its source.
//! The points that break real clients most often:
//!
//! - `PUT /devices/{id}` answers **200** for create and update alike: Python azure-iot-hub 2.7.0
//!   accepts nothing else (protocol.md §5.3; py-hub `protocol/operations/devices_operations.py`).
//! - `DELETE /devices/{id}` answers **204** (same sources).
//! - Every JSON body is sent with `Content-Type: application/json; charset=utf-8`: Node
//!   azure-iothub parses a body only if the type contains `application/json` (protocol.md §5.1;
//!   node-hub `src/common-http/rest_api_client.ts`).
//! - Errors carry the legacy body `{"Message":"ErrorCode:<Name>;<text>",...}` and the header
//!   `iothub-errorcode`, the only shape Node parses (protocol.md §5.8; node-hub
//!   `src/common-http/http.ts::parseErrorBody`).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Permission, SasKey, SasToken};
use crate::local_hub::state::{
    DeviceRecord, DeviceSpec, DeviceStatus, HubState, RegistryError, random_bytes,
};
use crate::protocol::expiry_time;

/// The content type of every JSON body, request or response (protocol.md §5.1).
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The header that names the error (protocol.md §5.8; csharp
/// `CommonConstants.HttpErrorCodeName`).
const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// How IoT Hub writes a time that never happened (protocol.md §5.4 sample).
const NEVER: &str = "0001-01-01T00:00:00";

/// A new twin's etag, `version` and property `$version`s (protocol.md §5.5: doc example etag
/// `AAAAAAAAAAE=`, `version` 2, `$version` 1).
const NEW_TWIN_ETAG: &str = "AAAAAAAAAAE=";
const NEW_TWIN_VERSION: u64 = 2;
const NEW_TWIN_PROPERTIES_VERSION: u64 = 1;

/// The registry's routes, authenticated with policy SAS tokens checked against `state`.
///
/// Any `api-version` query parameter is accepted and ignored (protocol.md §5.1: Node and
/// Python send `2021-04-12`, the C SDK `2020-09-30`). Unknown paths answer 404, and known
/// paths with another method 405, both with a legacy error body.
///
/// The router has its own fallback: to combine it with another router that also has one,
/// call [`Router::reset_fallback`] on one of them before [`Router::merge`].
pub(crate) fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/devices", get(list_devices))
        .route(
            "/devices/{id}",
            get(get_device).put(put_device).delete(delete_device),
        )
        .route("/devices/{id}/commands", delete(purge_commands))
        .route("/statistics/devices", get(device_statistics))
        .route("/twins/{id}", get(get_twin))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

// ---- handlers ----------------------------------------------------------------------------

/// `PUT /devices/{id}`: create (no `If-Match`) or update (`If-Match` `"*"` or the etag).
async fn put_device(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let id = path_id(path)?;
    check_device_id(&id)?;
    let body = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("the request body could not be read: {rejection}"),
        )
    })?;
    let spec = device_spec(&id, &body)?;
    let if_match = if_match(&headers)?;
    // protocol.md §5.2: If-Match absent = create (409 if it exists), `"*"` or an etag = update.
    // Node `registry.ts` creates without If-Match and updates with `If-Match: "*"`.
    let record = state
        .put_device(spec, if_match)
        .map_err(|e| registry_error(e, &id))?;
    // 200 for both, never 201: Python accepts only 200 (protocol.md §5.3).
    Ok(json_response(StatusCode::OK, &DeviceJson::from(&record)))
}

/// `GET /devices/{id}`.
async fn get_device(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let id = path_id(path)?;
    let record = state
        .get_device(&id)
        .ok_or_else(|| registry_error(RegistryError::DeviceNotFound, &id))?;
    Ok(json_response(StatusCode::OK, &DeviceJson::from(&record)))
}

/// The query of `GET /devices`.
#[derive(Deserialize)]
struct ListParams {
    /// The most devices to return (protocol.md §5.2: optional; Node's `list()` omits it).
    top: Option<String>,
}

/// `GET /devices[?top=N]`.
async fn list_devices(
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
    let devices: Vec<DeviceJson> = state
        .list_devices()
        .iter()
        .take(top.unwrap_or(usize::MAX))
        .map(DeviceJson::from)
        .collect();
    Ok(json_response(StatusCode::OK, &devices))
}

/// `DELETE /devices/{id}` with `If-Match` `"*"`, the etag, or none.
async fn delete_device(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryWrite)?;
    let id = path_id(path)?;
    let if_match = if_match(&headers)?;
    // Node and Python send `If-Match: "*"` or the quoted etag (protocol.md §5.2, §5.9).
    state
        .delete_device(&id, if_match)
        .map_err(|e| registry_error(e, &id))?;
    // 204, the only status Python accepts (protocol.md §5.3).
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /devices/{id}/commands`: purges the device's C2D queue.
async fn purge_commands(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The C2D queue belongs to ServiceConnect, not to the registry permissions.
    authorize(&state, &headers, Permission::ServiceConnect)?;
    let id = path_id(path)?;
    let purged = state.purge_c2d(&id).map_err(|e| registry_error(e, &id))?;
    // protocol.md §5.2: 200 `{"totalMessagesPurged":N,"deviceId":"…","moduleId":null}`.
    let body = json!({
        "totalMessagesPurged": purged,
        "deviceId": id,
        "moduleId": null,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /statistics/devices`.
async fn device_statistics(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::RegistryRead)?;
    let (total, enabled, disabled) = state.device_counts();
    // Swagger `RegistryStatistics` (node-hub `src/service.json`, protocol.md §5.2).
    let body = json!({
        "totalDeviceCount": total,
        "enabledDeviceCount": enabled,
        "disabledDeviceCount": disabled,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /twins/{id}`: the twin of a device whose properties were never written.
async fn get_twin(
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

/// Unknown paths.
async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "the local hub serves no such resource")
}

/// Known paths asked with a method they do not serve.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "the local hub does not serve this method on this resource",
    )
}

/// Logs each request's method, path and outcome at debug level. The query string and the
/// headers (which hold the SAS token) are left out.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let error_code = response
        .headers()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        error_code,
        "registry request"
    );
    response
}

// ---- request checks ------------------------------------------------------------------------

/// Checks the `Authorization` header: a policy SAS token (protocol.md §5.1) whose policy has
/// `needed`. Neither the log nor the error text ever contains the token.
fn authorize(state: &HubState, headers: &HeaderMap, needed: Permission) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "the request has no Authorization header",
        ));
    };
    let token: SasToken = value
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not a SharedAccessSignature token")
        })?;
    state.authorize_service(&token, needed).map_err(|denied| {
        tracing::debug!(reason = %denied, "registry request refused");
        ApiError::unauthorized(denied.to_string())
    })
}

/// The `{id}` path segment, percent-decoded.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|_| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the device id in the path is not valid percent-encoded UTF-8",
        )
    })
}

/// Device id rules (protocol.md §5.4, doc `iot-hub-devguide-identity-registry.md`): at most
/// 128 ASCII 7-bit alphanumerics plus `- . + % _ # * ? ! ( ) , = @ $ '`.
fn check_device_id(id: &str) -> Result<(), ApiError> {
    const EXTRA: &[u8] = b"-.+%_#*?!(),=@$'";
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || EXTRA.contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "a device id is 1 to 128 ASCII letters, digits or - . + % _ # * ? ! ( ) , = @ $ '",
        ))
    }
}

/// The `If-Match` header, passed to the state as sent: it strips quotes and `W/` and treats
/// `*` as a wildcard (protocol.md §5.9).
fn if_match(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
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

/// What a `PUT /devices/{id}` body may hold (swagger `Device`, protocol.md §5.4). Everything is
/// optional and unknown fields (`etag`, `generationId`, `connectionState`, ...) are ignored,
/// so both SDKs' bodies and a body copied from a `GET` are accepted.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DeviceBody {
    device_id: Option<String>,
    status: Option<String>,
    status_reason: Option<String>,
    authentication: Option<AuthenticationBody>,
    capabilities: Option<CapabilitiesBody>,
}

/// Swagger `AuthenticationMechanism`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AuthenticationBody {
    symmetric_key: Option<SymmetricKeyBody>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Swagger `SymmetricKey`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SymmetricKeyBody {
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

/// Swagger `DeviceCapabilities`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct CapabilitiesBody {
    iot_edge: Option<bool>,
}

/// Reads a `PUT /devices/{id}` body into what the state needs.
fn device_spec(path_id: &str, body: &[u8]) -> Result<DeviceSpec, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the request body must be a Device JSON object",
        ));
    }
    // serde_json's messages can quote values from the body, keys among them: report only
    // where the body went wrong.
    let device: DeviceBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "the request body is not a valid Device JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if let Some(body_id) = &device.device_id {
        if body_id != path_id {
            return Err(ApiError::new(
                ErrorCode::ArgumentInvalid,
                "the deviceId in the body differs from the device id in the path",
            ));
        }
    }
    // Absent status = enabled; the swagger enum is `enabled` / `disabled` (protocol.md §5.4).
    let status = match device.status.as_deref() {
        None => DeviceStatus::Enabled,
        Some(s) if s.eq_ignore_ascii_case("enabled") => DeviceStatus::Enabled,
        Some(s) if s.eq_ignore_ascii_case("disabled") => DeviceStatus::Disabled,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::ArgumentInvalid,
                "status must be 'enabled' or 'disabled'",
            ));
        }
    };
    let authentication = device.authentication.unwrap_or_default();
    if let Some(kind) = authentication.kind.as_deref() {
        if !kind.eq_ignore_ascii_case("sas") {
            return Err(ApiError::new(
                ErrorCode::ArgumentInvalid,
                "the local hub supports only 'sas' authentication",
            ));
        }
    }
    let keys = authentication.symmetric_key.unwrap_or_default();
    Ok(DeviceSpec {
        device_id: path_id.to_owned(),
        status,
        status_reason: device.status_reason,
        primary_key: device_key(keys.primary_key.as_deref(), "primaryKey")?,
        secondary_key: device_key(keys.secondary_key.as_deref(), "secondaryKey")?,
        iot_edge: device
            .capabilities
            .and_then(|c| c.iot_edge)
            .unwrap_or(false),
    })
}

/// A key from the body; `None` when absent or empty, for the hub to generate. Node's create
/// sends `"primaryKey":""` and expects the hub to fill it in (protocol.md §5.4; node-hub
/// `registry.ts::_normalizeAuthentication`). An update without keys also gets new ones, as on
/// IoT Hub (Azure/azure-iot-sdk-node#915: fields missing from an update are reset).
fn device_key(text: Option<&str>, field: &str) -> Result<Option<SasKey>, ApiError> {
    match text {
        None | Some("") => Ok(None),
        // The error names the field, never the key.
        Some(text) => SasKey::from_base64(text).map(Some).map_err(|_| {
            ApiError::new(
                ErrorCode::ArgumentInvalid,
                format!("authentication.symmetricKey.{field} is not valid base64"),
            )
        }),
    }
}

// ---- response bodies -----------------------------------------------------------------------

/// Swagger `Device` as IoT Hub writes it (protocol.md §5.4; node-hub `src/service.json`,
/// py-hub `protocol/models/device_py3.py`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceJson {
    device_id: String,
    generation_id: String,
    etag: String,
    connection_state: &'static str,
    status: &'static str,
    status_reason: Option<String>,
    connection_state_updated_time: String,
    status_updated_time: String,
    last_activity_time: String,
    cloud_to_device_message_count: usize,
    authentication: AuthenticationJson,
    capabilities: CapabilitiesJson,
    device_scope: Option<String>,
}

/// Swagger `AuthenticationMechanism`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationJson {
    symmetric_key: SymmetricKeyJson,
    #[serde(rename = "type")]
    kind: &'static str,
    x509_thumbprint: X509ThumbprintJson,
}

/// Swagger `SymmetricKey`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SymmetricKeyJson {
    primary_key: String,
    secondary_key: String,
}

/// Swagger `X509Thumbprint`: always empty, devices here use SAS.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct X509ThumbprintJson {
    primary_thumbprint: Option<String>,
    secondary_thumbprint: Option<String>,
}

/// Swagger `DeviceCapabilities`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CapabilitiesJson {
    iot_edge: bool,
}

impl From<&DeviceRecord> for DeviceJson {
    fn from(record: &DeviceRecord) -> Self {
        DeviceJson {
            device_id: record.device_id.clone(),
            generation_id: record.generation_id.clone(),
            etag: record.etag.clone(),
            connection_state: connection_state(record),
            status: status_text(record.status),
            status_reason: record.status_reason.clone(),
            connection_state_updated_time: time_text(record.connection_state_updated),
            status_updated_time: time_text(record.status_updated),
            last_activity_time: time_text(record.last_activity),
            cloud_to_device_message_count: record.c2d_count,
            authentication: AuthenticationJson {
                symmetric_key: SymmetricKeyJson {
                    primary_key: record.primary_key.to_base64().to_owned(),
                    secondary_key: record.secondary_key.to_base64().to_owned(),
                },
                kind: "sas",
                x509_thumbprint: X509ThumbprintJson::default(),
            },
            capabilities: CapabilitiesJson {
                iot_edge: record.iot_edge,
            },
            device_scope: device_scope(record),
        }
    }
}

/// An edge device's scope, `ms-azure-iot-edge://{id}-{generationId}` (protocol.md §5.4
/// sample); other devices have none here.
fn device_scope(record: &DeviceRecord) -> Option<String> {
    record.iot_edge.then(|| {
        format!(
            "ms-azure-iot-edge://{}-{}",
            record.device_id, record.generation_id
        )
    })
}

/// The twin of a device whose tags and properties were never written (protocol.md §5.5:
/// swagger `Twin`; a new twin has etag `AAAAAAAAAAE=`, `version` 2 and `$version` 1).
fn twin_json(record: &DeviceRecord) -> serde_json::Value {
    let updated = time_text(record.status_updated);
    json!({
        "deviceId": record.device_id,
        "etag": NEW_TWIN_ETAG,
        "deviceEtag": record.etag,
        "version": NEW_TWIN_VERSION,
        "status": status_text(record.status),
        "statusReason": record.status_reason,
        "statusUpdateTime": time_text(record.status_updated),
        "connectionState": connection_state(record),
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

/// `Connected` / `Disconnected` (protocol.md §5.4 enums).
fn connection_state(record: &DeviceRecord) -> &'static str {
    if record.connected {
        "Connected"
    } else {
        "Disconnected"
    }
}

/// `enabled` / `disabled` (protocol.md §5.4 enums).
fn status_text(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Enabled => "enabled",
        DeviceStatus::Disabled => "disabled",
    }
}

/// ISO 8601 UTC, IoT Hub's seven fractional digits.
fn time_text(at: SystemTime) -> String {
    expiry_time::format(at).unwrap_or_else(|_| NEVER.to_owned())
}

/// A JSON response with the content type Node needs (protocol.md §5.1).
fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))],
            body,
        )
            .into_response(),
        Err(_) => ApiError::new(ErrorCode::ServerError, "the response could not be encoded")
            .into_response(),
    }
}

// ---- errors --------------------------------------------------------------------------------

/// The error names this API answers with (protocol.md §5.8 table; csharp
/// `iothub/service/src/Common/Exceptions/ErrorCode.cs`). `NotFound` and `MethodNotAllowed`
/// are the local hub's own names for routes it does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorCode {
    ArgumentInvalid,
    IotHubUnauthorizedAccess,
    DeviceNotFound,
    DeviceAlreadyExists,
    PreconditionFailed,
    NotFound,
    MethodNotAllowed,
    ServerError,
}

impl ErrorCode {
    fn name(self) -> &'static str {
        match self {
            ErrorCode::ArgumentInvalid => "ArgumentInvalid",
            ErrorCode::IotHubUnauthorizedAccess => "IotHubUnauthorizedAccess",
            ErrorCode::DeviceNotFound => "DeviceNotFound",
            ErrorCode::DeviceAlreadyExists => "DeviceAlreadyExists",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::ServerError => "ServerError",
        }
    }

    /// The HTTP status; Node maps it to its error types (protocol.md §5.8: 400 ArgumentError,
    /// 401 UnauthorizedError, 404 DeviceNotFoundError, 409 DeviceAlreadyExistsError, 412
    /// InvalidEtagError).
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::ArgumentInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::IotHubUnauthorizedAccess => StatusCode::UNAUTHORIZED,
            ErrorCode::DeviceNotFound | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::DeviceAlreadyExists => StatusCode::CONFLICT,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer: status, `iothub-errorcode` header and legacy body.
#[derive(Debug)]
struct ApiError {
    code: ErrorCode,
    text: String,
}

impl ApiError {
    fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ApiError {
            code,
            text: text.into(),
        }
    }

    fn unauthorized(text: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::IotHubUnauthorizedAccess, text)
    }
}

/// Maps the state's refusals to IoT Hub's codes.
fn registry_error(error: RegistryError, device_id: &str) -> ApiError {
    match error {
        RegistryError::DeviceNotFound => ApiError::new(
            ErrorCode::DeviceNotFound,
            format!("the device '{device_id}' does not exist"),
        ),
        RegistryError::DeviceAlreadyExists => ApiError::new(
            ErrorCode::DeviceAlreadyExists,
            format!("a device with id '{device_id}' already exists"),
        ),
        RegistryError::PreconditionFailed => ApiError::new(
            ErrorCode::PreconditionFailed,
            "the If-Match etag does not match the device's etag",
        ),
    }
}

/// The legacy error body (protocol.md §5.8, issue Azure/azure-iot-sdks#711):
/// `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:<hex>-TimeStamp:<time>"}`.
#[derive(Serialize)]
struct LegacyErrorBody {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "ExceptionMessage")]
    exception_message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let name = self.code.name();
        // Node splits `Message` on ';' and needs a non-empty code and text (node-hub
        // `src/common-http/http.ts::parseErrorBody`): keep the text to one ';'-free part.
        let mut text = self.text.replace(';', ",");
        if text.is_empty() {
            text = self
                .code
                .status()
                .canonical_reason()
                .unwrap_or("error")
                .to_owned();
        }
        let body = LegacyErrorBody {
            message: format!("ErrorCode:{name};{text}"),
            exception_message: format!(
                "Tracking ID:{}-TimeStamp:{}",
                tracking_id(),
                legacy_timestamp()
            ),
        };
        let mut response = json_response(self.code.status(), &body);
        response
            .headers_mut()
            .insert(ERROR_CODE_HEADER, HeaderValue::from_static(name));
        response
    }
}

/// 32 lowercase hex digits, like `e4cb4b6c18f4462fbe2c1a2d02d7dbe4` (protocol.md §5.8).
fn tracking_id() -> String {
    use std::fmt::Write as _;
    random_bytes::<16>()
        .iter()
        .fold(String::with_capacity(32), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// `MM/dd/yyyy HH:mm:ss` in UTC, as in the legacy sample `07/16/2016 00:12:41` (protocol.md
/// §5.8).
fn legacy_timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[month]/[day]/[year] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use axum::body::Body;
    use axum::http::{Method, Request};
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth::{AccessPolicy, Permissions, ResourceUri};
    use crate::local_hub::C2dLimits;
    use crate::local_hub::state::{HubSettings, generate_key};
    use crate::message::Message;

    const HOST: &str = "localhost";

    struct Hub {
        state: Arc<HubState>,
        router: Router,
        owner: String,
        reader: String,
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn policy_token(key: &SasKey, policy: &str, expiry: u64) -> String {
        key.token(&ResourceUri::service(HOST), Some(policy), expiry)
            .to_string()
    }

    fn hub() -> Hub {
        let owner_key = generate_key();
        let reader_key = generate_key();
        let policies = vec![
            AccessPolicy {
                name: "iothubowner".into(),
                primary_key: owner_key.clone(),
                secondary_key: generate_key(),
                permissions: Permissions::ALL,
            },
            AccessPolicy {
                name: "registryRead".into(),
                primary_key: reader_key.clone(),
                secondary_key: generate_key(),
                permissions: Permissions::NONE.with(Permission::RegistryRead),
            },
        ];
        let state = Arc::new(HubState::new(
            HubSettings {
                host_name: HOST.into(),
                c2d: C2dLimits::default(),
                feedback_flush_interval: Duration::from_secs(15),
                feedback: Default::default(),
            },
            policies,
        ));
        let expiry = now_secs() + 3600;
        Hub {
            router: router(state.clone()),
            state,
            owner: policy_token(&owner_key, "iothubowner", expiry),
            reader: policy_token(&reader_key, "registryRead", expiry),
        }
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn json(&self) -> Value {
            let content_type = self.headers.get(header::CONTENT_TYPE).unwrap();
            assert_eq!(content_type, JSON_UTF8);
            serde_json::from_slice(&self.body).unwrap()
        }

        /// Parses an error as Node's `HttpBase.parseErrorBody` does: `Message` split on ';',
        /// the code after `ErrorCode:` (protocol.md §5.8); checks the header agrees.
        fn error_code(&self) -> (String, String) {
            let body = self.json();
            let message = body["Message"].as_str().unwrap();
            let parts: Vec<&str> = message.split(';').collect();
            assert_eq!(parts.len(), 2, "{message}");
            let code_parts: Vec<&str> = parts[0].split(':').collect();
            assert_eq!(code_parts[0], "ErrorCode");
            assert!(!code_parts[1].is_empty() && !parts[1].is_empty());
            let exception = body["ExceptionMessage"].as_str().unwrap();
            assert!(exception.starts_with("Tracking ID:"), "{exception}");
            assert!(exception.contains("-TimeStamp:"), "{exception}");
            assert_eq!(self.headers.get(ERROR_CODE_HEADER).unwrap(), code_parts[1]);
            (code_parts[1].to_owned(), parts[1].to_owned())
        }
    }

    async fn call(
        router: &Router,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, JSON_UTF8)
                .body(Body::from(body.to_owned())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    const NODE_CREATE_DEV2: &str = r#"{"deviceId":"dev2","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#;

    fn python_create_body(id: &str, primary: &str, secondary: &str) -> String {
        format!(
            r#"{{"deviceId": "{id}", "status": "enabled", "authentication": {{"symmetricKey": {{"primaryKey": "{primary}", "secondaryKey": "{secondary}"}}, "type": "sas"}}, "capabilities": {{"iotEdge": false}}}}"#
        )
    }

    async fn create(hub: &Hub, id: &str) -> Value {
        let body = format!(
            r#"{{"deviceId":"{id}","authentication":{{"type":"sas","symmetricKey":{{"primaryKey":"","secondaryKey":""}}}}}}"#
        );
        let uri = format!("/devices/{id}?api-version=2021-04-12");
        let reply = call(
            &hub.router,
            Method::PUT,
            &uri,
            Some(&hub.owner),
            &[],
            Some(&body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()
    }

    #[tokio::test]
    async fn node_create_with_empty_keys_gets_generated_keys() {
        let hub = hub();
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev2?api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            Some(NODE_CREATE_DEV2),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let device = reply.json();
        assert_eq!(device["deviceId"], "dev2");
        assert_eq!(device["status"], "enabled");
        assert_eq!(device["connectionState"], "Disconnected");
        assert_eq!(device["cloudToDeviceMessageCount"], 0);
        assert_eq!(device["authentication"]["type"], "sas");
        assert_eq!(
            device["authentication"]["x509Thumbprint"],
            json!({"primaryThumbprint": null, "secondaryThumbprint": null})
        );
        assert_eq!(device["capabilities"]["iotEdge"], false);
        assert!(device["statusReason"].is_null());
        assert!(!device["etag"].as_str().unwrap().is_empty());
        assert!(!device["generationId"].as_str().unwrap().is_empty());
        assert!(device["lastActivityTime"].as_str().unwrap().ends_with('Z'));
        let primary = device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap();
        let secondary = device["authentication"]["symmetricKey"]["secondaryKey"]
            .as_str()
            .unwrap();
        assert_eq!(primary.len(), 44);
        assert_eq!(secondary.len(), 44);
        assert_ne!(primary, secondary);
        let stored = hub.state.get_device("dev2").unwrap();
        assert_eq!(stored.primary_key.to_base64(), primary);
    }

    #[tokio::test]
    async fn create_with_absent_keys_and_no_authentication_gets_generated_keys() {
        let hub = hub();
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/bare",
            Some(&hub.owner),
            &[],
            Some(r#"{"deviceId":"bare"}"#),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let device = reply.json();
        assert_eq!(device["status"], "enabled");
        let key = &device["authentication"]["symmetricKey"];
        assert_eq!(key["primaryKey"].as_str().unwrap().len(), 44);
        assert_eq!(key["secondaryKey"].as_str().unwrap().len(), 44);
    }

    #[tokio::test]
    async fn python_create_keeps_the_given_keys() {
        let hub = hub();
        let primary = generate_key().to_base64().to_owned();
        let secondary = generate_key().to_base64().to_owned();
        let body = python_create_body("dev1", &primary, &secondary);
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev1?api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            Some(&body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let device = reply.json();
        assert_eq!(
            device["authentication"]["symmetricKey"]["primaryKey"],
            primary
        );
        assert_eq!(
            device["authentication"]["symmetricKey"]["secondaryKey"],
            secondary
        );
        assert_eq!(device["capabilities"]["iotEdge"], false);
        assert!(device["deviceScope"].is_null());
    }

    #[tokio::test]
    async fn create_twice_is_device_already_exists() {
        let hub = hub();
        create(&hub, "dev1").await;
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            Some(NODE_CREATE_DEV2.replace("dev2", "dev1").as_str()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CONFLICT);
        let (code, text) = reply.error_code();
        assert_eq!(code, "DeviceAlreadyExists");
        assert!(text.contains("dev1"));
    }

    #[tokio::test]
    async fn get_and_list_return_devices() {
        let hub = hub();
        let created = create(&hub, "dev1").await;
        create(&hub, "dev2").await;
        let reply = call(
            &hub.router,
            Method::GET,
            "/devices/dev1?api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), created);

        let reply = call(
            &hub.router,
            Method::GET,
            "/devices?api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let ids: Vec<Value> = reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deviceId"].clone())
            .collect();
        assert_eq!(ids, vec![json!("dev1"), json!("dev2")]);

        let reply = call(
            &hub.router,
            Method::GET,
            "/devices?top=1&api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.json().as_array().unwrap().len(), 1);

        let reply = call(
            &hub.router,
            Method::GET,
            "/devices?top=-1",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code().0, "ArgumentInvalid");
    }

    #[tokio::test]
    async fn update_checks_the_etag() {
        let hub = hub();
        let created = create(&hub, "dev1").await;
        let etag = created["etag"].as_str().unwrap().to_owned();
        let update = r#"{"deviceId":"dev1","status":"disabled","statusReason":"maintenance"}"#;

        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev1",
            Some(&hub.owner),
            &[("If-Match", "\"bm90LXRoZS1ldGFn\"")],
            Some(update),
        )
        .await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(reply.error_code().0, "PreconditionFailed");

        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev1",
            Some(&hub.owner),
            &[("If-Match", "\"*\"")],
            Some(update),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let updated = reply.json();
        assert_eq!(updated["status"], "disabled");
        assert_eq!(updated["statusReason"], "maintenance");
        assert_eq!(updated["generationId"], created["generationId"]);
        let new_etag = updated["etag"].as_str().unwrap().to_owned();
        assert_ne!(new_etag, etag);

        // The old etag no longer matches; the new one does, quoted and weak.
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev1",
            Some(&hub.owner),
            &[("If-Match", &format!("\"{etag}\""))],
            Some(update),
        )
        .await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev1",
            Some(&hub.owner),
            &[("If-Match", &format!("W/\"{new_etag}\""))],
            Some(r#"{"deviceId":"dev1"}"#),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "enabled");
    }

    #[tokio::test]
    async fn update_of_an_unknown_device_is_device_not_found() {
        let hub = hub();
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/ghost",
            Some(&hub.owner),
            &[("If-Match", "\"*\"")],
            Some(r#"{"deviceId":"ghost"}"#),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code().0, "DeviceNotFound");
    }

    #[tokio::test]
    async fn delete_then_get_is_device_not_found() {
        let hub = hub();
        let created = create(&hub, "dev1").await;
        let reply = call(
            &hub.router,
            Method::DELETE,
            "/devices/dev1",
            Some(&hub.owner),
            &[("If-Match", "\"bm90LXRoZS1ldGFn\"")],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(reply.error_code().0, "PreconditionFailed");
        assert_eq!(
            created["etag"],
            hub.state.get_device("dev1").unwrap().etag.as_str()
        );

        let reply = call(
            &hub.router,
            Method::DELETE,
            "/devices/dev1?api-version=2021-04-12",
            Some(&hub.owner),
            &[("If-Match", "\"*\"")],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());

        let reply = call(
            &hub.router,
            Method::GET,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        let (code, text) = reply.error_code();
        assert_eq!(code, "DeviceNotFound");
        assert!(text.contains("dev1"));

        let reply = call(
            &hub.router,
            Method::DELETE,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code().0, "DeviceNotFound");
    }

    #[tokio::test]
    async fn delete_without_if_match_is_unconditional() {
        let hub = hub();
        create(&hub, "dev1").await;
        let reply = call(
            &hub.router,
            Method::DELETE,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(hub.state.get_device("dev1").is_none());
    }

    #[tokio::test]
    async fn purge_reports_the_queued_messages() {
        let hub = hub();
        create(&hub, "dev1").await;
        hub.state.enqueue_c2d("dev1", Message::new("x")).unwrap();
        hub.state.enqueue_c2d("dev1", Message::new("x")).unwrap();
        let device = call(
            &hub.router,
            Method::GET,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            None,
        )
        .await
        .json();
        assert_eq!(device["cloudToDeviceMessageCount"], 2);

        let reply = call(
            &hub.router,
            Method::DELETE,
            "/devices/dev1/commands?api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json(),
            json!({"totalMessagesPurged": 2, "deviceId": "dev1", "moduleId": null})
        );

        let reply = call(
            &hub.router,
            Method::DELETE,
            "/devices/ghost/commands",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code().0, "DeviceNotFound");
    }

    #[tokio::test]
    async fn statistics_count_enabled_and_disabled_devices() {
        let hub = hub();
        create(&hub, "dev1").await;
        create(&hub, "dev2").await;
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev3",
            Some(&hub.owner),
            &[],
            Some(r#"{"deviceId":"dev3","status":"disabled"}"#),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = call(
            &hub.router,
            Method::GET,
            "/statistics/devices?api-version=2021-04-12",
            Some(&hub.reader),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json(),
            json!({"totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1})
        );
    }

    #[tokio::test]
    async fn twin_of_a_new_device() {
        let hub = hub();
        create(&hub, "dev1").await;
        let reply = call(
            &hub.router,
            Method::GET,
            "/twins/dev1?api-version=2021-04-12",
            Some(&hub.reader),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let twin = reply.json();
        assert_eq!(twin["deviceId"], "dev1");
        assert_eq!(twin["etag"], "AAAAAAAAAAE=");
        assert_eq!(twin["version"], 2);
        assert_eq!(twin["status"], "enabled");
        assert_eq!(twin["connectionState"], "Disconnected");
        assert_eq!(twin["authenticationType"], "sas");
        assert_eq!(twin["cloudToDeviceMessageCount"], 0);
        for side in ["desired", "reported"] {
            let properties = &twin["properties"][side];
            assert_eq!(properties["$version"], 1);
            assert!(properties["$metadata"]["$lastUpdated"].is_string());
        }

        let reply = call(
            &hub.router,
            Method::GET,
            "/twins/ghost",
            Some(&hub.reader),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code().0, "DeviceNotFound");
    }

    #[tokio::test]
    async fn registry_read_policy_can_read_but_not_write() {
        let hub = hub();
        create(&hub, "dev1").await;
        for uri in [
            "/devices/dev1",
            "/devices",
            "/statistics/devices",
            "/twins/dev1",
        ] {
            let reply = call(&hub.router, Method::GET, uri, Some(&hub.reader), &[], None).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}");
        }
        let writes = [
            (Method::PUT, "/devices/dev9", Some(NODE_CREATE_DEV2)),
            (Method::DELETE, "/devices/dev1", None),
            (Method::DELETE, "/devices/dev1/commands", None),
        ];
        for (method, uri, body) in writes {
            let reply = call(&hub.router, method, uri, Some(&hub.reader), &[], body).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(reply.error_code().0, "IotHubUnauthorizedAccess");
        }
        assert!(hub.state.get_device("dev1").is_some());
        assert!(hub.state.get_device("dev9").is_none());
    }

    #[tokio::test]
    async fn missing_or_malformed_token_is_unauthorized() {
        let hub = hub();
        for auth in [
            None,
            Some("Bearer abc"),
            Some("SharedAccessSignature sr=localhost"),
        ] {
            let reply = call(&hub.router, Method::GET, "/devices", auth, &[], None).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.error_code().0, "IotHubUnauthorizedAccess");
        }
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/dev2",
            None,
            &[],
            Some(NODE_CREATE_DEV2),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(hub.state.get_device("dev2").is_none());
    }

    #[tokio::test]
    async fn expired_or_forged_token_is_unauthorized_and_not_echoed() {
        let hub = hub();
        let owner_key = hub.state.policy("iothubowner").unwrap().primary_key;
        let expired = policy_token(&owner_key, "iothubowner", now_secs() - 60);
        let forged = policy_token(&generate_key(), "iothubowner", now_secs() + 3600);
        for token in [&expired, &forged] {
            let reply = call(&hub.router, Method::GET, "/devices", Some(token), &[], None).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.error_code().0, "IotHubUnauthorizedAccess");
            let body = String::from_utf8(reply.body.to_vec()).unwrap();
            let sig = token
                .split("sig=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap();
            assert!(!body.contains(sig));
        }
    }

    #[tokio::test]
    async fn bad_bodies_are_argument_invalid() {
        let hub = hub();
        let secret = "not base64 at all!";
        let bodies = [
            python_create_body("dev1", secret, ""),
            python_create_body("other", "", ""),
            r#"{"deviceId":"dev1","status":"sleeping"}"#.to_owned(),
            r#"{"deviceId":"dev1","authentication":{"type":"selfSigned"}}"#.to_owned(),
            r#"{"deviceId":"dev1","capabilities":{"iotEdge":"yes"}}"#.to_owned(),
            "not json".to_owned(),
            String::new(),
        ];
        for body in &bodies {
            let reply = call(
                &hub.router,
                Method::PUT,
                "/devices/dev1",
                Some(&hub.owner),
                &[],
                Some(body),
            )
            .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
            let (code, text) = reply.error_code();
            assert_eq!(code, "ArgumentInvalid");
            assert!(!text.contains(secret));
        }
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/bad%2Fid",
            Some(&hub.owner),
            &[],
            Some("{}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(hub.state.device_counts().0, 0);
    }

    #[tokio::test]
    async fn edge_device_gets_a_scope() {
        let hub = hub();
        let reply = call(
            &hub.router,
            Method::PUT,
            "/devices/edge1",
            Some(&hub.owner),
            &[],
            Some(r#"{"deviceId":"edge1","capabilities":{"iotEdge":true}}"#),
        )
        .await;
        let device = reply.json();
        assert_eq!(device["capabilities"]["iotEdge"], true);
        let scope = format!(
            "ms-azure-iot-edge://edge1-{}",
            device["generationId"].as_str().unwrap()
        );
        assert_eq!(device["deviceScope"], scope.as_str());
    }

    #[tokio::test]
    async fn unknown_routes_get_a_legacy_error() {
        let hub = hub();
        let reply = call(
            &hub.router,
            Method::GET,
            "/nothing/here?api-version=2021-04-12",
            Some(&hub.owner),
            &[],
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code().0, "NotFound");

        let reply = call(
            &hub.router,
            Method::POST,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            Some("{}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.error_code().0, "MethodNotAllowed");
    }
}
