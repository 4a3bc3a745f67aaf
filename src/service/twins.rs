//! Device and module twins over HTTPS: read, merge (`PATCH`) and replace (`PUT`).
//!
//! `PATCH /twins/{id}` merges tags and desired properties (a `null` member deletes);
//! `PUT /twins/{id}` replaces them (Microsoft Learn, "Understand and use device twins in IoT
//! Hub", "Back-end operations"). An etag makes the write conditional (`If-Match`, quoted as
//! the official SDKs quote it); without one the write is unconditional (`If-Match: "*"`, the
//! default of `azure-iot-hub` for Python, `iothub_registry_manager.py`, `update_twin`).

use reqwest::Method;

use crate::error::Result;
use crate::protocol::{Twin, TwinPatch};

use super::RegistryManager;

impl RegistryManager {
    /// Reads a device's twin: tags, desired and reported properties with their `$version`
    /// and `$metadata`, the twin's etag and version.
    ///
    /// Error: [`ErrorKind::DeviceNotFound`](crate::ErrorKind::DeviceNotFound).
    pub async fn get_twin(&self, device_id: &str) -> Result<Twin> {
        self.http().get_twin(device_id, None).await
    }

    /// Reads a module's twin.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`](crate::ErrorKind::DeviceNotFound),
    /// [`ErrorKind::ModuleNotFound`](crate::ErrorKind::ModuleNotFound).
    pub async fn get_module_twin(&self, device_id: &str, module_id: &str) -> Result<Twin> {
        self.http().get_twin(device_id, Some(module_id)).await
    }

    /// Merges `patch` into a device's tags and desired properties and returns the updated
    /// twin. A desired change reaches the device as a desired-properties patch with the new
    /// `$version`. With `etag`, the update happens only if the twin still has it.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`](crate::ErrorKind::DeviceNotFound),
    /// [`ErrorKind::PreconditionFailed`](crate::ErrorKind::PreconditionFailed) (someone changed
    /// the twin: read it again), [`ErrorKind::InvalidMessage`](crate::ErrorKind::InvalidMessage)
    /// (keys with `$`, `.` or spaces, nesting over 10 levels, tags over 8 KB or desired
    /// properties over 32 KB).
    pub async fn update_twin(
        &self,
        device_id: &str,
        patch: &TwinPatch,
        etag: Option<&str>,
    ) -> Result<Twin> {
        self.http()
            .write_twin(
                Method::PATCH,
                device_id,
                None,
                &patch.to_json(),
                etag.unwrap_or("*"),
            )
            .await
    }

    /// [`update_twin`](Self::update_twin) for a module's twin.
    pub async fn update_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
        patch: &TwinPatch,
        etag: Option<&str>,
    ) -> Result<Twin> {
        self.http()
            .write_twin(
                Method::PATCH,
                device_id,
                Some(module_id),
                &patch.to_json(),
                etag.unwrap_or("*"),
            )
            .await
    }

    /// Replaces a device's tags and desired properties with those of `twin` (its reported
    /// properties and identity fields are ignored) and returns the updated twin. Desired
    /// properties missing from `twin` are deleted, and the device is told so. With `etag`,
    /// only if the twin still has it. Errors as for [`update_twin`](Self::update_twin).
    pub async fn replace_twin(
        &self,
        device_id: &str,
        twin: &Twin,
        etag: Option<&str>,
    ) -> Result<Twin> {
        let body = replacement_body(twin);
        self.http()
            .write_twin(Method::PUT, device_id, None, &body, etag.unwrap_or("*"))
            .await
    }

    /// [`replace_twin`](Self::replace_twin) for a module's twin.
    pub async fn replace_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
        twin: &Twin,
        etag: Option<&str>,
    ) -> Result<Twin> {
        let body = replacement_body(twin);
        self.http()
            .write_twin(
                Method::PUT,
                device_id,
                Some(module_id),
                &body,
                etag.unwrap_or("*"),
            )
            .await
    }
}

/// A `PUT` body: the twin's tags and desired properties (read-only members left out).
fn replacement_body(twin: &Twin) -> serde_json::Value {
    let mut desired = twin.properties.desired.clone();
    crate::protocol::strip_read_only(&mut desired);
    serde_json::json!({
        "deviceId": twin.device_id,
        "tags": twin.tags,
        "properties": {"desired": desired},
    })
}
