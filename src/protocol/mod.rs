//! IoT Hub's MQTT wire format, without I/O: topics and the property bag.
//!
//! The device client and the local hub both use these functions, so that both ends agree on
//! every byte by construction. They are public for applications that bring their own MQTT
//! client.

mod expiry_time;
pub(crate) mod percent;
mod property_bag;
mod topic;

pub use property_bag::{
    ACK, CONTENT_ENCODING, CONTENT_TYPE, CORRELATION_ID, EXPIRY, MESSAGE_ID, PropertyBag, TO,
    USER_ID,
};
pub use topic::{
    TopicIdentity, c2d_subscription, c2d_topic, parse_c2d_topic, parse_telemetry_topic,
    telemetry_topic,
};
