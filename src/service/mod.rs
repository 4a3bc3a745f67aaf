//! The service side: [`RegistryManager`], a back end's handle to IoT Hub — the identity
//! registry over HTTPS.

mod http_registry;
mod registry_manager;

pub use crate::protocol::{
    Authentication, Capabilities, Device, DeviceConnectionState, DeviceStatus, RegistryStatistics,
    SymmetricKey,
};
pub use registry_manager::{
    DEFAULT_AMQP_PORT, DEFAULT_HTTPS_PORT, RegistryManager, RegistryManagerBuilder,
};
