//! Twins and direct methods of the local hub's identities, for tests and tools: what a back
//! end does over HTTPS, without HTTPS.

use std::time::Duration;

use serde_json::Value;

use super::LocalHub;
use super::state::{Identity, MethodFailure, TwinWrite};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{MethodResult, TwinProperties};

fn identity(device_id: &str, module_id: Option<&str>) -> Identity {
    match module_id {
        Some(module) => Identity::module(device_id, module),
        None => Identity::device(device_id),
    }
}

impl LocalHub {
    /// Merges `patch` into the desired properties of a device (`module_id` `None`) or a
    /// module, as a back end's twin update would: `null` members delete, objects merge. The
    /// change is pushed to the identity if it is connected and subscribed to desired patches.
    /// Returns the new desired `$version`.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::ModuleNotFound`],
    /// [`ErrorKind::InvalidMessage`] (key rules, depth), [`ErrorKind::MessageTooLarge`]
    /// (over 32 KB).
    pub fn update_desired_properties(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        patch: Value,
    ) -> Result<u64> {
        let twin = self.state.write_twin(
            &identity(device_id, module_id),
            TwinWrite::Patch {
                tags: None,
                desired: Some(patch),
            },
            None,
        )?;
        Ok(twin
            .desired
            .get(crate::protocol::VERSION_KEY)
            .and_then(Value::as_u64)
            .unwrap_or_default())
    }

    /// The `{desired, reported}` document of a device or module, as the device reads it (each
    /// side with its `$version`). Errors: [`ErrorKind::DeviceNotFound`],
    /// [`ErrorKind::ModuleNotFound`].
    pub fn twin_properties(
        &self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<TwinProperties> {
        self.state.device_twin(&identity(device_id, module_id))
    }

    /// Calls a direct method on a device or module and waits for its answer, as a back end's
    /// invoke would. `connect_timeout` is how long to wait for the identity to be connected
    /// and subscribed to methods; `response_timeout` how long to wait for the answer.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::ModuleNotFound`],
    /// [`ErrorKind::DeviceNotOnline`] (not connected or subscribed in time, or disconnected
    /// before answering), [`ErrorKind::Timeout`] (no answer in time).
    pub async fn invoke_method(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        method_name: &str,
        payload: Value,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<MethodResult> {
        crate::protocol::check_method_name(method_name)?;
        self.state
            .invoke_method(
                &identity(device_id, module_id),
                method_name,
                &payload,
                response_timeout,
                connect_timeout,
            )
            .await
            .map_err(method_error)
    }
}

/// The error a caller sees for a method call that got no answer.
pub(crate) fn method_error(failure: MethodFailure) -> Error {
    match failure {
        MethodFailure::NotFound(e) => e,
        MethodFailure::NotOnline {
            disconnected: true, ..
        } => Error::new(
            ErrorKind::DeviceNotOnline,
            "the device disconnected before it answered the method call",
        ),
        MethodFailure::NotOnline { .. } => Error::new(
            ErrorKind::DeviceNotOnline,
            "the device is not connected or has not subscribed to direct methods",
        ),
        MethodFailure::Timeout => Error::new(
            ErrorKind::Timeout,
            "the device did not answer the method call within the response timeout",
        ),
    }
}
