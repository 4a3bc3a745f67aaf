//! IoT Hub's MQTT topics for telemetry and cloud-to-device messages.
//!
//! - Telemetry (device to cloud): `devices/{device}/messages/events/{bag}`, and for a module
//!   `devices/{device}/modules/{module}/messages/events/{bag}` (MicrosoftDocs
//!   `iot-mqtt-connect-to-iot-hub.md`; py-device `mqtt_topic_iothub.py`).
//! - Cloud to device: `devices/{device}/messages/devicebound/{bag}`, to which a device
//!   subscribes as `devices/{device}/messages/devicebound/#`.
//!
//! Device and module ids are written into topics as they are, not percent-encoded
//! (`devices/my$device/messages/events/`, py-device `test_mqtt_topic_iothub.py`).

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::protocol::property_bag::{PropertyBag, SystemOrder};

const DEVICES: &str = "devices/";
const EVENTS: &str = "messages/events";
const DEVICEBOUND: &str = "messages/devicebound";

fn topic_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidTopic, detail)
}

/// The identity a topic belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicIdentity {
    /// The device id, as written in the topic.
    pub device_id: String,
    /// The module id, for a module's topic.
    pub module_id: Option<String>,
}

/// The filter a device subscribes to for cloud-to-device messages.
pub fn c2d_subscription(device_id: &str) -> String {
    format!("{DEVICES}{device_id}/{DEVICEBOUND}/#")
}

/// The topic that delivers `message` to `device_id`, properties in the hub's order.
pub fn c2d_topic(device_id: &str, message: &Message) -> Result<String> {
    let bag = PropertyBag::from_message(message, SystemOrder::CloudToDevice)?;
    let mut topic = format!("{DEVICES}{device_id}/{DEVICEBOUND}/");
    bag.encode_into(&mut topic);
    Ok(topic)
}

/// Reads a cloud-to-device topic and its payload into the device id and the message.
///
/// ```
/// use iothub::protocol::parse_c2d_topic;
///
/// let (device, msg) = parse_c2d_topic(
///     "devices/dev1/messages/devicebound/%24.mid=m1&%24.ct=application%2Fjson&prop%202=v%2F2",
///     "hello".into(),
/// )?;
/// assert_eq!(device, "dev1");
/// assert_eq!(msg.message_id(), Some("m1"));
/// assert_eq!(msg.content_type(), Some("application/json"));
/// assert_eq!(msg.property("prop 2"), Some("v/2"));
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn parse_c2d_topic(topic: &str, payload: Bytes) -> Result<(String, Message)> {
    let (device_id, bag) = split_device(topic)
        .and_then(|(device_id, rest)| Some((device_id, bag_after(rest, DEVICEBOUND)?)))
        .ok_or_else(|| {
            topic_error(
                "not a cloud-to-device topic (expected 'devices/{id}/messages/devicebound/')",
            )
        })?;
    let message = PropertyBag::decode(bag)?.into_message(payload)?;
    Ok((device_id.to_owned(), message))
}

/// Splits `devices/{id}/rest` into the id and `rest`.
fn split_device(topic: &str) -> Option<(&str, &str)> {
    topic
        .strip_prefix(DEVICES)?
        .split_once('/')
        .filter(|(id, _)| !id.is_empty())
}

/// The bag after `section`: `""` for `section` alone, the rest after `section/` otherwise.
fn bag_after<'a>(rest: &'a str, section: &str) -> Option<&'a str> {
    let tail = rest.strip_prefix(section)?;
    if tail.is_empty() {
        Some(tail)
    } else {
        tail.strip_prefix('/')
    }
}

/// The topic that sends `message` as telemetry from a device or module, properties in the
/// Python SDK's order.
pub fn telemetry_topic(
    device_id: &str,
    module_id: Option<&str>,
    message: &Message,
) -> Result<String> {
    let bag = PropertyBag::from_message(message, SystemOrder::Telemetry)?;
    let mut topic = String::with_capacity(64);
    topic.push_str(DEVICES);
    topic.push_str(device_id);
    if let Some(module_id) = module_id {
        topic.push_str("/modules/");
        topic.push_str(module_id);
    }
    topic.push('/');
    topic.push_str(EVENTS);
    topic.push('/');
    bag.encode_into(&mut topic);
    Ok(topic)
}

/// Reads a telemetry topic and its payload into the sender's identity and the message.
///
/// ```
/// use iothub::protocol::parse_telemetry_topic;
///
/// let (from, msg) = parse_telemetry_topic(
///     "devices/dev1/modules/m1/messages/events/%24.mid=d2c-1&k=v%20v",
///     "{}".into(),
/// )?;
/// assert_eq!(from.device_id, "dev1");
/// assert_eq!(from.module_id.as_deref(), Some("m1"));
/// assert_eq!(msg.property("k"), Some("v v"));
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn parse_telemetry_topic(topic: &str, payload: Bytes) -> Result<(TopicIdentity, Message)> {
    let (device_id, module_id, bag) = split_device(topic)
        .and_then(|(device_id, rest)| match rest.strip_prefix("modules/") {
            Some(rest) => {
                let (module_id, rest) = rest.split_once('/').filter(|(id, _)| !id.is_empty())?;
                Some((
                    device_id,
                    Some(module_id.to_owned()),
                    bag_after(rest, EVENTS)?,
                ))
            }
            None => Some((device_id, None, bag_after(rest, EVENTS)?)),
        })
        .ok_or_else(|| {
            topic_error(
                "not a telemetry topic (expected 'devices/{id}[/modules/{id}]/messages/events/')",
            )
        })?;
    let message = PropertyBag::decode(bag)?.into_message(payload)?;
    let identity = TopicIdentity {
        device_id: device_id.to_owned(),
        module_id,
    };
    Ok((identity, message))
}
