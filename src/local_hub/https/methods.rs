//! Direct methods: `POST /twins/{id}/methods` and `POST /twins/{id}/modules/{mid}/methods`
//! (Microsoft Learn, "Understand and invoke direct methods from IoT Hub"; bodies in
//! [`crate::protocol::MethodInvocation`] and [`crate::protocol::MethodResult`]).
//!
//! Answers:
//! - 200 `{"status", "payload"}` with what the device answered;
//! - 404 `DeviceNotFound` / `ModuleNotFound` for an unknown identity;
//! - 404 404103 `DeviceNotOnline`, "Timed out waiting for device to connect." with
//!   `"info":{"timeout":"HH:MM:SS"}` (the connect timeout) when the identity is not connected
//!   and subscribed to methods within the connect timeout (issues Azure/iotedge#98 and
//!   Azure/azure-iot-cli-extension#54 quote this body), and also when its connection ends
//!   while the call waits (the local hub's choice: it answers at once rather than at the
//!   response timeout);
//! - 504 504101 `GatewayTimeout`, "Timed out waiting for the response from device." with
//!   `"info":{}` when the device does not answer in time (issue Azure/azure-iot-sdk-java#640);
//! - 400 `ArgumentInvalid` for a malformed body, an empty method name or one with `/`, a
//!   payload over 128 KB, or timeouts out of bounds.
//!
//! Timeouts: IoT Hub takes response timeouts of 5 to 300 s; the local hub also accepts 1 to
//! 4 s, so that tests of a device that does not answer stay short. Connect timeouts are 0 to
//! 300 s, as on IoT Hub.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::errors::{ApiError, ErrorCode, state_error};
use super::twins::{module_twin_identity, twin_identity};
use super::{authorize, json_response};
use crate::auth::Permission;
use crate::local_hub::state::{HubState, Identity, MethodFailure};
use crate::protocol::MethodInvocation;

/// The smallest response timeout the local hub accepts.
const MIN_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `POST /twins/{id}/methods`.
pub(super) async fn invoke(
    State(state): State<Arc<HubState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::ServiceConnect)?;
    call(&state, &twin_identity(path)?, &body).await
}

/// `POST /twins/{id}/modules/{mid}/methods`.
pub(super) async fn invoke_module(
    State(state): State<Arc<HubState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Permission::ServiceConnect)?;
    call(&state, &module_twin_identity(path)?, &body).await
}

async fn call(state: &HubState, identity: &Identity, body: &[u8]) -> Result<Response, ApiError> {
    let invocation: MethodInvocation = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the body is not a method invocation: {\"methodName\": …, \"payload\": …, \
             \"responseTimeoutInSeconds\": …, \"connectTimeoutInSeconds\": …}",
        )
    })?;
    invocation
        .check(MIN_RESPONSE_TIMEOUT)
        .map_err(|e| state_error(&e))?;
    let connect_timeout = invocation.connect_timeout();
    let result = state
        .invoke_method(
            identity,
            &invocation.method_name,
            &invocation.payload,
            invocation.response_timeout(),
            connect_timeout,
        )
        .await;
    match result {
        Ok(answer) => Ok(json_response(StatusCode::OK, &answer)),
        Err(MethodFailure::NotFound(e)) => Err(state_error(&e)),
        Err(MethodFailure::NotOnline { disconnected, .. }) => {
            let text = if disconnected {
                "The device disconnected before it answered the method call."
            } else {
                "Timed out waiting for device to connect."
            };
            Err(ApiError::new(ErrorCode::DeviceNotOnline, text)
                .with_info(json!({ "timeout": time_span(connect_timeout) })))
        }
        Err(MethodFailure::Timeout) => Err(ApiError::new(
            ErrorCode::GatewayTimeout,
            "Timed out waiting for the response from device.",
        )),
    }
}

/// A .NET `TimeSpan` as IoT Hub writes it: `HH:MM:SS` (`00:01:00` for a minute).
fn time_span(duration: Duration) -> String {
    let secs = duration.as_secs();
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_written_as_time_spans() {
        assert_eq!(time_span(Duration::ZERO), "00:00:00");
        assert_eq!(time_span(Duration::from_secs(60)), "00:01:00");
        assert_eq!(time_span(Duration::from_secs(300)), "00:05:00");
    }
}
