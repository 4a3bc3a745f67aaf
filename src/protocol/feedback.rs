//! Delivery feedback: the JSON records IoT Hub sends back about cloud-to-device messages.
//!
//! A feedback message carries a JSON array of records in a data section, with content type
//! [`FEEDBACK_CONTENT_TYPE`] (Microsoft Learn, "Understand cloud-to-device messaging", section
//! "Message feedback"; azure-iot-sdk-csharp `iothub/service/src/Feedback/FeedbackRecord.cs` and
//! `AmqpFeedbackReceiver.cs`). `statusCode` and `description` carry the same word, because
//! the C service SDK reads the status from `description` (azure-iot-sdk-c
//! `iothub_service_client/src/iothub_messaging_ll.c`, where the feedback record is parsed).
//!
//! This module is the one place that encodes and decodes that body, for the hub and the
//! service client alike.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The content type of a feedback message (azure-iot-sdk-csharp
/// `common/src/service/CommonConstants.cs`, `BatchedFeedbackContentType`).
pub const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";

/// The outcome a feedback record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedbackStatus {
    /// The device completed the message.
    Success,
    /// The message's time to live ran out before the device completed it.
    Expired,
    /// The message was delivered the maximum number of times without being completed.
    DeliveryCountExceeded,
    /// The device rejected the message.
    Rejected,
    /// The device's queue was purged with the message still in it.
    Purged,
}

impl FeedbackStatus {
    /// The wire name, e.g. `Success`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Success => "Success",
            FeedbackStatus::Expired => "Expired",
            FeedbackStatus::DeliveryCountExceeded => "DeliveryCountExceeded",
            FeedbackStatus::Rejected => "Rejected",
            FeedbackStatus::Purged => "Purged",
        }
    }

    /// Whether a message that asked for `ack` gets a record with this status: positive
    /// feedback for `Success`, negative for every other outcome (Microsoft Learn, "Understand
    /// cloud-to-device messaging", section "Message feedback").
    pub fn is_requested_by(self, ack: Option<crate::Ack>) -> bool {
        use crate::Ack;
        match (self, ack) {
            (_, None | Some(Ack::None)) => false,
            (FeedbackStatus::Success, Some(ack)) => matches!(ack, Ack::Positive | Ack::Full),
            (_, Some(ack)) => matches!(ack, Ack::Negative | Ack::Full),
        }
    }
}

impl fmt::Display for FeedbackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One feedback record.
///
/// Records come from the hub; [`FeedbackRecord::new`] makes one, e.g. to test the code that
/// handles them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FeedbackRecord {
    /// The message id of the cloud-to-device message this record is about.
    #[serde(default)]
    pub original_message_id: String,
    /// The outcome.
    pub status_code: FeedbackStatus,
    /// The outcome in words; IoT Hub writes the status name here.
    #[serde(default)]
    pub description: String,
    /// The device the message was for.
    pub device_id: String,
    /// The generation id of that device, which tells apart a device deleted and re-created
    /// with the same id.
    #[serde(default)]
    pub device_generation_id: String,
    /// When the outcome happened, ISO 8601 UTC.
    #[serde(default)]
    pub enqueued_time_utc: String,
}

impl FeedbackRecord {
    /// A record about message `original_message_id` for `device_id`, with `status_code` and, as
    /// IoT Hub writes it, the status name as its description; no generation id or time.
    pub fn new(
        original_message_id: impl Into<String>,
        device_id: impl Into<String>,
        status_code: FeedbackStatus,
    ) -> Self {
        FeedbackRecord {
            original_message_id: original_message_id.into(),
            status_code,
            description: status_code.as_str().to_owned(),
            device_id: device_id.into(),
            device_generation_id: String::new(),
            enqueued_time_utc: String::new(),
        }
    }

    /// The same record with this device generation id.
    pub fn with_device_generation_id(mut self, generation_id: impl Into<String>) -> Self {
        self.device_generation_id = generation_id.into();
        self
    }

    /// The same record with this outcome time (ISO 8601 UTC).
    pub fn with_enqueued_time_utc(mut self, time: impl Into<String>) -> Self {
        self.enqueued_time_utc = time.into();
        self
    }
}

/// Encodes a batch of records as the JSON array of a feedback message body.
pub fn encode_feedback_batch(records: &[FeedbackRecord]) -> Vec<u8> {
    serde_json::to_vec(records).expect("feedback records always serialize")
}

/// Decodes a feedback message body.
pub fn decode_feedback_batch(body: &[u8]) -> Result<Vec<FeedbackRecord>> {
    serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::InvalidMessage,
            "the feedback body is not a JSON array of records",
        )
        .with_source(e)
    })
}

/// Decodes the body of a feedback message as an AMQP link receives it: data sections (the
/// form IoT Hub sends), or an amqp-value holding binary or a string.
#[cfg(feature = "service")]
pub(crate) fn decode_feedback_body(
    body: &fe2o3_amqp_types::messaging::Body<fe2o3_amqp_types::primitives::Value>,
) -> Result<Vec<FeedbackRecord>> {
    decode_feedback_batch(&crate::protocol::amqp_message::body_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_record() {
        // The example record of Microsoft Learn, "Understand cloud-to-device messaging" (also `amqp.feedback_message` in tests/data/vectors.json).
        let body = br#"[{"originalMessageId":"0987654321","enqueuedTimeUtc":"2015-07-28T16:24:48.789Z","statusCode":"Success","description":"Success","deviceId":"123","deviceGenerationId":"abcdefghijklmnopqrstuvwxyz"}]"#;
        let records = decode_feedback_batch(body).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].original_message_id, "0987654321");
        assert_eq!(records[0].status_code, FeedbackStatus::Success);
        assert_eq!(
            records[0].device_generation_id,
            "abcdefghijklmnopqrstuvwxyz"
        );
        let again = decode_feedback_batch(&encode_feedback_batch(&records)).unwrap();
        assert_eq!(again, records);
        assert!(decode_feedback_batch(b"{}").is_err());
    }

    #[test]
    fn ack_modes_select_records() {
        use crate::Ack;
        let s = FeedbackStatus::Success;
        let e = FeedbackStatus::Expired;
        assert!(s.is_requested_by(Some(Ack::Positive)) && s.is_requested_by(Some(Ack::Full)));
        assert!(!s.is_requested_by(Some(Ack::Negative)) && !s.is_requested_by(None));
        assert!(e.is_requested_by(Some(Ack::Negative)) && e.is_requested_by(Some(Ack::Full)));
        assert!(!e.is_requested_by(Some(Ack::Positive)) && !e.is_requested_by(Some(Ack::None)));
    }
}
