//! The property bag: the `key=value&key=value` tail of an IoT Hub MQTT topic.
//!
//! Keys and values are percent-encoded with uppercase hex outside `A-Z a-z 0-9 - . _ ~`, so
//! that `/`, `&`, `=`, `%`, spaces and non-ASCII text survive (py-device
//! `mqtt_topic_iothub.py`). A key without `=` has no value: the hub writes a null property that
//! way (Microsoft Learn, "Communicate with an IoT hub using the MQTT protocol", section
//! "Receiving cloud-to-device messages"). Decoding is lenient where the SDKs
//! and the hub differ: either hex case, `$` or `%24`, `+` kept as `+`, raw `/` in values (the C
//! SDK), and one trailing `/` (Node's output events).

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::message::{Ack, Message, TextField};
use crate::protocol::{expiry_time, percent};

/// `$.mid`: message id.
pub const MESSAGE_ID: &str = "$.mid";
/// `$.cid`: correlation id.
pub const CORRELATION_ID: &str = "$.cid";
/// `$.uid`: user id.
pub const USER_ID: &str = "$.uid";
/// `$.ct`: content type.
pub const CONTENT_TYPE: &str = "$.ct";
/// `$.ce`: content encoding.
pub const CONTENT_ENCODING: &str = "$.ce";
/// `$.exp`: absolute expiry time.
pub const EXPIRY: &str = "$.exp";
/// `$.to`: destination.
pub const TO: &str = "$.to";
/// `iothub-ack`: requested delivery feedback (an application property on the wire).
pub const ACK: &str = "iothub-ack";

/// The order system properties are written in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SystemOrder {
    /// Device to cloud, as the Python SDK writes it: `$.mid $.cid $.uid $.ct $.ce $.exp`
    /// (py-device `mqtt_topic_iothub.py::encode_message_properties_in_topic`).
    Telemetry,
    /// Cloud to device, as IoT Hub writes it: `$.mid`, `$.exp`, `$.to`, the other system
    /// properties, `iothub-ack`, then application properties (as a real hub's messages show in Azure-Samples/IoTMQTTSample
    /// `mosquitto_pub/readme.md`).
    CloudToDevice,
}

/// An ordered list of `(key, value)` pairs, decoded; values are optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyBag {
    pairs: Vec<(String, Option<String>)>,
}

fn bag_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidPropertyBag, detail)
}

impl PropertyBag {
    /// An empty bag.
    pub fn new() -> Self {
        PropertyBag::default()
    }

    /// Appends a pair; `None` is a key without a value.
    pub fn push(&mut self, key: impl Into<String>, value: Option<String>) {
        self.pairs.push((key.into(), value));
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, Option<&str>)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// The value of the first pair called `key`; `Some(None)` when it has no value.
    pub fn get(&self, key: &str) -> Option<Option<&str>> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Decodes the text after a topic's `…/devicebound/` or `…/events/`.
    ///
    /// Empty segments (`a=1&&b=2`) are skipped. A `%` not followed by two hex digits, or an
    /// escape that decodes to invalid UTF-8, is an [`ErrorKind::InvalidPropertyBag`] error.
    pub fn decode(text: &str) -> Result<Self> {
        let text = text.strip_suffix('/').unwrap_or(text);
        let mut pairs = Vec::with_capacity(text.bytes().filter(|b| *b == b'&').count() + 1);
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = decode_pair(part)?;
            pairs.push((key.into_owned(), value.map(Cow::into_owned)));
        }
        Ok(PropertyBag { pairs })
    }

    /// The message of the property text after a topic's `…/devicebound/` (or a module input's
    /// `…/inputs/{name}/`), with `body`, in one pass: the message [`PropertyBag::decode`]
    /// followed by [`PropertyBag::into_message`] gives, without the bag in between (a device
    /// decodes every received message this way). It fails where they fail, reporting the
    /// first problem in the text.
    pub fn decode_message(text: &str, body: Bytes) -> Result<Message> {
        let text = text.strip_suffix('/').unwrap_or(text);
        let mut message = Message::new(body);
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = decode_pair(part)?;
            fill(&mut message, key, value)?;
        }
        Ok(message)
    }

    /// Appends the encoded bag (no leading or trailing separator) to `out`.
    pub fn encode_into(&self, out: &mut String) {
        for (i, (key, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            percent::encode_into(key, out);
            if let Some(value) = value {
                out.push('=');
                percent::encode_into(value, out);
            }
        }
    }

    /// The encoded bag.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// The bag of `message`'s properties: its system properties in `order`, `iothub-ack`,
    /// then its custom properties in their order.
    ///
    /// A custom property may not use a system property's name, nor `iothub-ack` with one of
    /// its four values; these are [`ErrorKind::InvalidMessage`] errors, since the receiver
    /// would read them back as something else.
    pub(crate) fn from_message(message: &Message, order: SystemOrder) -> Result<Self> {
        let mut bag = PropertyBag::new();
        let system = |bag: &mut PropertyBag, key: &str, value: Option<&str>| {
            if let Some(value) = value {
                bag.push(key, Some(value.to_owned()));
            }
        };
        let expiry = message.expiry().map(expiry_time::format).transpose()?;
        match order {
            SystemOrder::Telemetry => {
                system(&mut bag, MESSAGE_ID, message.message_id());
                system(&mut bag, CORRELATION_ID, message.correlation_id());
                system(&mut bag, USER_ID, message.user_id());
                system(&mut bag, CONTENT_TYPE, message.content_type());
                system(&mut bag, CONTENT_ENCODING, message.content_encoding());
                system(&mut bag, EXPIRY, expiry.as_deref());
                system(&mut bag, TO, message.to());
            }
            SystemOrder::CloudToDevice => {
                system(&mut bag, MESSAGE_ID, message.message_id());
                system(&mut bag, EXPIRY, expiry.as_deref());
                system(&mut bag, TO, message.to());
                system(&mut bag, CORRELATION_ID, message.correlation_id());
                system(&mut bag, USER_ID, message.user_id());
                system(&mut bag, CONTENT_TYPE, message.content_type());
                system(&mut bag, CONTENT_ENCODING, message.content_encoding());
            }
        }
        system(&mut bag, ACK, message.ack().map(Ack::as_str));
        for (key, value) in message.properties() {
            if key.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidMessage,
                    "a custom property has an empty name",
                ));
            }
            let reserved = SYSTEM_KEYS.contains(&key)
                || (key == ACK
                    && (message.ack().is_some() || value.and_then(Ack::from_wire).is_some()));
            if reserved {
                return Err(Error::new(
                    ErrorKind::InvalidMessage,
                    format!(
                        "custom property '{}' would be read as a system property; use the \
                         Message builder method for it",
                        key.escape_debug()
                    ),
                ));
            }
            bag.push(key, value.map(str::to_owned));
        }
        Ok(bag)
    }

    /// The message these properties describe, with `body`.
    ///
    /// System keys fill the message's fields (a repeated one: the last wins, as in the Python
    /// SDK); `iothub-ack` with a known value fills [`Message::ack`]; everything else, other
    /// `$.` keys included (such as `$.cdid`), stays a custom property in order. An unreadable
    /// `$.exp` is an [`ErrorKind::InvalidMessage`] error.
    pub fn into_message(self, body: Bytes) -> Result<Message> {
        let mut message = Message::new(body);
        for (key, value) in self.pairs {
            fill(&mut message, Cow::Owned(key), value.map(Cow::Owned))?;
        }
        Ok(message)
    }
}

/// Decodes one `key[=value]` segment. A system key's `$` written as `%24` (as IoT Hub writes
/// it) is matched without allocating.
fn decode_pair(part: &str) -> Result<(Cow<'_, str>, Option<Cow<'_, str>>)> {
    let (raw_key, raw_value) = match part.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (part, None),
    };
    let system = raw_key
        .strip_prefix("%24")
        .and_then(|tail| SYSTEM_KEYS.iter().find(|key| key[1..] == *tail));
    let key = match system {
        Some(key) => Cow::Borrowed(*key),
        None => {
            percent::decode(raw_key).map_err(|e| bag_error(format!("in a property name: {e}")))?
        }
    };
    let value = raw_value
        .map(|v| {
            percent::decode(v)
                .map_err(|e| bag_error(format!("in the value of '{}': {e}", key.escape_debug())))
        })
        .transpose()?;
    Ok((key, value))
}

/// Applies one decoded pair to `message`: a system key fills its field (a repeated one: the
/// last wins), `iothub-ack` with a known value fills [`Message::ack`], anything else is a
/// custom property; a system key without a value is ignored.
fn fill(message: &mut Message, key: Cow<'_, str>, value: Option<Cow<'_, str>>) -> Result<()> {
    let Some(text) = value else {
        if !SYSTEM_KEYS.contains(&key.as_ref()) {
            message.push_property(key.into_owned(), None);
        }
        return Ok(());
    };
    let field = match key.as_ref() {
        MESSAGE_ID => TextField::MessageId,
        CORRELATION_ID => TextField::CorrelationId,
        USER_ID => TextField::UserId,
        CONTENT_TYPE => TextField::ContentType,
        CONTENT_ENCODING => TextField::ContentEncoding,
        TO => TextField::To,
        EXPIRY => {
            message.set_expiry(expiry_time::parse(&text)?);
            return Ok(());
        }
        _ => {
            let ack = if key == ACK {
                Ack::from_wire(&text)
            } else {
                None
            };
            match ack {
                Some(ack) => message.set_ack(ack),
                None => message.push_property(key.into_owned(), Some(text.into_owned())),
            }
            return Ok(());
        }
    };
    message.set_text(field, text.into_owned());
    Ok(())
}

const SYSTEM_KEYS: &[&str] = &[
    MESSAGE_ID,
    CORRELATION_ID,
    USER_ID,
    CONTENT_TYPE,
    CONTENT_ENCODING,
    EXPIRY,
    TO,
];

impl FromIterator<(String, Option<String>)> for PropertyBag {
    fn from_iter<I: IntoIterator<Item = (String, Option<String>)>>(iter: I) -> Self {
        PropertyBag {
            pairs: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `%24` shortcut for system keys reads exactly what percent-decoding reads.
    #[test]
    fn system_key_shortcut_agrees_with_percent_decoding() {
        let mut keys: Vec<String> = Vec::new();
        for key in SYSTEM_KEYS {
            let tail = &key[1..];
            keys.push(format!("%24{tail}"));
            keys.push(format!("${tail}"));
            keys.push(format!("%24{tail}x"));
            keys.push(format!("%24{}", &tail[..tail.len() - 1]));
        }
        keys.extend(["%24", "%24.", "%24%2Emid", "%24.cdid", "iothub-ack"].map(String::from));
        for key in &keys {
            let pair = format!("{key}=v");
            let (decoded, value) = decode_pair(&pair).unwrap();
            assert_eq!(decoded, percent::decode(key).unwrap(), "{key}");
            assert_eq!(value.as_deref(), Some("v"));
        }
        assert!(matches!(
            decode_pair("%24.mid").unwrap().0,
            Cow::Borrowed("$.mid")
        ));
    }

    #[test]
    fn one_pass_decode_fills_the_message() {
        let text = "%24.mid=m1&%24.to=%2Fdevices%2Fd&iothub-ack=full&%24.ct&k=v%20w&bare&";
        let message = PropertyBag::decode_message(text, Bytes::from_static(b"b")).unwrap();
        assert_eq!(message.message_id(), Some("m1"));
        assert_eq!(message.to(), Some("/devices/d"));
        assert_eq!(message.ack(), Some(Ack::Full));
        assert_eq!(message.content_type(), None);
        assert_eq!(
            message.properties().collect::<Vec<_>>(),
            [("k", Some("v w")), ("bare", None)]
        );
        assert!(PropertyBag::decode_message("a=%zz", Bytes::new()).is_err());
    }
}
