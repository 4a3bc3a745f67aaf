//! A retained telemetry event as the AMQP message the built-in endpoint delivers.
//!
//! - Message annotations, all with symbol keys (azure-sdk-for-rust
//!   `sdk/eventhubs/azure_messaging_eventhubs/src/models/event_data.rs` reads only symbol
//!   keys): `x-opt-sequence-number` a long, `x-opt-offset` a string, `x-opt-enqueued-time` a
//!   timestamp (azure-sdk-for-python `azure/eventhub/_common.py`, `EventData.offset`,
//!   `sequence_number`, `enqueued_time`); and what IoT Hub stamps: `iothub-connection-device-id`,
//!   `iothub-connection-module-id` (module telemetry), `iothub-connection-auth-method` (JSON
//!   text), `iothub-connection-auth-generation-id`, `iothub-enqueuedtime` (timestamp),
//!   `iothub-message-source` (MicrosoftDocs `iot-hub-devguide-messages-construct.md`,
//!   "System properties" and "Anti-spoofing properties").
//! - The properties section carries message-id, correlation-id, user-id, content-type and
//!   content-encoding (same page, the "Event Hubs" names), `to` and the expiry; it is left out
//!   when the device set none of them: azure-iot-sdk-python's e2e helper reads
//!   `properties.content_type.decode()` whenever the section exists
//!   (`dev_utils/dev_utils/service_helper_sync.py`).
//! - Application properties: the device's custom properties, unchanged ("IoT Hub never
//!   modifies these", same page).
//! - The body: one data section with the device's bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, Data, Message as AmqpMessage, MessageAnnotations, MessageId,
    Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};

use crate::local_hub::telemetry_log::TelemetryEvent;

/// `x-opt-sequence-number`.
pub(crate) const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// `x-opt-offset`.
pub(crate) const OFFSET: &str = "x-opt-offset";
/// `x-opt-enqueued-time`.
pub(crate) const ENQUEUED_TIME: &str = "x-opt-enqueued-time";

/// Milliseconds since the Unix epoch as an AMQP timestamp.
pub(crate) fn timestamp(at: SystemTime) -> Timestamp {
    let ms = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    Timestamp::from_milliseconds(ms)
}

/// The AMQP message for `event`.
pub(crate) fn event_message(event: &TelemetryEvent) -> AmqpMessage<Body<Value>> {
    let message = &event.message;
    let stamps = &event.stamps;
    let key = |k: &str| OwnedKey::Symbol(Symbol::from(k));
    let text = |s: &str| Value::String(s.to_owned());
    let mut annotations = MessageAnnotations::builder()
        .insert(key("iothub-connection-device-id"), text(&stamps.device_id));
    if let Some(module_id) = &stamps.module_id {
        annotations = annotations.insert(key("iothub-connection-module-id"), text(module_id));
    }
    let annotations = annotations
        .insert(
            key("iothub-connection-auth-method"),
            Value::String(stamps.auth_method.to_json()),
        )
        .insert(
            key("iothub-connection-auth-generation-id"),
            text(&stamps.generation_id),
        )
        .insert(
            key("iothub-enqueuedtime"),
            Value::Timestamp(timestamp(event.enqueued_time)),
        )
        .insert(key("iothub-message-source"), text(event.source))
        .insert(key(SEQUENCE_NUMBER), Value::Long(event.sequence_number))
        .insert(key(OFFSET), Value::String(event.offset.to_string()))
        .insert(
            key(ENQUEUED_TIME),
            Value::Timestamp(timestamp(event.enqueued_time)),
        )
        .build();

    let mut application = ApplicationProperties::builder();
    for (name, value) in message.properties() {
        application = application.insert(
            name,
            value.map_or(SimpleValue::Null, |v| SimpleValue::String(v.to_owned())),
        );
    }

    let properties = Properties {
        message_id: message
            .message_id()
            .map(|id| MessageId::String(id.to_owned())),
        correlation_id: message
            .correlation_id()
            .map(|id| MessageId::String(id.to_owned())),
        user_id: message
            .user_id()
            .map(|id| Binary::from(id.as_bytes().to_vec())),
        content_type: message.content_type().map(Symbol::from),
        content_encoding: message.content_encoding().map(Symbol::from),
        to: message.to().map(str::to_owned),
        absolute_expiry_time: message.expiry().map(timestamp),
        ..Properties::default()
    };
    let has_properties = properties != Properties::default();

    let builder = AmqpMessage::builder()
        .message_annotations(annotations)
        .application_properties(application.build());
    let body = Body::Data(vec![Data(Binary::from(message.body().to_vec()))].into());
    if has_properties {
        builder.properties(properties).body(body).build()
    } else {
        builder.body(body).build()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::local_hub::telemetry_log::{AuthMethod, Stamps};
    use crate::message::Message;

    fn event(message: Message, module: Option<&str>) -> TelemetryEvent {
        TelemetryEvent {
            partition: 1,
            sequence_number: 7,
            offset: 4096,
            enqueued_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            stamps: Stamps {
                device_id: "dev1".to_owned(),
                module_id: module.map(str::to_owned),
                auth_method: AuthMethod {
                    scope: "device",
                    kind: "sas",
                },
                generation_id: "638000000000000001".to_owned(),
            },
            source: "Telemetry",
            message,
        }
    }

    fn annotation<'a>(m: &'a AmqpMessage<Body<Value>>, k: &str) -> Option<&'a Value> {
        m.message_annotations
            .as_ref()?
            .0
            .get(&OwnedKey::Symbol(Symbol::from(k)))
    }

    #[test]
    fn annotations_have_the_types_the_sdks_read() {
        let m = event_message(&event(Message::new("hi"), Some("mod1")));
        assert_eq!(annotation(&m, SEQUENCE_NUMBER), Some(&Value::Long(7)));
        assert_eq!(
            annotation(&m, OFFSET),
            Some(&Value::String("4096".to_owned()))
        );
        let t = Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_123));
        assert_eq!(annotation(&m, ENQUEUED_TIME), Some(&t));
        assert_eq!(annotation(&m, "iothub-enqueuedtime"), Some(&t));
        assert_eq!(
            annotation(&m, "iothub-connection-device-id"),
            Some(&Value::String("dev1".to_owned()))
        );
        assert_eq!(
            annotation(&m, "iothub-connection-module-id"),
            Some(&Value::String("mod1".to_owned()))
        );
        assert_eq!(
            annotation(&m, "iothub-message-source"),
            Some(&Value::String("Telemetry".to_owned()))
        );
        assert!(m.properties.is_none(), "no properties section without ids");
        assert_eq!(
            m.body,
            Body::Data(vec![Data(Binary::from(b"hi".to_vec()))].into())
        );
    }

    #[test]
    fn properties_and_application_properties_carry_the_device_values() {
        let message = Message::new("{}")
            .with_message_id("m1")
            .with_correlation_id("c1")
            .with_content_type("application/json")
            .with_content_encoding("utf-8")
            .with_property("temp", "21")
            .with_bare_property("flag");
        let m = event_message(&event(message, None));
        let p = m.properties.as_ref().unwrap();
        assert_eq!(p.message_id, Some(MessageId::String("m1".to_owned())));
        assert_eq!(p.correlation_id, Some(MessageId::String("c1".to_owned())));
        assert_eq!(p.content_type, Some(Symbol::from("application/json")));
        assert_eq!(p.content_encoding, Some(Symbol::from("utf-8")));
        let app = &m.application_properties.as_ref().unwrap().0;
        assert_eq!(app.get("temp"), Some(&SimpleValue::String("21".to_owned())));
        assert_eq!(app.get("flag"), Some(&SimpleValue::Null));
        assert!(annotation(&m, "iothub-connection-module-id").is_none());
    }
}
