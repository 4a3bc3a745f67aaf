//! The IoT Hub message, the same type for both directions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::Result;

/// Completes one delivery of a received message (the device client's PUBACK).
pub(crate) trait Completer: Send + Sync {
    /// Sends the completion; called at most once per delivery.
    fn complete(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
}

/// The delivery a received message came with, if it is to be completed by the application.
/// It is not part of the message's value: two messages compare equal whatever their deliveries.
#[derive(Clone)]
pub(crate) struct Completion(pub(crate) Arc<dyn Completer>);

impl PartialEq for Completion {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Completion {}

/// The delivery feedback a back end asks for on a cloud-to-device message: the `iothub-ack`
/// application property (MicrosoftDocs `iot-hub-devguide-messages-c2d.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ack {
    /// No feedback (`none`), the hub's default.
    None,
    /// Feedback when the device completes the message (`positive`).
    Positive,
    /// Feedback when the message expires, exhausts its delivery count or is rejected
    /// (`negative`).
    Negative,
    /// Both positive and negative feedback (`full`).
    Full,
}

impl Ack {
    /// The wire value of `iothub-ack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ack::None => "none",
            Ack::Positive => "positive",
            Ack::Negative => "negative",
            Ack::Full => "full",
        }
    }

    /// Reads a wire value of `iothub-ack`; `None` for anything else.
    pub fn from_wire(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Ack::None),
            "positive" => Some(Ack::Positive),
            "negative" => Some(Ack::Negative),
            "full" => Some(Ack::Full),
            _ => None,
        }
    }
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The system properties of a [`Message`] that hold text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextField {
    MessageId,
    CorrelationId,
    UserId,
    ContentType,
    ContentEncoding,
    To,
}

/// A message to or from IoT Hub: a body, the system properties IoT Hub knows, and custom
/// (application) properties.
///
/// Custom properties keep their order, may repeat, and may have no value: the hub sends a
/// property whose value is null as a bare key (MicrosoftDocs `iot-mqtt-connect-to-iot-hub.md`).
/// `Debug` shows the body's length, never its content.
///
/// ```
/// use iothub::{Ack, Message};
///
/// let msg = Message::new(r#"{"service client sent a message": 12.5}"#)
///     .with_message_id("message_0")
///     .with_correlation_id("correlation_0")
///     .with_content_type("application/json")
///     .with_ack(Ack::Full)
///     .with_property("testProperty", "PropMsg_0");
/// assert_eq!(msg.message_id(), Some("message_0"));
/// assert_eq!(msg.property("testProperty"), Some("PropMsg_0"));
/// assert_eq!(format!("{msg:?}").contains("12.5"), false);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    body: Bytes,
    message_id: Option<String>,
    correlation_id: Option<String>,
    user_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    expiry: Option<SystemTime>,
    to: Option<String>,
    ack: Option<Ack>,
    properties: Vec<(String, Option<String>)>,
    completion: Option<Completion>,
}

impl Message {
    /// A message with `body` and no properties.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// Sets the message id (`$.mid`; AMQP `message-id`).
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the correlation id (`$.cid`; AMQP `correlation-id`).
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the user id (`$.uid`; AMQP `user-id`).
    pub fn with_user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the content type, e.g. `application/json` (`$.ct`).
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the content encoding, e.g. `utf-8` (`$.ce`).
    pub fn with_content_encoding(mut self, encoding: impl Into<String>) -> Self {
        self.content_encoding = Some(encoding.into());
        self
    }

    /// Sets the absolute expiry time (`$.exp`; AMQP `absolute-expiry-time`).
    pub fn with_expiry(mut self, expiry: SystemTime) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// Sets the destination (`$.to`), e.g. `/devices/dev1/messages/devicebound`.
    pub fn with_to(mut self, to: impl Into<String>) -> Self {
        self.to = Some(to.into());
        self
    }

    /// Asks for delivery feedback (`iothub-ack`).
    pub fn with_ack(mut self, ack: Ack) -> Self {
        self.ack = Some(ack);
        self
    }

    /// Appends a custom property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), Some(value.into())));
        self
    }

    /// Appends a custom property that has a name but no value (a bare key on the wire).
    pub fn with_bare_property(mut self, name: impl Into<String>) -> Self {
        self.properties.push((name.into(), None));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The message id.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The user id.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The content type.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The content encoding.
    pub fn content_encoding(&self) -> Option<&str> {
        self.content_encoding.as_deref()
    }

    /// The absolute expiry time.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expiry
    }

    /// The destination.
    pub fn to(&self) -> Option<&str> {
        self.to.as_deref()
    }

    /// The requested delivery feedback.
    pub fn ack(&self) -> Option<Ack> {
        self.ack
    }

    /// The value of the first custom property called `name`; `None` when there is none or
    /// it has no value.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Completes a received cloud-to-device message: the device client sends its MQTT PUBACK,
    /// and the hub records it as delivered (and sends positive feedback if asked).
    ///
    /// Only messages received by a `DeviceClient` in `AckMode::Manual` need this; for any other
    /// message, and for a message completed already, it does nothing. If the connection that
    /// delivered the message has been lost, the hub delivers it again on the next connection
    /// and this returns an [`crate::ErrorKind::Transport`] error. A planned reconnect (SAS
    /// token renewal) first waits up to 5 s for pending completions (see
    /// [`crate::device::AckMode::Manual`]).
    pub async fn complete(&self) -> Result<()> {
        match &self.completion {
            Some(completion) => completion.0.complete().await,
            None => Ok(()),
        }
    }

    /// Sets a text system property in place (the property-bag decoder fills a message this
    /// way, without moving it once per property).
    pub(crate) fn set_text(&mut self, field: TextField, value: String) {
        let slot = match field {
            TextField::MessageId => &mut self.message_id,
            TextField::CorrelationId => &mut self.correlation_id,
            TextField::UserId => &mut self.user_id,
            TextField::ContentType => &mut self.content_type,
            TextField::ContentEncoding => &mut self.content_encoding,
            TextField::To => &mut self.to,
        };
        *slot = Some(value);
    }

    /// Sets the expiry in place.
    pub(crate) fn set_expiry(&mut self, at: SystemTime) {
        self.expiry = Some(at);
    }

    /// Sets the requested feedback in place.
    pub(crate) fn set_ack(&mut self, ack: Ack) {
        self.ack = Some(ack);
    }

    /// Appends a custom property (`None`: a bare key) in place.
    pub(crate) fn push_property(&mut self, name: String, value: Option<String>) {
        self.properties.push((name, value));
    }

    /// Attaches the delivery handle of a received message.
    #[cfg_attr(not(feature = "device"), allow(dead_code))]
    pub(crate) fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = Some(completion);
        self
    }

    /// The custom properties in order, each with its value if it has one.
    pub fn properties(&self) -> impl ExactSizeIterator<Item = (&str, Option<&str>)> {
        self.properties
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Message");
        s.field("body_len", &self.body.len());
        let optional = [
            ("message_id", &self.message_id),
            ("correlation_id", &self.correlation_id),
            ("user_id", &self.user_id),
            ("content_type", &self.content_type),
            ("content_encoding", &self.content_encoding),
            ("to", &self.to),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                s.field(name, value);
            }
        }
        if let Some(expiry) = &self.expiry {
            s.field("expiry", expiry);
        }
        if let Some(ack) = &self.ack {
            s.field("ack", ack);
        }
        if !self.properties.is_empty() {
            s.field("properties", &self.properties);
        }
        s.finish()
    }
}
