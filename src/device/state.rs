//! The connection state a [`crate::device::DeviceClient`] reports.

use std::time::SystemTime;

use crate::error::{Error, ErrorKind};

/// Where the client's connection stands. Watch it with
/// [`crate::device::DeviceClient::connection_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// The first connection is being made.
    Connecting,
    /// Connected, with every subscription in place (for a device, its cloud-to-device
    /// messages).
    Connected,
    /// Connected, but the fixed `SharedAccessSignature` of the connection string expires at
    /// this time and cannot be renewed: after it the hub closes the connection.
    TokenExpiring {
        /// When the token expires.
        at: SystemTime,
    },
    /// The connection was lost; the client will reconnect.
    Disconnected {
        /// Why, in words (never a credential).
        reason: String,
    },
    /// Waiting to make reconnection attempt `attempt` (1 for the first).
    Reconnecting {
        /// The attempt number.
        attempt: u32,
    },
    /// The client has stopped for good.
    Closed(CloseReason),
}

/// Why a client stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application called `close()` or dropped every handle.
    ClosedByApplication,
    /// The hub refused the credentials (CONNACK 4 or 5), or the fixed token expired.
    Unauthorized,
    /// The retry policy's maximum number of attempts was reached (or the first connection
    /// failed). Calls on the client then fail with
    /// [`ErrorKind::RetriesExhausted`](crate::ErrorKind::RetriesExhausted) carrying
    /// `last_error`.
    RetriesExhausted {
        /// The connection attempts made.
        attempts: u32,
        /// Why the last attempt failed, in words (with the hub's host and port, never a
        /// credential).
        last_error: String,
    },
}

impl ConnectionState {
    /// Why calls on a client stopped in this state fail: [`ErrorKind::RetriesExhausted`] with
    /// the last cause when the retry policy gave up, [`ErrorKind::Closed`] otherwise.
    pub(crate) fn stopped_error(&self) -> Error {
        match self {
            ConnectionState::Closed(CloseReason::RetriesExhausted {
                attempts,
                last_error,
            }) => Error::new(
                ErrorKind::RetriesExhausted,
                format!(
                    "the client stopped after {attempts} connection attempt(s); the last one \
                     failed: {last_error}. Fix the cause and connect a new client, or give the \
                     retry policy more attempts"
                ),
            ),
            _ => closed_error(),
        }
    }
}

/// The error of a call on a client that was closed, or whose task has gone.
pub(crate) fn closed_error() -> Error {
    Error::new(ErrorKind::Closed, "the device client is closed")
}
