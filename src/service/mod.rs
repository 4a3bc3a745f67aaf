//! The service side: [`RegistryManager`], a back end's handle to IoT Hub — cloud-to-device
//! messages and their delivery feedback over AMQP 1.0, the identity registry over HTTPS.

mod amqp;
mod feedback;
mod http_registry;
mod modules;
mod registry_manager;

pub use crate::protocol::{
    Authentication, Capabilities, Device, DeviceConnectionState, DeviceStatus, Module,
    RegistryStatistics, SymmetricKey,
};
pub use feedback::{FeedbackBatch, FeedbackReceiver};
pub use registry_manager::{RegistryManager, RegistryManagerBuilder};
