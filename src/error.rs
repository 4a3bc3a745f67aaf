//! The crate's one error type.
//!
//! Every fallible call in `iothub` returns [`Error`]. Match on [`Error::kind`] to react to a
//! class of failure; print the error for a one-line explanation. The text never contains a
//! shared access key or a signature, so errors are safe to log.

use std::fmt;

/// What went wrong, in a form a program can match on.
///
/// New kinds may be added in later versions, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A connection string is malformed, has an unknown or duplicate key, or lacks a required
    /// one.
    InvalidConnectionString,
    /// A shared access key is not valid base64.
    InvalidKey,
    /// A shared access signature token is malformed.
    InvalidToken,
    /// An MQTT topic is not one of IoT Hub's topics, or names another device.
    InvalidTopic,
    /// A property bag (the `key=value&…` part of a topic) is malformed.
    InvalidPropertyBag,
    /// A message property has a value IoT Hub cannot carry (for example an unparsable expiry).
    InvalidMessage,
    /// The hub refused the credentials, or a token has expired.
    Unauthorized,
    /// A client certificate or its private key is unusable: not PEM or DER, expired, not yet
    /// valid, or the key does not suit the certificate.
    InvalidCertificate,
    /// The device is not registered on the hub.
    DeviceNotFound,
    /// A device with this id is already registered.
    DeviceAlreadyExists,
    /// The module is not registered on the device.
    ModuleNotFound,
    /// A module with this id is already registered on the device.
    ModuleAlreadyExists,
    /// The etag given (`If-Match`) is not the current one: someone else changed the item.
    PreconditionFailed,
    /// The hub is throttling requests (HTTP 429).
    Throttled,
    /// The device's cloud-to-device queue already holds the maximum number of messages.
    QueueFull,
    /// The message is larger than IoT Hub allows.
    MessageTooLarge,
    /// The device (or module) is not connected, or has not subscribed to direct methods, so a
    /// method call cannot reach it (IoT Hub error 404103). Retry once it is online, or give the
    /// call a connect timeout.
    DeviceNotOnline,
    /// An operation did not complete in time.
    Timeout,
    /// The network connection failed.
    Transport,
    /// The client was closed.
    Closed,
    /// The operation is not available for this identity or configuration (for example
    /// cloud-to-device messages on a module identity, which IoT Hub does not have).
    NotSupported,
    /// A device or module id breaks IoT Hub's rules: 1 to 128 ASCII letters, digits or
    /// `- . + % _ # * ? ! ( ) , : = @ $ '` ([`crate::protocol::check_device_id`]). Choose
    /// another id; the error names the character IoT Hub would refuse.
    InvalidIdentityId,
    /// The retry policy's maximum number of connection attempts was reached and the client
    /// stopped. The detail carries the last attempt's cause (and
    /// [`std::error::Error::source`] its error when there is one): fix that cause, then
    /// build a new client, or give the policy more attempts.
    RetriesExhausted,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidConnectionString => "invalid connection string",
            ErrorKind::InvalidKey => "invalid shared access key",
            ErrorKind::InvalidToken => "invalid shared access signature",
            ErrorKind::InvalidTopic => "invalid topic",
            ErrorKind::InvalidPropertyBag => "invalid property bag",
            ErrorKind::InvalidMessage => "invalid message",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InvalidCertificate => "invalid certificate",
            ErrorKind::DeviceNotFound => "device not found",
            ErrorKind::DeviceAlreadyExists => "device already exists",
            ErrorKind::ModuleNotFound => "module not found",
            ErrorKind::ModuleAlreadyExists => "module already exists",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::Throttled => "throttled",
            ErrorKind::QueueFull => "device queue full",
            ErrorKind::MessageTooLarge => "message too large",
            ErrorKind::DeviceNotOnline => "device not online",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Transport => "transport error",
            ErrorKind::Closed => "closed",
            ErrorKind::NotSupported => "not supported",
            ErrorKind::InvalidIdentityId => "invalid device or module id",
            ErrorKind::RetriesExhausted => "retries exhausted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error type of every fallible operation in this crate.
///
/// ```
/// use iothub::{DeviceConnectionString, ErrorKind};
///
/// let err = "HostName=hub.example;DeviceId=dev;Colour=blue"
///     .parse::<DeviceConnectionString>()
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidConnectionString);
/// assert!(err.to_string().contains("Colour"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Error {
    kind: ErrorKind,
    detail: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of `kind` with a human-readable detail. The detail must not contain
    /// secrets. Crate-private: applications receive errors, they do not make them.
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause, reachable through [`std::error::Error::source`].
    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail text, without the kind prefix.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
