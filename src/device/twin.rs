//! Device twins on the device side: [`DeviceClient::get_twin`] and
//! [`DeviceClient::update_reported_properties`], over the `$rid` request/response machinery of
//! the connection task.
//!
//! A GET is published on `$iothub/twin/GET/?$rid={rid}` with a one-space body, as the Python
//! and Node SDKs do (azure-iot-sdk-python `azure/iot/device/iothub/pipeline/pipeline_stages_iothub.py`
//! `_run_op` for `GetTwinOperation`: `request_body=" "`; azure-iot-sdk-node
//! `device/transport/mqtt/src/mqtt_twin_client.ts` `getTwin`: `' '`), and answered on
//! `$iothub/twin/res/200/?$rid={rid}` with `{"desired":{…,"$version":N},"reported":{…,"$version":M}}`.
//! A reported patch goes on `$iothub/twin/PATCH/properties/reported/?$rid={rid}` and is
//! answered with `$iothub/twin/res/204/?$rid={rid}&$version={new reported version}`
//! (Microsoft Learn "Communicate with an IoT hub using the MQTT protocol", device twins).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::device::DeviceClient;
use crate::device::connection::Command;
use crate::device::pending_requests::Response;
use crate::device::state::closed_error;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{METADATA_KEY, TwinLimits, TwinRequestKind, VERSION_KEY, collection_version};

/// How long a twin request waits for the hub's answer by default: 60 s, the C SDK's GET
/// timeout (azure-iot-sdk-c `iothubtransport_mqtt_common.c`
/// `ON_DEMAND_GET_TWIN_REQUEST_TIMEOUT_SECS 60`; the Node SDK waits 120 s,
/// `device/core/src/twin.ts` `Twin.timeout`). Change it with
/// [`crate::device::DeviceClientBuilder::twin_request_timeout`].
pub const DEFAULT_TWIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One section of a twin (desired or reported properties) with its version.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct VersionedProperties {
    /// `$version`: grows by one with every change of this section.
    pub version: u64,
    /// The properties, without `$version` (and without `$metadata` when the hub sends it).
    pub properties: Map<String, Value>,
}

impl VersionedProperties {
    /// Reads a section: a JSON object with a `$version`. A section without one has version 0.
    pub(crate) fn from_json(mut section: Map<String, Value>) -> VersionedProperties {
        let version = collection_version(&section).unwrap_or(0);
        section.remove(VERSION_KEY);
        section.remove(METADATA_KEY);
        VersionedProperties {
            version,
            properties: section,
        }
    }
}

/// A device's (or module's) twin as the device sees it: desired and reported properties.
/// Tags are not sent to devices.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Twin {
    /// What the back end wants (set by the service side).
    pub desired: VersionedProperties,
    /// What the device reported.
    pub reported: VersionedProperties,
}

impl Twin {
    /// Reads the body of a twin GET response (the protocol's [`crate::protocol::TwinProperties`]
    /// document, the model the local hub writes too).
    pub(crate) fn from_body(body: &[u8]) -> Result<Twin> {
        let document: crate::protocol::TwinProperties =
            serde_json::from_slice(body).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidMessage,
                    format!("the hub's twin is not a twin document: {e}"),
                )
            })?;
        Ok(Twin {
            desired: VersionedProperties::from_json(document.desired),
            reported: VersionedProperties::from_json(document.reported),
        })
    }
}

/// The error for a twin response with a failure `status`, with the hub's text if any.
///
/// 400 → [`ErrorKind::InvalidMessage`] (malformed patch), 401/403 →
/// [`ErrorKind::Unauthorized`], 404 → [`ErrorKind::DeviceNotFound`], 412 →
/// [`ErrorKind::PreconditionFailed`], 413 → [`ErrorKind::MessageTooLarge`], 429 →
/// [`ErrorKind::Throttled`], 504 → [`ErrorKind::Timeout`], any other status (5xx: the hub
/// failed; retrying later may succeed) → [`ErrorKind::Transport`]. The same classes as
/// azure-iot-sdk-node `device/core/src/twin_errors.ts` `translateError` and azure-iot-sdk-python
/// `azure/iot/device/iothub/pipeline/pipeline_stages_iothub.py` (`ServiceError` for status ≥ 300).
pub(crate) fn status_error(status: u16, body: &[u8]) -> Error {
    let kind = match status {
        400 => ErrorKind::InvalidMessage,
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::DeviceNotFound,
        412 => ErrorKind::PreconditionFailed,
        413 => ErrorKind::MessageTooLarge,
        429 => ErrorKind::Throttled,
        504 => ErrorKind::Timeout,
        _ => ErrorKind::Transport,
    };
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let detail = if text.is_empty() {
        format!("the hub answered the twin request with status {status}")
    } else {
        let shown: String = text.chars().take(300).collect();
        format!("the hub answered the twin request with status {status}: {shown}")
    };
    Error::new(kind, detail)
}

/// The twin of a GET response.
pub(crate) fn twin_from_response(response: &Response) -> Result<Twin> {
    match response.status {
        200 => Twin::from_body(&response.body),
        status => Err(status_error(status, &response.body)),
    }
}

/// The new reported version of a reported-patch response.
pub(crate) fn reported_version_from_response(response: &Response) -> Result<u64> {
    match response.status {
        200..=299 => response.version.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidMessage,
                "the hub accepted the reported properties but sent no $version",
            )
        }),
        status => Err(status_error(status, &response.body)),
    }
}

/// The body of a reported patch: a JSON object, at most [`TwinLimits::REPORTED_BYTES`] (32 KB,
/// IoT Hub's limit on the reported properties: Microsoft Learn "Understand and use device twins
/// in IoT Hub"), so that a patch the hub must refuse is refused before anything is sent.
pub(crate) fn reported_patch_body(patch: &Value) -> Result<Bytes> {
    if !patch.is_object() {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            "a reported-properties patch must be a JSON object",
        ));
    }
    let body = serde_json::to_vec(patch)
        .map_err(|e| Error::new(ErrorKind::InvalidMessage, e.to_string()))?;
    if body.len() > TwinLimits::REPORTED_BYTES {
        return Err(Error::new(
            ErrorKind::MessageTooLarge,
            format!(
                "the reported-properties patch is {} bytes; IoT Hub accepts {}",
                body.len(),
                TwinLimits::REPORTED_BYTES
            ),
        ));
    }
    Ok(Bytes::from(body))
}

/// Sends a twin request through the connection task and waits for its response.
pub(crate) async fn request(
    commands: &tokio::sync::mpsc::Sender<Command>,
    kind: TwinRequestKind,
    payload: Bytes,
    timeout: Duration,
) -> Result<Response> {
    let (done, response) = oneshot::channel();
    let command = Command::Request {
        kind,
        payload,
        timeout,
        done,
    };
    commands.send(command).await.map_err(|_| closed_error())?;
    response.await.map_err(|_| closed_error())?
}

impl DeviceClient {
    /// Gets the whole twin: desired and reported properties with their versions.
    ///
    /// The first twin request subscribes to `$iothub/twin/res/#` (kept across reconnects), as
    /// azure-iot-sdk-python's `get_twin` enables its twin feature on first use
    /// (`azure/iot/device/iothub/sync_clients.py`);
    /// a request made while disconnected waits for the connection. It fails with
    /// [`ErrorKind::Timeout`] when the hub does not answer within the twin request timeout
    /// ([`DEFAULT_TWIN_REQUEST_TIMEOUT`] unless set on the builder), with
    /// [`ErrorKind::Transport`] when the connection is lost after it was sent (the request is
    /// not repeated: call again), and with the error of the hub's status otherwise (429 →
    /// [`ErrorKind::Throttled`], 5xx → [`ErrorKind::Transport`]).
    pub async fn get_twin(&self) -> Result<Twin> {
        let response = request(
            self.commands(),
            TwinRequestKind::Get,
            Bytes::from_static(b" "),
            self.features().twin_timeout,
        )
        .await
        .map_err(|e| self.why_stopped(e))?;
        twin_from_response(&response)
    }

    /// Updates the reported properties with `patch`, a JSON object (`null` members delete
    /// properties), and returns the new reported version.
    ///
    /// A patch that is not an object, or over 32 KB
    /// ([`crate::protocol::TwinLimits::REPORTED_BYTES`]), is refused
    /// before anything is sent ([`ErrorKind::InvalidMessage`], [`ErrorKind::MessageTooLarge`]).
    /// The hub's refusals: 400 → [`ErrorKind::InvalidMessage`] (for example a `$`-prefixed
    /// key or a document too deep), 429 → [`ErrorKind::Throttled`], 5xx →
    /// [`ErrorKind::Transport`]. Timeouts and lost connections as for [`Self::get_twin`]: an
    /// update that timed out may still have been applied.
    pub async fn update_reported_properties(&self, patch: Value) -> Result<u64> {
        let body = reported_patch_body(&patch)?;
        let response = request(
            self.commands(),
            TwinRequestKind::PatchReported,
            body,
            self.features().twin_timeout,
        )
        .await
        .map_err(|e| self.why_stopped(e))?;
        reported_version_from_response(&response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(status: u16, version: Option<u64>, body: &'static str) -> Response {
        Response {
            status,
            version,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn a_get_response_becomes_a_typed_twin() {
        // The shape of Microsoft Learn's example GET response.
        let twin = twin_from_response(&response(
            200,
            None,
            r#"{"desired":{"telemetrySendFrequency":"5m","$version":12},"reported":{"telemetrySendFrequency":"5m","batteryLevel":55,"$version":123}}"#,
        ))
        .unwrap();
        assert_eq!(twin.desired.version, 12);
        assert_eq!(twin.desired.properties["telemetrySendFrequency"], "5m");
        assert!(!twin.desired.properties.contains_key("$version"));
        assert_eq!(twin.reported.version, 123);
        assert_eq!(twin.reported.properties["batteryLevel"], 55);

        let empty =
            Twin::from_body(br#"{"desired":{"$version":1},"reported":{"$version":1}}"#).unwrap();
        assert!(empty.desired.properties.is_empty());
        for bad in [&b"not json"[..], b"3", br#"{"desired":3}"#] {
            assert_eq!(
                Twin::from_body(bad).unwrap_err().kind(),
                ErrorKind::InvalidMessage
            );
        }
    }

    #[test]
    fn a_reported_patch_response_gives_the_new_version() {
        assert_eq!(
            reported_version_from_response(&response(204, Some(6), "")).unwrap(),
            6
        );
        let err = reported_version_from_response(&response(204, None, "")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidMessage);
    }

    #[test]
    fn failure_statuses_are_typed_errors() {
        for (status, kind) in [
            (400, ErrorKind::InvalidMessage),
            (401, ErrorKind::Unauthorized),
            (404, ErrorKind::DeviceNotFound),
            (412, ErrorKind::PreconditionFailed),
            (413, ErrorKind::MessageTooLarge),
            (429, ErrorKind::Throttled),
            (500, ErrorKind::Transport),
            (503, ErrorKind::Transport),
            (504, ErrorKind::Timeout),
        ] {
            let err =
                twin_from_response(&response(status, None, r#"{"Message":"why"}"#)).unwrap_err();
            assert_eq!(err.kind(), kind, "{status}");
            assert!(err.to_string().contains("why"), "{err}");
            let err = reported_version_from_response(&response(status, None, "")).unwrap_err();
            assert_eq!(err.kind(), kind, "{status}");
        }
    }

    #[test]
    fn reported_patches_are_objects_within_the_limit() {
        let body = reported_patch_body(&json!({"a": 1, "b": null})).unwrap();
        assert_eq!(&body[..], br#"{"a":1,"b":null}"#);
        assert_eq!(
            reported_patch_body(&json!([1])).unwrap_err().kind(),
            ErrorKind::InvalidMessage
        );
        let big = "x".repeat(TwinLimits::REPORTED_BYTES);
        assert_eq!(
            reported_patch_body(&json!({ "big": big }))
                .unwrap_err()
                .kind(),
            ErrorKind::MessageTooLarge
        );
    }
}
