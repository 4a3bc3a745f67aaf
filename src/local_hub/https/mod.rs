//! The HTTPS endpoint: the registry REST API, MQTT over WebSockets and AMQP over WebSockets,
//! on one TLS port.
//!
//! Connections are served concurrently with HTTP/1.1 keep-alive: msrest (azure-iot-hub for
//! Python) opens several connections at once, and Node's `Registry` reuses them through an
//! `https.Agent({ keepAlive: true })` (`azure-iot-sdk-node`, `service/src/registry.ts`,
//! constructor). The REST routes:
//! - [`devices`]: device create, read, update, delete and list, the C2D queue purge and device
//!   statistics;
//! - [`bulk_devices`]: the bulk registry operation (`POST /devices`);
//! - [`modules`]: module identity create, read, update, delete and list;
//! - [`twins`]: device and module twins (read, merge, replace);
//! - [`methods`]: direct-method calls;
//! - [`errors`]: IoT Hub's error codes and body forms, for every refusal;
//! - [`websocket`]: MQTT and AMQP carried over WebSockets.
//!
//! Every JSON body is sent with `Content-Type: application/json; charset=utf-8`: Node
//! azure-iothub parses a body only if the type contains `application/json`
//! (`azure-iot-sdk-node`, `service/src/rest_api_client.ts`, `executeApiCall`). Requests are
//! authenticated with policy SAS tokens (`Authorization: SharedAccessSignature sr={host}&…`);
//! any `api-version` query parameter is accepted and ignored (Node and Python send
//! `2021-04-12`, the C SDK `2020-09-30`).
//!
//! A trailing slash names the same resource (`/devices/` is `/devices`), as on IoT Hub:
//! azure-iothub for Node lists devices with `GET /devices/?api-version=…`
//! (`service/src/registry.ts`, `list`: `endpoint.devicePath('')`).

mod bulk_devices;
mod devices;
mod errors;
mod methods;
mod modules;
mod twins;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::local_hub::limits::{ConnectionGate, ConnectionLimits};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Permission, SasToken};
use crate::local_hub::state::HubState;
use crate::protocol::expiry_time;
use errors::{ApiError, ErrorCode};

/// The content type of every JSON body, request or response.
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// How IoT Hub writes a time that never happened (`0001-01-01T00:00:00`, .NET's
/// `DateTime.MinValue`, in every new device's JSON).
const NEVER: &str = "0001-01-01T00:00:00";

/// Routes served on the HTTPS port: the WebSocket paths and the REST API, with trailing
/// slashes removed before routing (a middleware added with `Router::layer` runs after
/// routing, so the rewrite wraps the whole router instead).
pub(crate) fn router(state: Arc<HubState>) -> Router {
    let routes = websocket::router(state.clone()).merge(rest_router(state));
    Router::new().fallback(move |request: Request| {
        let mut routes = routes.clone();
        async move {
            match tower_service::Service::call(&mut routes, without_trailing_slash(request)).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

/// `request` with its path's trailing slashes removed (`/devices/` → `/devices`); the root
/// `/` and the query are kept.
fn without_trailing_slash(mut request: Request) -> Request {
    let uri = request.uri();
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.is_empty() {
        return request;
    }
    let path_and_query = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = path_and_query.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// The REST API, authenticated with policy SAS tokens checked against `state`. Unknown paths
/// answer 404, and known paths with another method 405, both with a legacy error body.
fn rest_router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/devices", get(devices::list).post(bulk_devices::post))
        .route(
            "/devices/{id}",
            get(devices::get).put(devices::put).delete(devices::delete),
        )
        .route("/devices/{id}/commands", delete(devices::purge))
        .route("/devices/{id}/modules", get(modules::list))
        .route(
            "/devices/{id}/modules/{mid}",
            get(modules::get).put(modules::put).delete(modules::delete),
        )
        .route("/statistics/devices", get(devices::statistics))
        .route(
            "/twins/{id}",
            get(twins::get).patch(twins::patch).put(twins::put),
        )
        .route(
            "/twins/{id}/modules/{mid}",
            get(twins::get_module)
                .patch(twins::patch_module)
                .put(twins::put_module),
        )
        .route("/twins/{id}/methods", post(methods::invoke))
        .route(
            "/twins/{id}/modules/{mid}/methods",
            post(methods::invoke_module),
        )
        .method_not_allowed_fallback(errors::method_not_allowed)
        .fallback(errors::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .with_state(state)
}

/// Writes the body of every error answer with the hub's time, and logs each request's method,
/// path and outcome at debug level. The query string and the headers (which hold the SAS
/// token) are left out.
async fn finish(State(state): State<Arc<HubState>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    // A registry change is in the state directory (if any) before the hub answers for it.
    if method != axum::http::Method::GET && response.status().is_success() {
        if let Err(e) = state.persisted().await {
            tracing::warn!(error = %e, "the state directory did not take a registry change");
            response = ApiError::new(
                ErrorCode::ServerError,
                "the hub could not write the change to its state directory",
            )
            .into_response();
        }
    }
    let response = errors::write_body(response, state.clock.now());
    let error_code = response
        .headers()
        .get(errors::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        error_code,
        "registry request"
    );
    response
}

/// Checks the `Authorization` header: a policy SAS token whose policy has `needed`. Neither
/// the log nor the error text ever contains the token.
fn authorize(state: &HubState, headers: &HeaderMap, needed: Permission) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "the request has no Authorization header",
        ));
    };
    let token: SasToken = value
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not a SharedAccessSignature token")
        })?;
    state.authorize_service(&token, needed).map_err(|denied| {
        tracing::debug!(reason = %denied, "registry request refused");
        ApiError::unauthorized(denied.to_string())
    })
}

/// The `{id}` path segment, percent-decoded.
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|_| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            "the device id in the path is not valid percent-encoded UTF-8",
        )
    })
}

/// ISO 8601 UTC, IoT Hub's seven fractional digits.
fn time_text(at: SystemTime) -> String {
    expiry_time::format(at).unwrap_or_else(|_| NEVER.to_owned())
}

/// A JSON response with the content type Node needs.
fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))],
            body,
        )
            .into_response(),
        Err(_) => ApiError::new(ErrorCode::ServerError, "the response could not be encoded")
            .into_response(),
    }
}

/// Serves HTTPS connections until `shutdown` changes, within `limits`: the listener's
/// connection bounds, the TLS handshake deadline, and hyper's header read timeout, which
/// hyper starts before each request (the first, and every keep-alive one), so that it is also
/// the keep-alive idle timeout.
pub(crate) async fn serve(
    router: Router,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let gate = ConnectionGate::new(&limits);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admission) = gate.admit(peer.ip()) else {
            tracing::debug!(%peer, "HTTPS connection bound reached: closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _admission = admission;
            let tls = match timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTPS TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // The client certificate (X.509 devices over MQTT over WebSockets) goes with every
            // request of the connection.
            let certificates = crate::local_hub::tls::peer_certificates(&tls)
                .map(crate::local_hub::tls::PeerCertificates);
            let service = hyper::service::service_fn(move |mut request| {
                if let Some(certificates) = &certificates {
                    request.extensions_mut().insert(certificates.clone());
                }
                tower_service::Service::call(&mut router.clone(), request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.https_idle_timeout)
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
