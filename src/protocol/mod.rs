//! IoT Hub's wire formats, without I/O: MQTT topics (messages, twins, methods, and the
//! classifier of what a device receives), the property bag, feedback records.
//!
//! The device client and the local hub both use these functions, so that both ends agree on
//! every byte by construction. They are public for applications that bring their own MQTT
//! client.

#[cfg(any(feature = "local-hub", feature = "service"))]
pub(crate) mod amqp_error;
#[cfg(any(feature = "local-hub", feature = "service"))]
pub(crate) mod amqp_message;
mod bulk_registry;
mod c2d_address;
pub(crate) mod expiry_time;
pub(crate) mod feedback;
mod identity_id;
mod method_invoke;
mod method_topic;
mod module_json;
pub(crate) mod percent;
pub mod ports;
mod property_bag;
mod received_topic;
mod registry_json;
mod topic;
mod topic_query;
mod twin;
mod twin_topic;

pub use bulk_registry::{
    BulkDeviceOperation, BulkRegistryOperationResult, DeviceRegistryOperationError,
    DeviceRegistryOperationWarning, ImportMode, MAX_BULK_DEVICES,
};
pub use c2d_address::{c2d_address, parse_c2d_address};
pub use feedback::{
    FEEDBACK_CONTENT_TYPE, FeedbackRecord, FeedbackStatus, decode_feedback_batch,
    encode_feedback_batch,
};
pub use identity_id::{
    IDENTITY_ID_SPECIAL_CHARACTERS, MAX_IDENTITY_ID_LEN, check_device_id, check_module_id,
};
pub use method_invoke::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, MAX_METHOD_PAYLOAD_BYTES,
    MAX_METHOD_TIMEOUT, MIN_RESPONSE_TIMEOUT, MethodInvocation, MethodResult, check_method_name,
    check_payload_size, response_payload,
};
pub use method_topic::{
    METHOD_REQUEST_SUBSCRIPTION, MethodRequestTopic, MethodResponseTopic, method_request_topic,
    method_response_topic, parse_method_request_topic, parse_method_response_topic,
};
pub use module_json::Module;
pub use property_bag::{
    ACK, CONTENT_ENCODING, CONTENT_TYPE, CORRELATION_ID, EXPIRY, MESSAGE_ID, PropertyBag, TO,
    USER_ID,
};
pub use received_topic::{ReceivedTopic, classify_received_topic};
pub use registry_json::{
    Authentication, Capabilities, Device, DeviceConnectionState, DeviceStatus, PurgeResult,
    RegistryStatistics, SymmetricKey, X509Thumbprint, error_code, error_message,
};
pub use topic::{
    TopicIdentity, c2d_subscription, c2d_topic, input_subscription, input_topic, parse_c2d_topic,
    parse_input_topic, parse_telemetry_topic, telemetry_topic,
};
pub use twin::{
    METADATA_KEY, Twin, TwinCollection, TwinLimits, TwinPatch, TwinProperties, TwinSection,
    VERSION_KEY, check_collection, check_key, check_patch, collection_size, collection_version,
    merge_patch, parse_collection, strip_read_only,
};
pub use twin_topic::{
    DESIRED_PATCH_SUBSCRIPTION, DesiredPatchTopic, TWIN_RESPONSE_SUBSCRIPTION, TwinRequestKind,
    TwinRequestTopic, TwinResponseTopic, desired_patch_topic, parse_desired_patch_topic,
    parse_twin_request_topic, parse_twin_response_topic, twin_get_topic, twin_patch_reported_topic,
    twin_request_topic, twin_response_topic,
};
