//! IoT Hub's wire formats, without I/O: MQTT topics, the property bag, feedback records.
//!
//! The device client and the local hub both use these functions, so that both ends agree on
//! every byte by construction. They are public for applications that bring their own MQTT
//! client.

#[cfg(any(feature = "local-hub", feature = "service"))]
pub(crate) mod amqp_error;
#[cfg(any(feature = "local-hub", feature = "service"))]
pub(crate) mod amqp_message;
mod c2d_address;
pub(crate) mod expiry_time;
pub(crate) mod feedback;
pub(crate) mod percent;
pub mod ports;
mod property_bag;
mod registry_json;
mod topic;

pub use c2d_address::{c2d_address, parse_c2d_address};
pub use feedback::{
    FEEDBACK_CONTENT_TYPE, FeedbackRecord, FeedbackStatus, decode_feedback_batch,
    encode_feedback_batch,
};
pub use property_bag::{
    ACK, CONTENT_ENCODING, CONTENT_TYPE, CORRELATION_ID, EXPIRY, MESSAGE_ID, PropertyBag, TO,
    USER_ID,
};
pub use registry_json::{
    Authentication, Capabilities, Device, DeviceConnectionState, DeviceStatus, PurgeResult,
    RegistryStatistics, SymmetricKey, X509Thumbprint, error_code,
};
pub use topic::{
    TopicIdentity, c2d_subscription, c2d_topic, parse_c2d_topic, parse_telemetry_topic,
    telemetry_topic,
};
