//! Direct-method invocation over HTTPS: the `POST /twins/{id}/methods` request and response
//! bodies and their bounds.
//!
//! - Request `{"methodName", "payload", "responseTimeoutInSeconds", "connectTimeoutInSeconds"}`
//!   and response `{"status", "payload"}` (Microsoft Learn, "Understand and invoke direct
//!   methods from IoT Hub", "Method invocation"; `azure-iot-hub` for Python,
//!   `protocol/models/cloud_to_device_method_py3.py` and
//!   `cloud_to_device_method_result_py3.py`).
//! - The response timeout defaults to 30 s, the connect timeout to 0 (the device must already
//!   be connected): `azure-iot-sdk-node`, `service/src/device_method.ts`
//!   (`defaultResponseTimeout`, `defaultConnectTimeout`). IoT Hub accepts response timeouts of
//!   5 to 300 s and connect timeouts up to 300 s (.NET `Microsoft.Azure.Devices`,
//!   `DigitalTwinInvokeCommandRequestOptions.ResponseTimeoutInSeconds`: "default 30, min 5,
//!   max 300").
//! - Request and response payloads are at most 128 KB of JSON (Microsoft Learn, "IoT Hub quotas
//!   and throttling", "Other limits").

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// The response timeout when the caller gives none.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The connect timeout when the caller gives none: the device must be connected already.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::ZERO;
/// IoT Hub's smallest response timeout.
pub const MIN_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// IoT Hub's largest response (and connect) timeout.
pub const MAX_METHOD_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest request or response payload, in bytes of JSON.
pub const MAX_METHOD_PAYLOAD_BYTES: usize = 128 * 1024;

/// The body of `POST /twins/{id}/methods`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MethodInvocation {
    /// The method's name.
    pub method_name: String,
    /// The JSON payload handed to the device (`null` when absent).
    #[serde(default)]
    pub payload: Value,
    /// How long to wait for the device's answer once it has the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<u64>,
    /// How long to wait for the device to be connected and subscribed to methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<u64>,
}

impl MethodInvocation {
    /// An invocation with the given timeouts, rounded up to whole seconds.
    pub fn new(
        method_name: impl Into<String>,
        payload: Value,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        MethodInvocation {
            method_name: method_name.into(),
            payload,
            response_timeout_in_seconds: Some(whole_seconds(response_timeout)),
            connect_timeout_in_seconds: Some(whole_seconds(connect_timeout)),
        }
    }

    /// The response timeout, with the default when absent.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout_in_seconds
            .map_or(DEFAULT_RESPONSE_TIMEOUT, Duration::from_secs)
    }

    /// The connect timeout, with the default when absent.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout_in_seconds
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs)
    }

    /// Checks the name, the payload size and the timeouts against IoT Hub's bounds, with
    /// `min_response_timeout` as the smallest response timeout accepted (IoT Hub:
    /// [`MIN_RESPONSE_TIMEOUT`]). Error: [`ErrorKind::InvalidMessage`] (or
    /// [`ErrorKind::MessageTooLarge`] for the payload).
    pub fn check(&self, min_response_timeout: Duration) -> Result<()> {
        check_method_name(&self.method_name)?;
        check_payload_size(&self.payload, "method request")?;
        let response = self.response_timeout();
        if response < min_response_timeout || response > MAX_METHOD_TIMEOUT {
            return Err(Error::new(
                ErrorKind::InvalidMessage,
                format!(
                    "responseTimeoutInSeconds must be between {} and {}",
                    min_response_timeout.as_secs(),
                    MAX_METHOD_TIMEOUT.as_secs()
                ),
            ));
        }
        if self.connect_timeout() > MAX_METHOD_TIMEOUT {
            return Err(Error::new(
                ErrorKind::InvalidMessage,
                format!(
                    "connectTimeoutInSeconds must be between 0 and {}",
                    MAX_METHOD_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// The `200` answer of `POST /twins/{id}/methods`: the device's status and payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodResult {
    /// The status the device answered with.
    pub status: i32,
    /// The payload the device answered with (`null` when it sent none).
    #[serde(default)]
    pub payload: Value,
}

impl MethodResult {
    /// A result.
    pub fn new(status: i32, payload: Value) -> Self {
        MethodResult { status, payload }
    }
}

/// Method name rules: not empty, and no `/`, which would end the name in the MQTT topic
/// `$iothub/methods/POST/{name}/` (the Python device SDK takes the fourth `/`-separated
/// segment as the name: `azure-iot-device`, `iothub/pipeline/mqtt_topic_iothub.py`,
/// `get_method_name_from_topic`). Error: [`ErrorKind::InvalidMessage`].
pub fn check_method_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            "the method name is empty",
        ));
    }
    if let Some(bad) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            format!("the method name may not contain {bad:?}"),
        ));
    }
    Ok(())
}

/// Checks that a payload's JSON is at most [`MAX_METHOD_PAYLOAD_BYTES`]. Error:
/// [`ErrorKind::MessageTooLarge`].
pub fn check_payload_size(payload: &Value, what: &str) -> Result<()> {
    let size = serde_json::to_vec(payload).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_METHOD_PAYLOAD_BYTES {
        return Err(Error::new(
            ErrorKind::MessageTooLarge,
            format!("the {what} payload is {size} bytes, over IoT Hub's limit of 128 KB"),
        ));
    }
    Ok(())
}

/// Reads the payload a device answered with: JSON, `null` for an empty body, and the text as
/// a JSON string when it is not JSON (so that nothing the device said is lost).
pub fn response_payload(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Whole seconds, rounded up.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_request_body_has_the_official_names() {
        let request = MethodInvocation::new(
            "reboot",
            json!({"delay": 1}),
            Duration::from_millis(4500),
            Duration::ZERO,
        );
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"methodName": "reboot", "payload": {"delay": 1},
                   "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0})
        );
        // Python's e2e helper leaves the response timeout out.
        let parsed: MethodInvocation = serde_json::from_value(
            json!({"methodName": "m", "payload": null, "connectTimeoutInSeconds": 30}),
        )
        .unwrap();
        assert_eq!(parsed.response_timeout(), DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(parsed.connect_timeout(), Duration::from_secs(30));
        parsed.check(MIN_RESPONSE_TIMEOUT).unwrap();
    }

    #[test]
    fn bounds_are_checked() {
        let at = |response: u64, connect: u64| MethodInvocation {
            method_name: "m".into(),
            payload: Value::Null,
            response_timeout_in_seconds: Some(response),
            connect_timeout_in_seconds: Some(connect),
        };
        assert!(at(5, 0).check(MIN_RESPONSE_TIMEOUT).is_ok());
        assert!(at(300, 300).check(MIN_RESPONSE_TIMEOUT).is_ok());
        for bad in [at(4, 0), at(301, 0), at(30, 301)] {
            let err = bad.check(MIN_RESPONSE_TIMEOUT).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidMessage);
        }
        assert!(at(1, 0).check(Duration::from_secs(1)).is_ok());
        let big = MethodInvocation {
            payload: json!("x".repeat(MAX_METHOD_PAYLOAD_BYTES)),
            ..at(30, 0)
        };
        assert_eq!(
            big.check(MIN_RESPONSE_TIMEOUT).unwrap_err().kind(),
            ErrorKind::MessageTooLarge
        );
    }

    #[test]
    fn method_names_without_slashes() {
        assert!(check_method_name("reboot").is_ok());
        assert!(check_method_name("ünïcode name").is_ok());
        for bad in ["", "a/b", "/", "a\u{0}"] {
            assert_eq!(
                check_method_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidMessage,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn device_answers_are_read_without_loss() {
        assert_eq!(response_payload(b""), Value::Null);
        assert_eq!(response_payload(b"{\"a\":1}"), json!({"a": 1}));
        assert_eq!(response_payload(b"not json"), json!("not json"));
        let result: MethodResult =
            serde_json::from_value(json!({"status": 201, "payload": {"ok": true}})).unwrap();
        assert_eq!(result, MethodResult::new(201, json!({"ok": true})));
    }
}
