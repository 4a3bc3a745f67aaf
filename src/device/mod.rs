//! The device side: [`DeviceClient`], an IoT Hub device client over MQTT 3.1.1.
//!
//! It connects with a device (or module) connection string over TLS on 8883 or WebSockets on
//! 443. A device subscribes to `devices/{id}/messages/devicebound/#` and hands each
//! cloud-to-device message to the application with every system and custom property decoded; a
//! module (`ModuleId=` in its connection string) has no cloud-to-device messages and sends
//! telemetry on `devices/{id}/modules/{module}/messages/events/`. Its SAS tokens
//! are renewed before they expire, and lost connections are re-established with backoff;
//! messages are acknowledged only once the application has them (or has completed them, in
//! [`AckMode::Manual`]), so none is lost across a reconnect.

mod client;
mod client_certificate;
mod connection;
#[cfg(all(test, feature = "local-hub"))]
mod connection_tests;
mod desired;
mod features;
mod inbound;
mod message_stream;
mod methods;
mod options;
mod pending_requests;
mod sends;
mod state;
mod subscription_flow;
mod subscriptions;
mod twin;

pub use crate::retry::RetryPolicy;
pub use client::{DeviceClient, DeviceClientBuilder, MAX_TELEMETRY_SIZE};
pub use client_certificate::ClientCertificate;
pub use desired::{DesiredPropertiesUpdate, DesiredPropertyUpdates, DesiredUpdateKind};
pub use message_stream::MessageStream;
pub use methods::{
    DROPPED_REQUEST_STATUS, MethodRequest, MethodRequests, UNHANDLED_REQUEST_STATUS,
};
pub use options::{AckMode, Transport};
pub use state::{CloseReason, ConnectionState};
pub use twin::{DEFAULT_TWIN_REQUEST_TIMEOUT, Twin, VersionedProperties};
