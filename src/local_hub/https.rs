//! The HTTPS endpoint: the registry REST API and MQTT over WebSockets, on one TLS port.
//!
//! Connections are served concurrently with HTTP/1.1 keep-alive (msrest opens several at once
//! and Node reuses them; protocol.md §5.1). MQTT over WebSockets is at `/$iothub/websocket`
//! with subprotocol `mqtt` (MicrosoftDocs `iot-mqtt-connect-to-iot-hub.md`; py-device
//! `mqtt_transport.py`).

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

use crate::local_hub::mqtt;
use crate::local_hub::state::HubState;

/// The path of MQTT over WebSockets.
pub(crate) const MQTT_WEBSOCKET_PATH: &str = "/$iothub/websocket";

/// Routes served on the HTTPS port.
pub(crate) fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route(MQTT_WEBSOCKET_PATH, get(mqtt_over_websocket))
        .with_state(state.clone())
        .merge(crate::local_hub::registry::router(state))
}

async fn mqtt_over_websocket(
    State(state): State<Arc<HubState>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(["mqtt"])
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| bridge(state, socket))
}

/// Carries the MQTT byte stream between WebSocket binary frames and an MQTT session.
async fn bridge(state: Arc<HubState>, mut socket: WebSocket) {
    let (hub_side, mut ws_side) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(mqtt::run_session(state, hub_side, "websocket".to_owned()));
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
