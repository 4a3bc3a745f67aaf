//! MQTT and AMQP carried over WebSockets on the HTTPS port.
//!
//! MQTT over WebSockets is at `/$iothub/websocket` with subprotocol `mqtt` (Microsoft Learn,
//! "Communicate with an IoT hub using the MQTT protocol"; `azure-iot-sdk-python`,
//! `azure/iot/device/common/mqtt_transport.py`, `_create_mqtt_client`). AMQP over WebSockets
//! uses subprotocol `AMQPWSB10` at the same path (`azure-iot-sdk-node`,
//! `service/src/amqp_ws.ts`, `_getConnectionUri`) and at `/$servicebus/websocket/` (uamqp,
//! `DEFAULT_WS_RELATIVE_PATH`): on the shared path the requested subprotocol decides.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rustls::pki_types::CertificateDer;

use crate::local_hub::state::HubState;
use crate::local_hub::tls::PeerCertificates;
use crate::local_hub::{amqp, mqtt};

/// The path of MQTT over WebSockets.
const MQTT_WEBSOCKET_PATH: &str = "/$iothub/websocket";
/// The path uamqp uses for AMQP over WebSockets.
const SERVICEBUS_WEBSOCKET_PATH: &str = "/$servicebus/websocket/";
/// The WebSocket subprotocol of AMQP.
const AMQP_SUBPROTOCOL: &str = "AMQPWSB10";
/// The largest WebSocket message accepted.
const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// The WebSocket routes.
pub(super) fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route(MQTT_WEBSOCKET_PATH, get(iothub_websocket))
        .route(SERVICEBUS_WEBSOCKET_PATH, get(amqp_over_websocket))
        .route(
            SERVICEBUS_WEBSOCKET_PATH.trim_end_matches('/'),
            get(amqp_over_websocket),
        )
        .with_state(state)
}

/// The protocol a WebSocket carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carried {
    Mqtt,
    Amqp,
}

/// `/$iothub/websocket`: AMQP when the client asked for `AMQPWSB10`, MQTT otherwise.
async fn iothub_websocket(
    State(state): State<Arc<HubState>>,
    certificates: Option<Extension<PeerCertificates>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The client certificate of the TLS connection, for X.509 devices.
    let certificates = certificates.map(|Extension(PeerCertificates(chain))| chain);
    upgrade
        .protocols(["mqtt", AMQP_SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| {
            let carried = match socket.protocol().map(|p| p.as_bytes()) {
                Some(p) if p.eq_ignore_ascii_case(AMQP_SUBPROTOCOL.as_bytes()) => Carried::Amqp,
                _ => Carried::Mqtt,
            };
            bridge(state, socket, carried, certificates)
        })
}

async fn amqp_over_websocket(
    State(state): State<Arc<HubState>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols([AMQP_SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| bridge(state, socket, Carried::Amqp, None))
}

/// Carries a byte stream between WebSocket binary frames and an MQTT session or an AMQP
/// connection.
async fn bridge(
    state: Arc<HubState>,
    mut socket: WebSocket,
    carried: Carried,
    certificates: Option<Vec<CertificateDer<'static>>>,
) {
    let (hub_side, mut ws_side) = tokio::io::duplex(64 * 1024);
    let session = match carried {
        Carried::Mqtt => tokio::spawn(mqtt::run_session_with_certificates(
            state,
            hub_side,
            "websocket".to_owned(),
            certificates,
        )),
        Carried::Amqp => tokio::spawn(amqp::run_connection(
            state,
            hub_side,
            "websocket".to_owned(),
        )),
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(WsMessage::Binary(data))) => {
                    if ws_side.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            read = ws_side.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if socket.send(WsMessage::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    drop(ws_side);
    let _ = socket.send(WsMessage::Close(None)).await;
    let _ = session.await;
}
