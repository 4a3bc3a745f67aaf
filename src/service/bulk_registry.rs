//! Listing with a limit and the bulk registry operation: [`RegistryManager`]'s
//! `list_devices_top`, `bulk_registry_operation`, `add_devices`, `update_devices` and
//! `remove_devices`, over HTTPS.
//!
//! They mirror the official SDKs: azure-iot-hub-python `IoTHubRegistryManager.get_devices(
//! max_number_of_devices)` and `bulk_create_or_update_devices`; azure-iot-sdk-node
//! `Registry.addDevices`, `updateDevices(devices, forceUpdate)` and `removeDevices(devices,
//! forceRemove)` (`service/src/registry.ts`, `_processBulkDevices`).

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    BulkDeviceOperation, BulkRegistryOperationResult, Device, ImportMode, MAX_BULK_DEVICES,
    check_device_id,
};
use crate::service::RegistryManager;

impl RegistryManager {
    /// At most `max` devices of the registry (`GET /devices?top=N`; IoT Hub returns at most
    /// 1,000 whatever `max` is).
    pub async fn list_devices_top(&self, max: usize) -> Result<Vec<Device>> {
        self.http().list_devices(Some(max)).await
    }

    /// Creates, updates and deletes up to 100 devices in one request (`POST /devices`), each
    /// device once. Every operation is applied on its own: the result says which failed and
    /// why (`errors`, with IoT Hub's error code names such as `DeviceAlreadyExists`), and the
    /// call itself succeeds as long as the hub answered.
    ///
    /// ```no_run
    /// # async fn demo(registry: iothub::service::RegistryManager) -> iothub::Result<()> {
    /// use iothub::protocol::{BulkDeviceOperation, Device, ImportMode};
    ///
    /// let result = registry
    ///     .bulk_registry_operation(&[
    ///         BulkDeviceOperation::new(Device::new("sensor-1"), ImportMode::Create),
    ///         BulkDeviceOperation::new(Device::new("sensor-0"), ImportMode::Delete),
    ///     ])
    ///     .await?;
    /// for error in &result.errors {
    ///     println!("{}: {} ({})", error.device_id, error.error_status, error.error_code);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Errors (before anything is sent): [`ErrorKind::InvalidMessage`] for an empty list or
    /// one over 100 devices, [`ErrorKind::InvalidIdentityId`] for an id outside IoT Hub's rules.
    pub async fn bulk_registry_operation(
        &self,
        operations: &[BulkDeviceOperation],
    ) -> Result<BulkRegistryOperationResult> {
        if operations.is_empty() || operations.len() > MAX_BULK_DEVICES {
            return Err(Error::new(
                ErrorKind::InvalidMessage,
                format!(
                    "a bulk registry operation takes 1 to {MAX_BULK_DEVICES} devices, not {}: \
                     split the list",
                    operations.len()
                ),
            ));
        }
        for operation in operations {
            check_device_id(&operation.device.device_id)?;
        }
        self.http().bulk(operations).await
    }

    /// Registers `devices` in one bulk request (`importMode` `create`, as Node's
    /// `Registry.addDevices`).
    pub async fn add_devices(&self, devices: &[Device]) -> Result<BulkRegistryOperationResult> {
        self.bulk_with(devices, ImportMode::Create).await
    }

    /// Updates `devices` in one bulk request: with `force`, whatever their etags (`update`);
    /// without, only those whose `etag` is still current (`updateIfMatchETag`), as Node's
    /// `Registry.updateDevices(devices, forceUpdate)`.
    pub async fn update_devices(
        &self,
        devices: &[Device],
        force: bool,
    ) -> Result<BulkRegistryOperationResult> {
        let mode = if force {
            ImportMode::Update
        } else {
            ImportMode::UpdateIfMatchETag
        };
        self.bulk_with(devices, mode).await
    }

    /// Deletes `devices` in one bulk request: with `force`, whatever their etags (`delete`);
    /// without, only those whose `etag` is still current (`deleteIfMatchETag`), as Node's
    /// `Registry.removeDevices(devices, forceRemove)`.
    pub async fn remove_devices(
        &self,
        devices: &[Device],
        force: bool,
    ) -> Result<BulkRegistryOperationResult> {
        let mode = if force {
            ImportMode::Delete
        } else {
            ImportMode::DeleteIfMatchETag
        };
        self.bulk_with(devices, mode).await
    }

    async fn bulk_with(
        &self,
        devices: &[Device],
        mode: ImportMode,
    ) -> Result<BulkRegistryOperationResult> {
        let operations: Vec<BulkDeviceOperation> = devices
            .iter()
            .map(|device| BulkDeviceOperation::new(device.clone(), mode))
            .collect();
        self.bulk_registry_operation(&operations).await
    }
}
