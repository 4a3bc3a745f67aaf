//! The service's AMQP connection: cloud-to-device sends and the feedback receiver.
//!
//! One task owns each AMQP connection (TLS first, then a bare AMQP header with no SASL layer,
//! as Node's azure-iothub does: azure-iot-hub-node `src/amqp.ts`, `_getConnectionUri`, and rhea
//! `lib/connection.js`, which adds SASL only when asked), authorizes it with a CBS put-token
//! whose audience is the hub's host name (azure-iot-hub-node `src/amqp.ts`, class `Amqp`, which
//! puts the token with the audience taken from its `sr`),
//! renews the token on the open connection before it expires, and is re-opened with backoff
//! (the manager's [`RetryPolicy`]) after a failure. Sends go out on one sender link to
//! `/messages/devicebound` and are pipelined: each caller waits for its own disposition.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Sender, Session};
use fe2o3_amqp_cbs::client::CbsClient;
use fe2o3_amqp_cbs::token::CbsToken;
use fe2o3_amqp_management::error::Error as MgmtError;
use fe2o3_amqp_types::messaging::{Data, Message as AmqpMessage, Outcome};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::amqp_batched_writes::BatchedWrites;
use crate::auth::TokenSource;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::amqp_error;
use crate::protocol::amqp_message::C2D_LINK_TARGET;
use crate::retry::RetryPolicy;

mod feedback_link;
pub(crate) use feedback_link::{ReceivedBatch, Settle, spawn_feedback};

/// The CBS token type (azure-iot-hub-node `src/common-amqp/amqp_cbs.ts`,
/// `ClaimsBasedSecurityAgent.putToken`).
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// How long opening a connection may take, from TCP connect through TLS, the AMQP OPEN, the
/// session, the CBS link and put-token (the feedback receiver's deadline; a C2D send has its
/// request timeout, whichever is shorter).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a token renewal (CBS put-token) on an open connection may take.
const RENEW_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a session and connection may wait for the peer's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The idle timeout the client advertises in its OPEN and enforces: the hub must send a frame
/// (fe2o3 and IoT Hub send empty frames at half of it, OASIS AMQP 1.0 part 2.4.5) or the
/// connection is dropped and reopened.
const IDLE_TIMEOUT_MS: u32 = 120_000;

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct AmqpConfig {
    /// The host to dial and to check the certificate against.
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
    pub tokens: TokenSource,
    /// The put-token audience: the hub's `HostName`, the `sr` of a policy token
    /// (azure-iot-hub-node `src/amqp.ts`, class `Amqp`).
    pub audience: String,
    /// Carry AMQP in WebSocket binary frames at `wss://host:port/$iothub/websocket`.
    pub websockets: bool,
    /// Backoff between connection attempts, and how many failures in a row end them.
    pub retry: RetryPolicy,
}

/// Runs AMQP over WebSockets: subprotocol `AMQPWSB10` at `/$iothub/websocket` (azure-iot-hub-node
/// `src/amqp_ws.ts`, `AmqpWs._getConnectionUri`, and `src/common-amqp/amqp.ts`, which opens the
/// socket with that subprotocol). The WebSocket is bridged to an in-memory pipe that the AMQP
/// connection reads and writes like a socket. The upgrade runs within the caller's
/// [`OPEN_TIMEOUT`], as TLS and the AMQP OPEN do; the bridge ends with the AMQP connection.
async fn websocket_pipe<S>(config: &AmqpConfig, tls: S) -> Result<tokio::io::DuplexStream>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let url = format!("wss://{}:{}/$iothub/websocket", config.host, config.port);
    let mut request = url
        .into_client_request()
        .map_err(|e| transport("the WebSocket URL is not valid").with_source(e))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("AMQPWSB10"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| transport("the WebSocket upgrade failed").with_source(e))?;
    let (amqp_side, mut bridge_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Frame::Binary(data))) => {
                        if bridge_side.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                read = bridge_side.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws.send(Frame::Binary(buf[..n].to_vec().into())).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        // A silent peer must not keep this task: the close waits for it at most so long.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    });
    Ok(amqp_side)
}

fn transport(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Transport, detail)
}

/// An authorized connection and session.
struct Link {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    cbs: CbsClient,
    renew_at: Instant,
}

impl Link {
    /// Opens and authorizes a connection within [`OPEN_TIMEOUT`].
    async fn open(config: &AmqpConfig) -> Result<Self> {
        tokio::time::timeout(OPEN_TIMEOUT, Self::open_unbounded(config))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the hub at {}:{} did not complete the AMQP connection within {OPEN_TIMEOUT:?}",
                        config.host, config.port
                    ),
                )
            })?
    }

    async fn open_unbounded(config: &AmqpConfig) -> Result<Self> {
        let tcp = TcpStream::connect((config.host.as_str(), config.port))
            .await
            .map_err(|e| {
                transport(format!("cannot reach {}:{}", config.host, config.port)).with_source(e)
            })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(config.host.clone())
            .map_err(|e| transport("the host name is not valid for TLS").with_source(e))?;
        let tls = tokio_rustls::TlsConnector::from(config.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| transport("the TLS handshake failed").with_source(e))?;
        let container = format!("iothub-rs-{}", uuid::Uuid::new_v4());
        let builder = Connection::builder()
            .container_id(container)
            .hostname(config.host.as_str())
            .idle_time_out(IDLE_TIMEOUT_MS);
        // Frames written in one turn of fe2o3's connection loop go out in one write.
        let opened = if config.websockets {
            builder
                .open_with_stream(BatchedWrites::new(websocket_pipe(config, tls).await?))
                .await
        } else {
            builder.open_with_stream(BatchedWrites::new(tls)).await
        };
        let mut connection =
            opened.map_err(|e| transport("the AMQP connection was refused").with_source(e))?;
        let mut session = match Session::begin(&mut connection).await {
            Ok(session) => session,
            Err(e) => {
                let _ = connection.close().await;
                return Err(transport("the AMQP session was refused").with_source(e));
            }
        };
        let cbs = match CbsClient::attach(&mut session).await {
            Ok(cbs) => cbs,
            Err(e) => {
                let _ = connection.close().await;
                return Err(transport("the CBS link was refused").with_source(e));
            }
        };
        let mut link = Link {
            connection,
            session,
            cbs,
            renew_at: Instant::now(),
        };
        if let Err(e) = link.authorize(config).await {
            link.close().await;
            return Err(e);
        }
        Ok(link)
    }

    /// Puts a fresh token on the CBS node; schedules the next renewal.
    async fn authorize(&mut self, config: &AmqpConfig) -> Result<()> {
        let issued = config.tokens.token()?;
        let token = CbsToken::new(issued.token.to_string(), SAS_TOKEN_TYPE, None);
        let put = tokio::time::timeout(
            RENEW_TIMEOUT,
            self.cbs.put_token(config.audience.as_str(), token),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                "the hub did not answer the CBS put-token in time",
            )
        })?;
        match put {
            Ok(()) => {}
            // IoT Hub answers a good put-token with 200 (azure-iot-hub-node
            // `src/common-amqp/amqp_cbs.ts`, `ClaimsBasedSecurityAgent`, whose put-token response
            // handler fails on `status-code !== 200`),
            // where fe2o3-amqp-cbs expects Service Bus's 202 and reports 200 as a status error.
            Err(MgmtError::Status(status)) if status.code.0.get() == 200 => {}
            Err(e) => return Err(cbs_refusal(e)),
        }
        let renew_in = issued
            .renew_at
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(24 * 3600));
        self.renew_at = Instant::now() + renew_in;
        Ok(())
    }

    /// Ends the session and closes the connection, waiting at most [`CLOSE_TIMEOUT`] for the
    /// peer each (a silent peer must not hold up the next attempt).
    async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.session.end()).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close()).await;
    }
}

/// Maps a disposition to the caller's result; a rejection's condition to its kind through
/// [`amqp_error::kind_for`] (the table of azure-iot-hub-node `src/amqp_service_errors.ts`,
/// `translateError`).
fn outcome_result(outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        Outcome::Rejected(rejected) => {
            let (symbol, description) = match rejected.error {
                Some(e) => (
                    amqp_error::condition_symbol(&e.condition),
                    e.description.unwrap_or_default(),
                ),
                None => (String::new(), String::new()),
            };
            Err(Error::new(
                amqp_error::kind_for(&symbol),
                format!("the hub rejected the message ({symbol}): {description}"),
            ))
        }
        other => Err(transport(format!(
            "the hub did not accept the message: {other:?}"
        ))),
    }
}

/// The hub's disposition of one sent message, still to come.
pub(crate) type Settlement = DeliveryFut<std::result::Result<Outcome, SendError>>;

/// Who waits for a send: the link's [`Settlement`] once the message is on the wire (the caller
/// awaits it itself, so no task is spawned per message), or why it could not be sent.
pub(crate) type SendDone = oneshot::Sender<Result<Settlement>>;

/// A message to send, who waits for its disposition, and by when it must be settled.
pub(crate) struct SendRequest {
    pub message: AmqpMessage<Data>,
    pub done: SendDone,
    pub deadline: Instant,
}

/// The caller's result once the hub settles its message, or `deadline` passes.
pub(crate) async fn settled(settlement: Settlement, deadline: Instant) -> Result<()> {
    match tokio::time::timeout_at(deadline, settlement).await {
        Ok(Ok(outcome)) => outcome_result(outcome),
        Ok(Err(e)) => Err(
            transport("the connection closed before the hub settled the message").with_source(e),
        ),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            "the hub did not settle the message in time",
        )),
    }
}

/// Starts the sender task; it connects on the first send.
pub(crate) fn spawn_sender(config: AmqpConfig) -> mpsc::Sender<SendRequest> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(sender_task(config, rx));
    tx
}

/// The sender's connection attempts, across sends: failures in a row and when the next
/// attempt may start.
struct Backoff {
    failures: u32,
    next_attempt: Instant,
    last_failure: String,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            failures: 0,
            next_attempt: Instant::now(),
            last_failure: String::new(),
        }
    }
}

/// Opens the C2D sender for the send that is due by `deadline`: attempts spaced by the retry
/// policy's backoff, until one succeeds, the policy's attempt limit is reached, the next attempt
/// would start after `deadline`, the caller has gone, or the hub refuses the credentials.
async fn connect_sender(
    config: &AmqpConfig,
    backoff: &mut Backoff,
    deadline: Instant,
    done: &SendDone,
) -> Result<(Link, Sender)> {
    let mut attempts = 0u32;
    loop {
        if backoff.next_attempt >= deadline {
            // Only when this send waited behind others: it is due before the backoff ends.
            return Err(transport(format!(
                "no connection to the hub within the request timeout (last attempt: {})",
                backoff.last_failure
            )));
        }
        sleep_until(backoff.next_attempt).await;
        attempts += 1;
        let result = match tokio::time::timeout_at(deadline, open_sender(config)).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "connecting to the hub took longer than the request timeout",
            )),
        };
        let error = match result {
            Ok(opened) => {
                backoff.failures = 0;
                return Ok(opened);
            }
            Err(error) => error,
        };
        backoff.failures = backoff.failures.saturating_add(1);
        backoff.next_attempt = Instant::now() + config.retry.delay(backoff.failures);
        backoff.last_failure = error.to_string();
        let final_error = matches!(error.kind(), ErrorKind::Unauthorized | ErrorKind::Timeout);
        if final_error
            || config.retry.gives_up_after(attempts)
            || backoff.next_attempt >= deadline
            || done.is_closed()
        {
            return Err(error);
        }
        tracing::debug!(error = %error, attempts, "the AMQP connection failed; retrying");
    }
}

async fn sender_task(config: AmqpConfig, mut requests: mpsc::Receiver<SendRequest>) {
    let mut open: Option<(Link, Sender)> = None;
    let mut backoff = Backoff::new();
    // One renewal timer, moved only when the link's renewal time changes: not a timer
    // registered and dropped per message.
    let renew_timer = sleep_until(Instant::now() + Duration::from_secs(24 * 3600));
    tokio::pin!(renew_timer);
    loop {
        let renew_at = open.as_ref().map(|(link, _)| link.renew_at);
        if let Some(at) = renew_at {
            if renew_timer.deadline() != at {
                renew_timer.as_mut().reset(at);
            }
        }
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { break };
                if open.as_ref().is_some_and(|(link, _)| link.connection.is_closed() || link.session.is_ended()) {
                    tracing::info!("the AMQP connection was lost; reopening");
                    if let Some((link, _)) = open.take() {
                        link.close().await;
                    }
                }
                if open.is_none() {
                    match connect_sender(&config, &mut backoff, request.deadline, &request.done).await {
                        Ok(opened) => open = Some(opened),
                        Err(e) => {
                            let _ = request.done.send(Err(e));
                            continue;
                        }
                    }
                }
                let (_, sender) = open.as_mut().expect("opened above");
                let deadline = request.deadline;
                match tokio::time::timeout_at(deadline, sender.send_batchable(request.message)).await {
                    Ok(Ok(settlement)) => {
                        let _ = request.done.send(Ok(settlement));
                    }
                    Err(_) => {
                        tracing::warn!("the C2D link did not take the message in time; reopening on the next send");
                        if let Some((link, _)) = open.take() {
                            link.close().await;
                        }
                        let _ = request.done.send(Err(Error::new(ErrorKind::Timeout, "the AMQP link did not take the message in time")));
                    }
                    Ok(Err(SendError::MessageSizeExceeded(e))) => {
                        // Checked before anything is written: the link stays usable.
                        let _ = request.done.send(Err(Error::new(
                            ErrorKind::MessageTooLarge,
                            format!("the message is larger than the hub's C2D link takes ({e}); IoT Hub takes C2D messages up to 64 KB"),
                        )));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the C2D link failed; it reopens on the next send");
                        if let Some((link, _)) = open.take() {
                            link.close().await;
                        }
                        let _ = request.done.send(Err(transport("the AMQP link failed; the message was not sent").with_source(e)));
                    }
                }
            }
            closed = async {
                match open.as_mut() {
                    Some((link, _)) => link.connection.on_close().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!(?closed, "the AMQP connection closed; it reopens on the next send");
                if let Some((link, _)) = open.take() {
                    link.close().await;
                }
            }
            _ = &mut renew_timer, if renew_at.is_some() => {
                let (link, _) = open.as_mut().expect("renew_at implies a link");
                if let Err(e) = link.authorize(&config).await {
                    tracing::warn!(error = %e, "token renewal failed; reconnecting on the next send");
                    if let Some((link, _)) = open.take() {
                        link.close().await;
                    }
                }
            }
        }
    }
    if let Some((link, sender)) = open {
        let _ = sender.close().await;
        link.close().await;
    }
}

async fn open_sender(config: &AmqpConfig) -> Result<(Link, Sender)> {
    let mut link = Link::open(config).await?;
    let name = format!("c2d-sender-{}", uuid::Uuid::new_v4());
    match Sender::builder()
        .name(name)
        .source(format!("iothub-rs-{}", uuid::Uuid::new_v4()))
        .target(C2D_LINK_TARGET)
        .attach(&mut link.session)
        .await
    {
        Ok(sender) => Ok((link, sender)),
        Err(e) => {
            link.close().await;
            Err(transport("the hub refused the C2D link").with_source(e))
        }
    }
}

/// A refused CBS put-token as an error that carries the hub's status description (IoT Hub
/// says there why: an unknown policy, a wrong key, a missing permission, an expired token).
fn cbs_refusal(error: MgmtError) -> Error {
    let hub_said = match &error {
        MgmtError::Status(status) => format!(
            " (status {}: {})",
            status.code.0,
            status.description.as_deref().unwrap_or("no description")
        ),
        _ => String::new(),
    };
    Error::new(
        ErrorKind::Unauthorized,
        format!(
            "the hub refused the policy token (CBS put-token){hub_said}: check the connection \
             string's SharedAccessKeyName and SharedAccessKey against the hub's policies; the \
             policy needs the ServiceConnect permission"
        ),
    )
    .with_source(error)
}
