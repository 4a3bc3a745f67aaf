//! The service side: [`RegistryManager`], a back end's handle to IoT Hub — cloud-to-device
//! messages and their delivery feedback over AMQP 1.0, the identity registry, device and module
//! twins and direct methods over HTTPS.

mod amqp;
mod bulk_registry;
mod feedback;
mod http_registry;
mod methods;
mod modules;
mod registry_manager;
mod twins;

pub use crate::protocol::{
    Authentication, Capabilities, Device, DeviceConnectionState, DeviceStatus, MethodResult,
    Module, RegistryStatistics, SymmetricKey, Twin, TwinCollection, TwinPatch, TwinProperties,
};
pub use feedback::{FeedbackBatch, FeedbackReceiver};
pub use registry_manager::{RegistryManager, RegistryManagerBuilder};
