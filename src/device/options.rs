//! Options of a [`crate::device::DeviceClient`].

use crate::protocol::ports::{HTTPS_PORT, MQTT_TLS_PORT};

/// When a received cloud-to-device message is acknowledged (completed) to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// The PUBACK goes out when the message is handed to the application
    /// ([`crate::device::DeviceClient::receive_message`] returns it).
    #[default]
    Auto,
    /// The PUBACK goes out when the application calls [`crate::Message::complete`]. A message
    /// not completed before the connection drops is delivered again by the hub. The planned
    /// reconnect that renews the SAS token waits up to 5 s (never past the token's expiry) for
    /// the application to complete the messages the current connection delivered, so
    /// completions made within that time succeed and those messages do not come again.
    Manual,
}

/// How the client reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// MQTT over TLS, port 8883.
    #[default]
    Mqtt,
    /// MQTT over WebSockets over TLS, port 443, path `/$iothub/websocket`, for networks that
    /// block 8883.
    WebSocket,
}

impl Transport {
    /// IoT Hub's port for this transport (Microsoft Learn "Communicate with an IoT hub using
    /// the MQTT protocol": 8883 for MQTT, 443 for MQTT over WebSockets).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Mqtt => MQTT_TLS_PORT,
            Transport::WebSocket => HTTPS_PORT,
        }
    }
}
