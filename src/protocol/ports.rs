//! IoT Hub's well-known ports, used by the clients as defaults and by the local hub.
//!
//! Source: Microsoft Learn, "Communicate with your IoT hub using the MQTT protocol" and
//! "Reference - IoT Hub endpoints" (port table: MQTT 8883, AMQP 5671, HTTPS and WebSockets 443).

/// MQTT 3.1.1 over TLS.
pub const MQTT_TLS_PORT: u16 = 8883;
/// AMQP 1.0 over TLS.
pub const AMQP_TLS_PORT: u16 = 5671;
/// HTTPS, and MQTT or AMQP over WebSockets (`/$iothub/websocket`).
pub const HTTPS_PORT: u16 = 443;
