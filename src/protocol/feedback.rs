//! Delivery feedback: the JSON records IoT Hub sends back about cloud-to-device messages.
//!
//! A feedback message carries a JSON array of records in a data section, with content type
//! [`FEEDBACK_CONTENT_TYPE`] (protocol.md §4.6; MicrosoftDocs `iot-hub-devguide-messages-c2d.md`;
//! csharp `Feedback/FeedbackRecord.cs`). `statusCode` and `description` carry the same word,
//! because the C service SDK reads the status from `description`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The content type of a feedback message (csharp `CommonConstants.BatchedFeedbackContentType`).
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
    /// feedback for `Success`, negative for every other outcome (MicrosoftDocs
    /// `iot-hub-devguide-messages-c2d.md`).
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_record() {
        // MicrosoftDocs iot-hub-devguide-messages-c2d.md, via shared/vectors.json amqp.feedback_message.
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
