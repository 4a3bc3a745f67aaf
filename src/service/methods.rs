//! Direct methods over HTTPS: `POST /twins/{id}/methods` and
//! `POST /twins/{id}/modules/{mid}/methods` (Microsoft Learn, "Understand and invoke direct
//! methods from IoT Hub"; bodies in [`crate::protocol::MethodInvocation`]).
//!
//! The HTTP request waits for the device's answer, so its timeout is the call's connect and
//! response timeouts plus the registry's request timeout (Node's azure-iothub does the same
//! with `(responseTimeout + connectTimeout) * 1000` ms: `azure-iot-sdk-node`,
//! `service/src/device_method.ts`, `invokeOn`).

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{MAX_METHOD_TIMEOUT, MethodInvocation, MethodResult, check_method_name};

use super::RegistryManager;

impl RegistryManager {
    /// Calls direct method `method_name` on a device with a JSON `payload` and returns the
    /// device's status and payload.
    ///
    /// `response_timeout` is how long the hub waits for the device's answer (IoT Hub: 5 to
    /// 300 s, whole seconds, rounded up); `connect_timeout` how long it waits for the device
    /// to be connected and subscribed to methods (0 to 300 s; 0: it must be already).
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`],
    /// [`ErrorKind::DeviceNotOnline`] (not connected or not subscribed to methods within the
    /// connect timeout: IoT Hub's 404103), [`ErrorKind::Timeout`] (no answer within the
    /// response timeout: 504101), [`ErrorKind::InvalidMessage`] (an empty name or one with
    /// `/`, timeouts out of bounds), [`ErrorKind::MessageTooLarge`] (a payload over 128 KB).
    pub async fn invoke_device_method(
        &self,
        device_id: &str,
        method_name: &str,
        payload: Value,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<MethodResult> {
        self.invoke(
            device_id,
            None,
            method_name,
            payload,
            response_timeout,
            connect_timeout,
        )
        .await
    }

    /// [`invoke_device_method`](Self::invoke_device_method) on a module; an unknown module is
    /// [`ErrorKind::ModuleNotFound`].
    pub async fn invoke_module_method(
        &self,
        device_id: &str,
        module_id: &str,
        method_name: &str,
        payload: Value,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<MethodResult> {
        self.invoke(
            device_id,
            Some(module_id),
            method_name,
            payload,
            response_timeout,
            connect_timeout,
        )
        .await
    }

    async fn invoke(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        method_name: &str,
        payload: Value,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<MethodResult> {
        check_method_name(method_name)?;
        if response_timeout > MAX_METHOD_TIMEOUT || connect_timeout > MAX_METHOD_TIMEOUT {
            return Err(Error::new(
                ErrorKind::InvalidMessage,
                "method timeouts are at most 300 s",
            ));
        }
        crate::protocol::check_payload_size(&payload, "method request")?;
        // The hub checks the lower bound of the response timeout: IoT Hub refuses less than
        // 5 s, the local hub accepts 1 s for quick tests.
        let invocation =
            MethodInvocation::new(method_name, payload, response_timeout, connect_timeout);
        let wait = invocation.response_timeout() + invocation.connect_timeout();
        self.http()
            .invoke_method(
                device_id,
                module_id,
                &invocation,
                wait + self.request_timeout(),
            )
            .await
    }
}
