//! Log targets that can carry secrets, and how to keep them out of a log.
//!
//! This crate never writes a token or key into a log, an error or a `Debug` output. One
//! dependency does: over WebSockets (the device's `Transport::WebSocket`, the service's
//! `amqp_over_websockets`, and the local hub's `/$iothub/websocket` endpoint) every frame goes
//! through `tungstenite`, which logs each frame whole at TRACE level ("writing frame",
//! "received frame", "Sending frame", payload as hex). The MQTT CONNECT (with its SAS token as
//! the password) and the AMQP CBS put-token travel in such frames, so a TRACE log of those
//! targets holds the token. `tungstenite` logs through the `log` facade, not `tracing`: the
//! lines reach a `tracing` subscriber only through a `log` bridge (`tracing-subscriber`'s
//! `init()` installs one with its default `tracing-log` feature; `env_logger` and the like see
//! them directly). Below TRACE those crates log no payload. `rumqttc` logs packet ids only, and
//! `fe2o3-amqp` is built without its logging features.
//!
//! Drop TRACE events of [`websocket_frame_target`] targets in whatever logger the application
//! installs; `iothub-local` does. With `tracing-subscriber`:
//!
//! ```ignore
//! use tracing_subscriber::prelude::*;
//! let hide_frames = tracing_subscriber::filter::filter_fn(|meta| {
//!     !(*meta.level() == tracing::Level::TRACE
//!         && iothub::log_targets::websocket_frame_target(meta.target()))
//! });
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(hide_frames))
//!     .init();
//! ```

/// The crates whose TRACE lines print WebSocket frames, payload included (a `log` target is
/// the logging module's path, so each covers its submodules).
pub const WEBSOCKET_FRAME_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "async_tungstenite",
    "ws_stream_tungstenite",
];

/// Whether a log line's `target` belongs to one of [`WEBSOCKET_FRAME_CRATES`]; their TRACE
/// lines can hold SAS tokens and must not reach a log.
///
/// ```
/// use iothub::log_targets::websocket_frame_target;
/// assert!(websocket_frame_target("tungstenite::protocol::frame"));
/// assert!(websocket_frame_target("tokio_tungstenite"));
/// assert!(!websocket_frame_target("tungstenite_extras"));
/// assert!(!websocket_frame_target("iothub::device"));
/// ```
pub fn websocket_frame_target(target: &str) -> bool {
    WEBSOCKET_FRAME_CRATES.iter().any(|name| {
        target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}
