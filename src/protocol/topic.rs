//! IoT Hub's MQTT topics for messages: telemetry, cloud-to-device messages and module inputs.
//!
//! - Telemetry (device to cloud): `devices/{device}/messages/events/{bag}`, and for a module
//!   `devices/{device}/modules/{module}/messages/events/{bag}`.
//! - Cloud to device: `devices/{device}/messages/devicebound/{bag}`, to which a device
//!   subscribes as `devices/{device}/messages/devicebound/#`. Modules have none.
//! - A module's input messages: `devices/{device}/modules/{module}/inputs/{input}/{bag}`, to
//!   which a module subscribes as `devices/{device}/modules/{module}/inputs/#`; the input name
//!   is percent-encoded.
//!
//! Sources: Microsoft Learn "Communicate with an IoT hub using the MQTT protocol";
//! azure-iot-sdk-python `azure/iot/device/iothub/pipeline/mqtt_topic_iothub.py`
//! (`get_telemetry_topic_for_publish`, `get_c2d_topic_for_subscribe`,
//! `get_input_topic_for_subscribe`, `get_input_name_from_topic`,
//! `extract_message_properties_from_topic`); azure-iot-sdk-c
//! `iothub_client/src/iothubtransport_mqtt_common.c` (`TOPIC_DEVICE_MSG`,
//! `TOPIC_DEVICE_EVENTS`, `TOPIC_MODULE_EVENTS`).
//!
//! Device and module ids are written into topics as they are, not percent-encoded
//! (`devices/my$device/messages/events/`, py-device `tests/unit/iothub/pipeline/
//! test_mqtt_topic_iothub.py`).

use bytes::Bytes;

use crate::error::Result;
use crate::message::Message;
use crate::protocol::percent;
use crate::protocol::property_bag::{PropertyBag, SystemOrder};
use crate::protocol::topic_query::{decode, topic_error};

const DEVICES: &str = "devices/";
const EVENTS: &str = "messages/events";
const DEVICEBOUND: &str = "messages/devicebound";
const INPUTS: &str = "inputs";

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
    // One allocation, sized for the prefix and a typical bag (a message id, an expiry, an
    // ack): the hub builds this topic for every C2D delivery.
    const TYPICAL_BAG: usize = 128;
    let prefix = DEVICES.len() + device_id.len() + DEVICEBOUND.len() + 2;
    let mut topic = String::with_capacity(prefix + TYPICAL_BAG);
    for part in [DEVICES, device_id, "/", DEVICEBOUND, "/"] {
        topic.push_str(part);
    }
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
    let (device_id, bag) = split_c2d(topic).ok_or_else(|| {
        topic_error("not a cloud-to-device topic (expected 'devices/{id}/messages/devicebound/')")
    })?;
    let message = PropertyBag::decode_message(bag, payload)?;
    Ok((device_id.to_owned(), message))
}

/// Splits a C2D topic into the device id and the property bag.
pub(crate) fn split_c2d(topic: &str) -> Option<(&str, &str)> {
    split_device(topic)
        .and_then(|(device_id, rest)| Some((device_id, bag_after(rest, DEVICEBOUND)?)))
}

/// The filter a module subscribes to for its input messages.
pub fn input_subscription(device_id: &str, module_id: &str) -> String {
    format!("{DEVICES}{device_id}/modules/{module_id}/{INPUTS}/#")
}

/// The topic that delivers `message` to input `input` of a module, for the hub.
pub fn input_topic(
    device_id: &str,
    module_id: &str,
    input: &str,
    message: &Message,
) -> Result<String> {
    let bag = PropertyBag::from_message(message, SystemOrder::CloudToDevice)?;
    let mut topic = format!("{DEVICES}{device_id}/modules/{module_id}/{INPUTS}/");
    percent::encode_into(input, &mut topic);
    topic.push('/');
    bag.encode_into(&mut topic);
    Ok(topic)
}

/// A module input topic, split: device id, module id, input name (still encoded), bag.
pub(crate) struct InputParts<'a> {
    pub device_id: &'a str,
    pub module_id: &'a str,
    pub input: &'a str,
    pub bag: &'a str,
}

/// Splits `devices/{d}/modules/{m}/inputs/{input}[/{bag}]`.
pub(crate) fn split_input(topic: &str) -> Option<InputParts<'_>> {
    let (device_id, rest) = split_device(topic)?;
    let (module_id, rest) = rest
        .strip_prefix("modules/")?
        .split_once('/')
        .filter(|(id, _)| !id.is_empty())?;
    let rest = rest.strip_prefix(INPUTS)?.strip_prefix('/')?;
    let (input, bag) = rest.split_once('/').unwrap_or((rest, ""));
    (!input.is_empty()).then_some(InputParts {
        device_id,
        module_id,
        input,
        bag,
    })
}

/// Reads a module input topic and its payload into the module's identity, the input name and
/// the message.
///
/// ```
/// use iothub::protocol::parse_input_topic;
///
/// let (to, input, msg) = parse_input_topic(
///     "devices/d/modules/m/inputs/fake%24input/%24.mid=1&k=v",
///     "{}".into(),
/// )?;
/// assert_eq!((to.device_id.as_str(), to.module_id.as_deref()), ("d", Some("m")));
/// assert_eq!(input, "fake$input");
/// assert_eq!(msg.property("k"), Some("v"));
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn parse_input_topic(topic: &str, payload: Bytes) -> Result<(TopicIdentity, String, Message)> {
    let parts = split_input(topic).ok_or_else(|| {
        topic_error(
            "not a module input topic (expected 'devices/{id}/modules/{id}/inputs/{name}/')",
        )
    })?;
    let input = decode(parts.input, "the input name")?.into_owned();
    let message = PropertyBag::decode_message(parts.bag, payload)?;
    let identity = TopicIdentity {
        device_id: parts.device_id.to_owned(),
        module_id: Some(parts.module_id.to_owned()),
    };
    Ok((identity, input, message))
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
    let message = PropertyBag::decode_message(bag, payload)?;
    let identity = TopicIdentity {
        device_id: device_id.to_owned(),
        module_id,
    };
    Ok((identity, message))
}
