//! The HTTPS endpoint: the registry REST API, MQTT over WebSockets and AMQP over WebSockets,
//! on one TLS port.
//!
//! Connections are served concurrently with HTTP/1.1 keep-alive (msrest opens several at once
//! and Node reuses them; protocol.md §5.1). MQTT over WebSockets is at `/$iothub/websocket`
//! with subprotocol `mqtt` (MicrosoftDocs `iot-mqtt-connect-to-iot-hub.md`; py-device
//! `mqtt_transport.py`). AMQP over WebSockets uses subprotocol `AMQPWSB10` at the same path
//! (node-hub `src/amqp_ws.ts`) and at `/$servicebus/websocket/` (uamqp
//! `DEFAULT_WS_RELATIVE_PATH`; protocol.md §4.1): on the shared path the requested
//! subprotocol decides.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::local_hub::state::HubState;
use crate::local_hub::{amqp, mqtt};

/// The path of MQTT over WebSockets.
pub(crate) const MQTT_WEBSOCKET_PATH: &str = "/$iothub/websocket";
/// The path uamqp uses for AMQP over WebSockets.
pub(crate) const SERVICEBUS_WEBSOCKET_PATH: &str = "/$servicebus/websocket/";
/// The WebSocket subprotocol of AMQP.
const AMQP_SUBPROTOCOL: &str = "AMQPWSB10";

/// Routes served on the HTTPS port.
pub(crate) fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route(MQTT_WEBSOCKET_PATH, get(iothub_websocket))
        .route(SERVICEBUS_WEBSOCKET_PATH, get(amqp_over_websocket))
        .route(
            SERVICEBUS_WEBSOCKET_PATH.trim_end_matches('/'),
            get(amqp_over_websocket),
        )
        .with_state(state.clone())
        .merge(crate::local_hub::registry::router(state))
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
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(["mqtt", AMQP_SUBPROTOCOL])
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| {
            let carried = match socket.protocol().map(|p| p.as_bytes()) {
                Some(p) if p.eq_ignore_ascii_case(AMQP_SUBPROTOCOL.as_bytes()) => Carried::Amqp,
                _ => Carried::Mqtt,
            };
            bridge(state, socket, carried)
        })
}

async fn amqp_over_websocket(
    State(state): State<Arc<HubState>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols([AMQP_SUBPROTOCOL])
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| bridge(state, socket, Carried::Amqp))
}

/// Carries a byte stream between WebSocket binary frames and an MQTT session or an AMQP
/// connection.
async fn bridge(state: Arc<HubState>, mut socket: WebSocket, carried: Carried) {
    let (hub_side, mut ws_side) = tokio::io::duplex(64 * 1024);
    let session = match carried {
        Carried::Mqtt => tokio::spawn(mqtt::run_session(state, hub_side, "websocket".to_owned())),
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

/// Serves HTTPS connections until `shutdown` changes.
pub(crate) async fn serve(
    router: Router,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTPS TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                    }
                }
                _ = shutdown.changed() => {}
            }
        });
    }
}
