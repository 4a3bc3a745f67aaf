//! Cloud-to-device messages as AMQP 1.0 messages, both ways, without I/O.
//!
//! The rules follow what the official service SDKs send on the `/messages/devicebound` link
//! (azure-iot-hub-node `src/common-amqp/amqp_message.ts`, `AmqpMessage.fromMessage`;
//! azure-iot-hub-python `src/azure/iot/hub/iothub_amqp_client.py`, `send_message_to_device`;
//! Microsoft Learn, "Communicate with your IoT hub by using the AMQP protocol", section
//! "Invoke cloud-to-device messages (service client)"):
//!
//! | [`Message`] | AMQP |
//! |---|---|
//! | message id, correlation id | `properties.message-id`, `correlation-id`: any AMQP type read (string, uuid, ulong, binary), a string written |
//! | user id | `properties.user-id` (binary, UTF-8) |
//! | to | `properties.to` |
//! | content type, content encoding | `properties.content-type`, `content-encoding` (symbols) |
//! | expiry | `properties.absolute-expiry-time` (timestamp, ms) |
//! | ack | application property `iothub-ack` |
//! | custom properties | application properties, in order; a bare property is a null value |
//! | body | one data section (several are concatenated when read; an amqp-value string or binary is also read) |
//!
//! Ids that are not strings become text as: ulong in decimal, uuid in the lowercase hyphenated
//! form, binary as lowercase hex. IoT Hub documents no text form for binary ids; hex is this
//! crate's choice.

// The service client only writes messages; the hub also reads them.
#![cfg_attr(not(feature = "local-hub"), allow(dead_code))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message as AmqpMessage, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::message::{Ack, Message};
use crate::protocol::expiry_time;

/// The application property carrying the requested feedback: the same name as in the MQTT
/// property bag (azure-iot-hub-node `src/common-amqp/amqp_message.ts`, `AmqpMessage.fromMessage`,
/// writes `message.ack` there).
const ACK_PROPERTY: &str = crate::protocol::ACK;

/// The target of the back end's cloud-to-device sender link (Microsoft Learn, "Communicate with
/// your IoT hub by using the AMQP protocol"; azure-iot-hub-node `src/amqp.ts`, `_c2dEndpoint`).
pub(crate) const C2D_LINK_TARGET: &str = "/messages/devicebound";

/// The source of the back end's feedback receiver link (azure-iot-hub-node `src/amqp.ts`,
/// `_feedbackEndpoint`; azure-iot-sdk-csharp `iothub/service/src/Amqp/AmqpClientHelper.cs`).
pub(crate) const FEEDBACK_LINK_SOURCE: &str = "/messages/serviceBound/feedback";

/// The source of the back end's file-upload notification link (`azure-iot-hub-node`,
/// `src/amqp.ts`, `_fileNotificationEndpoint`).
#[cfg(feature = "local-hub")]
pub(crate) const FILE_NOTIFICATION_LINK_SOURCE: &str = "/messages/serviceBound/filenotifications";

/// An AMQP message with any body, as a link receives it.
pub(crate) type AmqpBodyMessage = AmqpMessage<Body<Value>>;

fn invalid(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidMessage, detail)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn uuid_text(bytes: &[u8; 16]) -> String {
    let h = hex(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A message-id or correlation-id of any AMQP type as text.
pub(crate) fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid_text(u.as_inner()),
        MessageId::Binary(b) => hex(b),
    }
}

/// An application property value as text; `None` for a null value (a bare property).
fn value_text(key: &str, value: &SimpleValue) -> Result<Option<String>> {
    Ok(Some(match value {
        SimpleValue::Null => return Ok(None),
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(f) => f.to_string(),
        SimpleValue::Double(f) => f.to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Timestamp(t) => expiry_time::format(time_from_millis(t.milliseconds())?)?,
        SimpleValue::Uuid(u) => uuid_text(u.as_inner()),
        SimpleValue::Binary(b) => hex(b),
        SimpleValue::Decimal32(_)
        | SimpleValue::Decimal64(_)
        | SimpleValue::Decimal128(_)
        | SimpleValue::Described(_) => {
            return Err(invalid(format!(
                "application property '{}' has a type with no text form",
                key.escape_debug()
            )));
        }
    }))
}

fn time_from_millis(ms: i64) -> Result<SystemTime> {
    let span = Duration::from_millis(ms.unsigned_abs());
    let at = if ms >= 0 {
        UNIX_EPOCH.checked_add(span)
    } else {
        UNIX_EPOCH.checked_sub(span)
    };
    at.ok_or_else(|| invalid("the absolute expiry time is out of range"))
}

fn millis_from_time(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The body bytes: data sections concatenated, or an amqp-value holding binary or a string.
pub(crate) fn body_bytes(body: &Body<Value>) -> Result<Vec<u8>> {
    match body {
        Body::Data(sections) => Ok(sections.iter().flat_map(|d| d.0.iter().copied()).collect()),
        Body::Value(AmqpValue(Value::Binary(b))) => Ok(b.to_vec()),
        Body::Value(AmqpValue(Value::String(s))) => Ok(s.clone().into_bytes()),
        Body::Value(AmqpValue(Value::Null)) | Body::Empty => Ok(Vec::new()),
        Body::Value(_) => Err(invalid(
            "the body is an amqp-value that is neither binary nor a string",
        )),
        Body::Sequence(_) => Err(invalid("an amqp-sequence body is not supported")),
    }
}

/// Reads an AMQP message as sent on the C2D link into a [`Message`].
///
/// Errors ([`ErrorKind::InvalidMessage`]): a body that is not data, binary or text; an
/// application property with no text form (decimal or described); an expiry out of range.
pub(crate) fn message_from_amqp(amqp: &AmqpBodyMessage) -> Result<Message> {
    let mut message = Message::new(body_bytes(&amqp.body)?);
    if let Some(p) = &amqp.properties {
        if let Some(id) = &p.message_id {
            message = message.with_message_id(id_text(id));
        }
        if let Some(id) = &p.correlation_id {
            message = message.with_correlation_id(id_text(id));
        }
        if let Some(user) = &p.user_id {
            message = message.with_user_id(String::from_utf8_lossy(user));
        }
        if let Some(to) = &p.to {
            message = message.with_to(to.clone());
        }
        if let Some(ct) = &p.content_type {
            message = message.with_content_type(ct.0.clone());
        }
        if let Some(ce) = &p.content_encoding {
            message = message.with_content_encoding(ce.0.clone());
        }
        if let Some(at) = &p.absolute_expiry_time {
            message = message.with_expiry(time_from_millis(at.milliseconds())?);
        }
    }
    if let Some(props) = &amqp.application_properties {
        for (key, value) in props.0.iter() {
            let text = value_text(key, value)?;
            message = match (key.as_str(), text) {
                (ACK_PROPERTY, Some(text)) => match Ack::from_wire(&text) {
                    Some(ack) => message.with_ack(ack),
                    None => message.with_property(key.clone(), text),
                },
                (_, Some(text)) => message.with_property(key.clone(), text),
                (_, None) => message.with_bare_property(key.clone()),
            };
        }
    }
    Ok(message)
}

/// Writes a [`Message`] as the AMQP message a back end sends on the C2D link: ids as strings,
/// `iothub-ack` first among the application properties, the body in one data section.
#[cfg_attr(not(feature = "service"), allow(dead_code))]
pub(crate) fn message_to_amqp(message: &Message) -> AmqpMessage<Data> {
    let properties = Properties {
        message_id: message
            .message_id()
            .map(|s| MessageId::String(s.to_owned())),
        user_id: message
            .user_id()
            .map(|u| Binary::from(u.as_bytes().to_vec())),
        to: message.to().map(str::to_owned),
        correlation_id: message
            .correlation_id()
            .map(|s| MessageId::String(s.to_owned())),
        content_type: message.content_type().map(Symbol::from),
        content_encoding: message.content_encoding().map(Symbol::from),
        absolute_expiry_time: message
            .expiry()
            .map(|at| Timestamp::from_milliseconds(millis_from_time(at))),
        ..Properties::default()
    };
    let mut app = ApplicationProperties::builder();
    if let Some(ack) = message.ack() {
        app = app.insert(ACK_PROPERTY, SimpleValue::String(ack.as_str().to_owned()));
    }
    for (key, value) in message.properties() {
        let value = value.map_or(SimpleValue::Null, |v| SimpleValue::String(v.to_owned()));
        app = app.insert(key, value);
    }
    AmqpMessage::builder()
        .properties(properties)
        .application_properties(app.build())
        .data(Binary::from(message.body().to_vec()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::Uuid;

    fn as_body_message(m: AmqpMessage<Data>) -> AmqpBodyMessage {
        AmqpMessage {
            header: m.header,
            delivery_annotations: m.delivery_annotations,
            message_annotations: m.message_annotations,
            properties: m.properties,
            application_properties: m.application_properties,
            body: Body::Data(vec![m.body].into()),
            footer: m.footer,
        }
    }

    #[test]
    fn ids_of_every_type_become_text() {
        let uuid = Uuid::from([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]);
        assert_eq!(
            id_text(&MessageId::Uuid(uuid)),
            "12345678-9abc-4def-8123-456789abcdef"
        );
        assert_eq!(id_text(&MessageId::Ulong(42)), "42");
        assert_eq!(
            id_text(&MessageId::Binary(Binary::from(vec![0xde, 0xad]))),
            "dead"
        );
        assert_eq!(id_text(&MessageId::String("m1".into())), "m1");
    }

    #[test]
    fn a_message_survives_the_round_trip() {
        let expiry = UNIX_EPOCH + Duration::from_millis(1_795_364_141_302);
        let message = Message::new(&b"{\"a\":1}"[..])
            .with_message_id("m1")
            .with_correlation_id("c1")
            .with_user_id("svc")
            .with_to("/devices/dev1/messages/devicebound")
            .with_content_type("application/json")
            .with_content_encoding("utf-8")
            .with_expiry(expiry)
            .with_ack(Ack::Full)
            .with_property("prop1", "v1")
            .with_bare_property("flag");
        let amqp = message_to_amqp(&message);
        let keys: Vec<&str> = amqp
            .application_properties
            .as_ref()
            .unwrap()
            .0
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["iothub-ack", "prop1", "flag"]);
        let back = message_from_amqp(&as_body_message(amqp)).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn typed_properties_and_value_bodies_are_read() {
        let amqp: AmqpBodyMessage = AmqpMessage::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert("IoThub-status", SimpleValue::Int(200))
                    .insert("iothub-ack", SimpleValue::String("sometimes".into()))
                    .insert("b", SimpleValue::Bool(true))
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String("hi".into()))))
            .build();
        let m = message_from_amqp(&amqp).unwrap();
        assert_eq!(m.body_str(), Some("hi"));
        assert_eq!(m.ack(), None);
        assert_eq!(
            m.properties().collect::<Vec<_>>(),
            [
                ("IoThub-status", Some("200")),
                ("iothub-ack", Some("sometimes")),
                ("b", Some("true"))
            ]
        );
    }

    #[test]
    fn a_sequence_body_is_refused() {
        let amqp: AmqpBodyMessage = AmqpMessage::builder()
            .body(Body::Sequence(Vec::new().into()))
            .build();
        assert_eq!(
            message_from_amqp(&amqp).unwrap_err().kind(),
            ErrorKind::InvalidMessage
        );
    }
}
