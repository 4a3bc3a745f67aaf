//! IoT Hub's REST error answers: the error code names, their HTTP statuses, the
//! `iothub-errorcode` header and the legacy body.
//!
//! IoT Hub writes one of two bodies, both with a top-level `Message`: the legacy
//! `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:<hex>-TimeStamp:<time>"}`
//! (issue Azure/azure-iot-sdks#711) and a newer one whose `Message` holds a JSON string with a
//! numeric `errorCode`; the C# service SDK reads both (`azure-iot-sdk-csharp`,
//! `common/src/service/ExceptionHandlingHelper.cs`) and so does `protocol::error_code`. Node's
//! azure-iothub reads only the legacy one: it splits `Message` on `;` and needs a non-empty
//! code and text (`azure-iot-sdk-node`,
//! `common/transport/http/src/http.ts`, `Http.parseErrorBody`), and
//! only then maps the status to its error types (400 ArgumentError, 401 UnauthorizedError,
//! 404 DeviceNotFoundError, 409 DeviceAlreadyExistsError, 412 InvalidEtagError). So the hub
//! answers with the legacy body and the header.
//!
//! The two direct-method failures are the exception: IoT Hub answers them in the newer form
//! with a numeric code and an `info` object (404103 with `"info":{"timeout":"00:00:00"}`:
//! issues Azure/azure-iot-sdk-csharp#3442 and Azure/iotedge#98; 504101: issue
//! Azure/azure-iot-sdk-java#640), and Node reads neither form for them (its error type comes
//! from the status alone: 404 gives a plain `Error`, 504 `GatewayTimeoutError`), so the hub
//! writes them as IoT Hub does.

use std::time::SystemTime;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::json_response;
use crate::local_hub::state::{RegistryError, random_bytes};

/// The header that names the error (`azure-iot-sdk-csharp`,
/// `CommonConstants.HttpErrorCodeName`).
pub(super) const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// The error names this API answers with (`azure-iot-sdk-csharp`,
/// `iothub/service/src/Common/Exceptions/ErrorCode.cs`). `NotFound` and `MethodNotAllowed`
/// are the local hub's own names for routes it does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorCode {
    ArgumentInvalid,
    IotHubUnauthorizedAccess,
    DeviceNotFound,
    ModuleNotFound,
    DeviceNotOnline,
    GatewayTimeout,
    DeviceAlreadyExists,
    ModuleAlreadyExistsOnDevice,
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
            ErrorCode::ModuleNotFound => "ModuleNotFound",
            ErrorCode::DeviceNotOnline => "DeviceNotOnline",
            ErrorCode::GatewayTimeout => "GatewayTimeout",
            ErrorCode::DeviceAlreadyExists => "DeviceAlreadyExists",
            ErrorCode::ModuleAlreadyExistsOnDevice => "ModuleAlreadyExistsOnDevice",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::ServerError => "ServerError",
        }
    }

    /// The HTTP status, from which Node picks its error type.
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::ArgumentInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::IotHubUnauthorizedAccess => StatusCode::UNAUTHORIZED,
            ErrorCode::DeviceNotFound
            | ErrorCode::ModuleNotFound
            | ErrorCode::DeviceNotOnline
            | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::DeviceAlreadyExists | ErrorCode::ModuleAlreadyExistsOnDevice => {
                StatusCode::CONFLICT
            }
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ErrorCode {
    /// The numeric code of the newer body form, for the codes written in it
    /// (`azure-iot-sdk-csharp`, `ErrorCode.cs`).
    fn number(self) -> Option<u32> {
        match self {
            ErrorCode::DeviceNotOnline => Some(404_103),
            ErrorCode::GatewayTimeout => Some(504_101),
            _ => None,
        }
    }
}

/// An error answer: status, `iothub-errorcode` header and legacy body (or the newer body for
/// the method failures, with `info`).
#[derive(Clone, Debug)]
pub(super) struct ApiError {
    code: ErrorCode,
    text: String,
    info: serde_json::Value,
}

impl ApiError {
    pub(super) fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ApiError {
            code,
            text: text.into(),
            info: serde_json::json!({}),
        }
    }

    /// With the `info` object of the newer body form.
    pub(super) fn with_info(mut self, info: serde_json::Value) -> Self {
        self.info = info;
        self
    }

    /// The newer body: `Message` holds a JSON string with the numeric code.
    fn newer_body(&self, number: u32, now: SystemTime) -> LegacyErrorBody {
        let inner = serde_json::json!({
            "errorCode": number,
            "trackingId": tracking_id(),
            "message": self.text,
            "info": self.info,
            "timestampUtc": super::time_text(now),
        });
        LegacyErrorBody {
            message: inner.to_string(),
            exception_message: String::new(),
        }
    }

    /// The error code's name (`DeviceNotFound`, ...), as bulk results carry it.
    pub(super) fn code_name(&self) -> &'static str {
        self.code.name()
    }

    /// The text, as bulk results carry it in `errorStatus`.
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    pub(super) fn unauthorized(text: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::IotHubUnauthorizedAccess, text)
    }

    /// The legacy body at `now`.
    fn body(&self, now: SystemTime) -> LegacyErrorBody {
        // Node splits `Message` on ';' and needs a non-empty code and text: keep the text to
        // one ';'-free part.
        let mut text = self.text.replace(';', ",");
        if text.is_empty() {
            text = self
                .code
                .status()
                .canonical_reason()
                .unwrap_or("error")
                .to_owned();
        }
        LegacyErrorBody {
            message: format!("ErrorCode:{};{text}", self.code.name()),
            exception_message: format!(
                "Tracking ID:{}-TimeStamp:{}",
                tracking_id(),
                legacy_timestamp(now)
            ),
        }
    }
}

/// Maps the state's refusals to IoT Hub's codes.
pub(super) fn registry_error(error: RegistryError, device_id: &str) -> ApiError {
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
        RegistryError::InvalidId(text) | RegistryError::InvalidScope(text) => {
            ApiError::new(ErrorCode::ArgumentInvalid, text)
        }
    }
}

/// Maps the crate's typed errors from the hub state to IoT Hub's codes: bad input (malformed
/// JSON, key rules, depth, oversize documents, a module id outside the rules) is 400
/// ArgumentInvalid; the module codes `ModuleNotFound` (404010) and `ModuleAlreadyExistsOnDevice`
/// (409301) are named as in azure-iot-sdk-csharp
/// `iothub/service/src/Common/Exceptions/ErrorCode.cs`. The texts name ids, never keys.
pub(super) fn state_error(error: &crate::Error) -> ApiError {
    use crate::ErrorKind;
    let code = match error.kind() {
        ErrorKind::DeviceNotFound => ErrorCode::DeviceNotFound,
        ErrorKind::ModuleNotFound => ErrorCode::ModuleNotFound,
        ErrorKind::ModuleAlreadyExists => ErrorCode::ModuleAlreadyExistsOnDevice,
        ErrorKind::PreconditionFailed => ErrorCode::PreconditionFailed,
        ErrorKind::DeviceNotOnline => ErrorCode::DeviceNotOnline,
        ErrorKind::Timeout => ErrorCode::GatewayTimeout,
        ErrorKind::InvalidMessage | ErrorKind::MessageTooLarge | ErrorKind::InvalidIdentityId => {
            ErrorCode::ArgumentInvalid
        }
        _ => ErrorCode::ServerError,
    };
    ApiError::new(code, error.detail())
}

/// The legacy error body (also the outer object of the newer form).
#[derive(Serialize)]
struct LegacyErrorBody {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "ExceptionMessage")]
    exception_message: String,
}

/// The status and header now; the body is written by [`write_body`] with the hub's time.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.code.status().into_response();
        response.headers_mut().insert(
            ERROR_CODE_HEADER,
            HeaderValue::from_static(self.code.name()),
        );
        response.extensions_mut().insert(self);
        response
    }
}

/// Gives an error answer its JSON body, stamped `now`; other answers pass unchanged.
pub(super) fn write_body(mut response: Response, now: SystemTime) -> Response {
    let Some(error) = response.extensions_mut().remove::<ApiError>() else {
        return response;
    };
    let body = match error.code.number() {
        Some(number) => error.newer_body(number, now),
        None => error.body(now),
    };
    let mut written = json_response(error.code.status(), &body);
    written.headers_mut().insert(
        ERROR_CODE_HEADER,
        HeaderValue::from_static(error.code.name()),
    );
    written
}

/// Unknown paths.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "the local hub serves no such resource")
}

/// Known paths asked with a method they do not serve.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "the local hub does not serve this method on this resource",
    )
}

/// 32 lowercase hex digits, like `e4cb4b6c18f4462fbe2c1a2d02d7dbe4` in the legacy sample.
fn tracking_id() -> String {
    use std::fmt::Write as _;
    random_bytes::<16>()
        .iter()
        .fold(String::with_capacity(32), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// `MM/dd/yyyy HH:mm:ss` in UTC, as in the legacy sample `07/16/2016 00:12:41`.
fn legacy_timestamp(now: SystemTime) -> String {
    time::OffsetDateTime::from(now)
        .format(time::macros::format_description!(
            "[month]/[day]/[year] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_legacy_body_parses_as_node_parses_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_468_628_000);
        let body = ApiError::new(ErrorCode::DeviceNotFound, "no; such").body(at);
        let (code, text) = body.message.split_once(';').unwrap();
        assert_eq!(code, "ErrorCode:DeviceNotFound");
        assert_eq!(text, "no, such");
        assert!(body.exception_message.starts_with("Tracking ID:"));
        assert!(
            body.exception_message
                .ends_with("-TimeStamp:07/16/2016 00:13:20"),
            "{}",
            body.exception_message
        );
        let empty = ApiError::new(ErrorCode::NotFound, "").body(at);
        assert_eq!(empty.message, "ErrorCode:NotFound;Not Found");
    }

    #[test]
    fn method_failures_use_the_newer_form_with_info() {
        let at = UNIX_EPOCH + Duration::from_secs(1_468_628_000);
        let error = ApiError::new(
            ErrorCode::DeviceNotOnline,
            "Timed out waiting for device to connect.",
        )
        .with_info(serde_json::json!({"timeout": "00:00:00"}));
        let body = error.newer_body(404_103, at);
        let inner: serde_json::Value = serde_json::from_str(&body.message).unwrap();
        assert_eq!(inner["errorCode"], 404_103);
        assert_eq!(inner["message"], "Timed out waiting for device to connect.");
        assert_eq!(inner["info"]["timeout"], "00:00:00");
        let outer = serde_json::json!({"Message": body.message, "ExceptionMessage": ""});
        let code = crate::protocol::error_code(None, outer.to_string().as_bytes());
        assert_eq!(code.as_deref(), Some("404103"));
    }
}
