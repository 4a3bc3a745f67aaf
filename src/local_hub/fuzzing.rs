//! **Internal, not a public API**: entry points for the cargo-fuzz targets in `fuzz/`, behind
//! the `fuzzing` feature. Nothing here is stable; it is hidden from the documentation.
//!
//! Each entry point runs one input against a fresh in-process hub on a current-thread Tokio
//! runtime with paused time (every deadline fires as soon as all tasks wait), then drops the
//! runtime and with it every task the input started:
//! - [`mqtt_connection`]: bytes a client sends on the MQTT port, after the hub's TLS;
//! - [`amqp_connection`]: bytes on the service AMQP port or the Event Hubs-compatible
//!   endpoint (protocol header, SASL, frames, CBS, links), through the frame guard;
//! - [`https_request`]: one request to the HTTPS router (REST API and WebSocket routes).
//!
//! A panic in any hub task aborts the fuzzer (libfuzzer-sys installs an aborting panic hook).
//! The preludes ([`MqttPrelude`], [`AmqpPrelude`]) put a connection in an authorized state
//! first, so that inputs reach the code behind the authorization checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use crate::auth::{AccessPolicy, ResourceUri, SasKey};
use crate::local_hub::c2d_queue::C2dLimits;
use crate::local_hub::feedback_queue::FeedbackLimits;
use crate::local_hub::state::{DeviceSpec, DeviceStatus, HubSettings, HubState};
use crate::local_hub::telemetry_log::LogSettings;

/// The hub's host name.
pub const HOST_NAME: &str = "fuzz.azure-devices.net";
/// The device every fuzzed hub has.
pub const DEVICE_ID: &str = "dev1";
/// The expiry of the preludes' tokens: 2100-01-01.
const TOKEN_EXPIRY: u64 = 4_102_444_800;

fn device_key() -> SasKey {
    SasKey::from_bytes(b"fuzzing device key, 32 bytes.....")
}

fn owner_key() -> SasKey {
    SasKey::from_bytes(b"fuzzing iothubowner key, 32 bytes")
}

/// A SAS token for [`DEVICE_ID`], valid until 2100.
pub fn device_token() -> String {
    device_key()
        .token(
            &ResourceUri::device(HOST_NAME, DEVICE_ID),
            None,
            TOKEN_EXPIRY,
        )
        .to_string()
}

/// A SAS token of the `iothubowner` policy, valid until 2100.
pub fn owner_token() -> String {
    owner_key()
        .token(
            &ResourceUri::service(HOST_NAME),
            Some("iothubowner"),
            TOKEN_EXPIRY,
        )
        .to_string()
}

/// A hub with device [`DEVICE_ID`] and IoT Hub's default policies, with fixed keys.
fn hub_state() -> Arc<HubState> {
    let policies = ["iothubowner", "service", "device", "registryReadWrite"]
        .into_iter()
        .map(|name| AccessPolicy {
            name: name.to_owned(),
            primary_key: owner_key(),
            secondary_key: owner_key(),
            permissions: AccessPolicy::default_permissions(name).expect("a default policy"),
        })
        .collect();
    let state = Arc::new(HubState::new(
        HubSettings {
            host_name: HOST_NAME.to_owned(),
            c2d: C2dLimits::default(),
            feedback_flush_interval: Duration::from_secs(1),
            feedback: FeedbackLimits::default(),
            telemetry: LogSettings::default(),
        },
        policies,
    ));
    let _ = state.put_device(
        DeviceSpec {
            device_id: DEVICE_ID.to_owned(),
            status: DeviceStatus::Enabled,
            status_reason: None,
            primary_key: Some(device_key()),
            secondary_key: Some(device_key()),
            iot_edge: false,
            authentication: Default::default(),
        },
        None,
    );
    state
}

/// Runs `work` on a fresh current-thread runtime with paused time; every task it spawned is
/// dropped with the runtime.
fn run<F: Future>(work: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(work)
}

/// Writes each of `steps` as a client would, each once the hub has handled the one before,
/// and reads everything the hub answers until it closes.
async fn converse<H>(hub: H, client: DuplexStream, steps: &[&[u8]]) -> Vec<u8>
where
    H: Future<Output = ()>,
{
    let (mut from_hub, mut to_hub) = tokio::io::split(client);
    let write = async {
        for step in steps {
            let _ = to_hub.write_all(step).await;
            // Time is paused: this wakes once every hub task waits, i.e. when the hub has
            // handled the step (or at a deadline under a second).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let _ = to_hub.shutdown().await;
        // Keep the write half until the hub is done: dropping it is not a close.
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut answer = Vec::new();
        let _ = from_hub.read_to_end(&mut answer).await;
        answer
    };
    let hub_then_read = async {
        hub.await;
        read.await
    };
    tokio::select! {
        answer = hub_then_read => answer,
        _ = write => unreachable!("the writer never finishes"),
    }
}

/// Where an MQTT input starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttPrelude {
    /// The input is the whole connection, CONNECT included.
    None,
    /// A valid CONNECT for [`DEVICE_ID`] comes first (CONNACK 0).
    Connected,
}

/// The bytes of a valid CONNECT for [`DEVICE_ID`].
pub fn mqtt_connect() -> Vec<u8> {
    use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
    let mut connect = Connect::new(DEVICE_ID);
    connect.keep_alive = 60;
    connect.login = Some(Login::new(
        format!("{HOST_NAME}/{DEVICE_ID}/?api-version=2021-04-12"),
        device_token(),
    ));
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .expect("a CONNECT encodes");
    bytes.to_vec()
}

/// Runs one MQTT connection of a fresh hub on `prelude` and then `input`; returns what the
/// hub sent.
pub fn mqtt_connection(prelude: MqttPrelude, input: &[u8]) -> Vec<u8> {
    let connect = match prelude {
        MqttPrelude::None => Vec::new(),
        MqttPrelude::Connected => mqtt_connect(),
    };
    run(async {
        let state = hub_state();
        let (client, hub_side) = tokio::io::duplex(64 * 1024);
        let hub = crate::local_hub::mqtt::run_session_with_certificates(
            state,
            hub_side,
            "fuzz".to_owned(),
            None,
        );
        converse(hub, client, &[&connect, input]).await
    })
}

/// Which AMQP endpoint an input goes to, and where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmqpPrelude {
    /// The service endpoint; the input is the whole connection, protocol header included.
    Service,
    /// The service endpoint after header, OPEN, BEGIN, a `$cbs` put-token of `iothubowner`,
    /// and the C2D, feedback and `$cbs` links attached (handles 0 to 3, channel 0).
    ServiceAuthorized,
    /// The Event Hubs-compatible endpoint; the input is the whole connection.
    EventHubs,
    /// The Event Hubs-compatible endpoint after header, OPEN and BEGIN (channel 0).
    EventHubsOpened,
}

/// Which endpoint a connection is fed to.
#[derive(Clone, Copy)]
enum AmqpEndpoint {
    Service,
    EventHubs,
}

async fn amqp_hub(endpoint: AmqpEndpoint, state: Arc<HubState>, stream: DuplexStream) {
    match endpoint {
        AmqpEndpoint::Service => {
            crate::local_hub::amqp::run_connection(state, stream, "fuzz".to_owned()).await
        }
        AmqpEndpoint::EventHubs => {
            let log = state.telemetry_log().clone();
            let endpoint = crate::local_hub::event_hubs::Endpoint::new(state, log, "fuzz".into());
            crate::local_hub::event_hubs::run_connection(
                endpoint,
                stream,
                "fuzz".to_owned(),
                Arc::new(crate::local_hub::limits::ConnectionLimits::default()),
            )
            .await
        }
    }
}

/// Runs one AMQP connection of a fresh hub on `prelude` and then `input`; returns what the
/// hub sent.
pub fn amqp_connection(prelude: AmqpPrelude, input: &[u8]) -> Vec<u8> {
    let endpoint = match prelude {
        AmqpPrelude::Service | AmqpPrelude::ServiceAuthorized => AmqpEndpoint::Service,
        AmqpPrelude::EventHubs | AmqpPrelude::EventHubsOpened => AmqpEndpoint::EventHubs,
    };
    let mut steps: Vec<&[u8]> = amqp_prelude(prelude).iter().map(Vec::as_slice).collect();
    steps.push(input);
    run(async {
        let (client, hub_side) = tokio::io::duplex(64 * 1024);
        converse(amqp_hub(endpoint, hub_state(), hub_side), client, &steps).await
    })
}

/// The client bytes of a prelude, in the steps the client waited between (each is written
/// once the hub has handled the one before), recorded once from fe2o3-amqp's client against
/// the hub.
pub fn amqp_prelude(prelude: AmqpPrelude) -> &'static [Vec<u8>] {
    static SERVICE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static EVENT_HUBS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    match prelude {
        AmqpPrelude::Service | AmqpPrelude::EventHubs => &[],
        AmqpPrelude::ServiceAuthorized => SERVICE.get_or_init(|| record(AmqpEndpoint::Service)),
        AmqpPrelude::EventHubsOpened => EVENT_HUBS.get_or_init(|| record(AmqpEndpoint::EventHubs)),
    }
}

/// Runs fe2o3's client against the hub (header, OPEN, BEGIN, and on the service endpoint the
/// put-token and links of [`AmqpPrelude::ServiceAuthorized`]) and returns the bytes it wrote,
/// in steps: those before each wait for the hub's answer (a link's frames must not overtake
/// the hub's acceptance of its ATTACH).
fn record(endpoint: AmqpEndpoint) -> Vec<Vec<u8>> {
    use fe2o3_amqp::{Connection, Receiver, Sender, Session};
    use fe2o3_amqp_cbs::client::CbsClient;
    use fe2o3_amqp_cbs::token::CbsToken;

    run(async {
        let (client, hub_side) = tokio::io::duplex(256 * 1024);
        let written = Arc::new(Mutex::new(Vec::new()));
        let tap = Recording {
            inner: client,
            written: written.clone(),
        };
        let hub = tokio::spawn(amqp_hub(endpoint, hub_state(), hub_side));
        let mut steps = Vec::new();
        let script = async {
            let mut connection = Connection::builder()
                .container_id("fuzz")
                .hostname(HOST_NAME)
                .scheme("amqp")
                .max_frame_size(65_536)
                .open_with_stream(tap)
                .await
                .ok()?;
            step(&written, &mut steps);
            let mut session = Session::begin(&mut connection).await.ok()?;
            step(&written, &mut steps);
            if let AmqpEndpoint::Service = endpoint {
                let mut cbs = CbsClient::attach(&mut session).await.ok()?;
                step(&written, &mut steps);
                let token = CbsToken::new(owner_token(), "servicebus.windows.net:sastoken", None);
                // The hub answers 200, which fe2o3-amqp-cbs reports as an error.
                let _ = cbs.put_token(HOST_NAME, token).await;
                step(&written, &mut steps);
                let c2d = Sender::attach(&mut session, "c2d", "/messages/devicebound")
                    .await
                    .ok()?;
                step(&written, &mut steps);
                let feedback =
                    Receiver::attach(&mut session, "feedback", "/messages/serviceBound/feedback")
                        .await
                        .ok()?;
                // Dropped unclosed: what they would send next is not recorded.
                drop((cbs, c2d, feedback));
            }
            drop((connection, session));
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), script).await;
        step(&written, &mut steps);
        hub.abort();
        steps
    })
}

/// Moves the bytes written since the last step into a step of their own.
fn step(written: &Mutex<Vec<u8>>, steps: &mut Vec<Vec<u8>>) {
    let bytes = std::mem::take(&mut *written.lock().unwrap_or_else(|e| e.into_inner()));
    steps.push(bytes);
}

/// A client stream that keeps a copy of everything written to it.
struct Recording {
    inner: DuplexStream,
    written: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recording")
    }
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..n]);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One HTTPS request: a method, a path and query, headers and a body.
#[derive(Clone, Debug, Default)]
pub struct HttpsInput {
    /// The request method (one that is not a valid HTTP token is not sent: [`https_request`]
    /// returns `None`).
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// Header names and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Sends `input` to the HTTPS router of a fresh hub; returns the status code, or `None` when
/// the input is not a valid HTTP request (a method, URI or header that cannot be sent).
pub fn https_request(input: &HttpsInput) -> Option<u16> {
    let mut request = axum::http::Request::builder()
        .method(axum::http::Method::from_bytes(input.method.as_bytes()).ok()?)
        .uri(axum::http::Uri::try_from(input.uri.as_str()).ok()?);
    for (name, value) in &input.headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = axum::http::HeaderValue::from_bytes(value).ok()?;
        request = request.header(name, value);
    }
    let request = request
        .body(axum::body::Body::from(input.body.clone()))
        .ok()?;
    run(async {
        use tower_service::Service;
        let mut router = crate::local_hub::https::router(hub_state());
        let response = match router.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        // Read the body too: errors are written as it streams.
        let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        Some(status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preludes_authorize_and_the_hub_answers() {
        let answer = mqtt_connection(MqttPrelude::Connected, &[]);
        assert_eq!(&answer[..4], &[0x20, 0x02, 0x00, 0x00], "CONNACK 0");
        let prelude = amqp_prelude(AmqpPrelude::ServiceAuthorized);
        assert!(prelude[0].starts_with(b"AMQP\x00\x01\x00\x00"));
        let answer = amqp_connection(AmqpPrelude::ServiceAuthorized, &[]);
        let needle = b"status-code";
        assert!(answer.windows(needle.len()).any(|w| w == needle));
        let opened = amqp_connection(AmqpPrelude::EventHubsOpened, &[]);
        assert!(opened.starts_with(b"AMQP\x00\x01\x00\x00"));
        let status = https_request(&HttpsInput {
            method: "GET".into(),
            uri: format!("/devices/{DEVICE_ID}?api-version=2021-04-12"),
            headers: vec![("authorization".into(), owner_token().into_bytes())],
            body: Vec::new(),
        });
        assert_eq!(status, Some(200));
    }
}
