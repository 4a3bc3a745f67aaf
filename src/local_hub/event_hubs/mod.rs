//! The built-in Event Hubs-compatible endpoint: device telemetry for the official Event Hubs
//! SDKs (azure-eventhub for Python, @azure/event-hubs for Node, azure_messaging_eventhubs).
//!
//! An AMQP 1.0 listener, over TLS as the real endpoint on 5671 or over plain TCP as the Event
//! Hubs emulator (the `UseDevelopmentEmulator=true` connection string makes Python and Node
//! dial plain TCP on the port of `Endpoint=sb://localhost:PORT`: azure-sdk-for-python
//! `azure/eventhub/_client_base.py`, `_parse_conn_str`; azure-sdk-for-js
//! `sdk/core/core-amqp/src/ConnectionContextBase.ts`). Per connection: SASL (ANONYMOUS, which
//! all three SDKs use, or PLAIN) or none, then
//! - `$cbs` put-token ([`cbs`]) with an Event Hubs-style token of a policy that has
//!   ServiceConnect ([`token`]);
//! - `$management` READ of the Event Hub and its partitions ([`management`]);
//! - receiver links on `{EntityPath}/ConsumerGroups/{group}/Partitions/{n}` ([`receiver`]),
//!   with the selector filters of [`filter`], owner levels (epochs) and `amqp:link:stolen`.
//!
//! A link to an unknown node, partition or consumer group is refused with `amqp:not-found`, a
//! malformed filter with `com.microsoft:argument-error`; other links are unaffected.

mod cbs;
mod event_message;
mod filter;
mod full_frames;
mod management;
mod receiver;
mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor, SupportedReceiverSettleModes,
    SupportedSenderSettleModes,
};
use fe2o3_amqp_types::definitions::{
    AmqpError, Error as AmqpErrorInfo, ErrorCondition, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::{Source, Target, TargetArchetype};
use fe2o3_amqp_types::performatives::Attach;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::local_hub::amqp::frame_guard::FrameGuard;
use crate::local_hub::amqp::sasl::HubSasl;
use crate::local_hub::amqp::{AMQP_HEADER, MAX_FRAME_SIZE, SASL_HEADER};
use crate::local_hub::rewind::Rewind;
use crate::local_hub::state::HubState;
use crate::local_hub::telemetry_log::TelemetryLog;

pub(crate) use receiver::Owners;

/// Time a client has to finish TLS and send its protocol header.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The container id in the endpoint's OPEN.
const CONTAINER_ID: &str = "iothub-local-eventhubs";

/// The Event Hub name of the built-in endpoint for a hub host name, in the form the portal
/// shows (`iothub-ehub-{hub}-…`, MicrosoftDocs `iot-hub-devguide-messages-read-builtin.md`).
pub(crate) fn event_hub_name(host_name: &str) -> String {
    let hub = host_name.split('.').next().unwrap_or(host_name);
    format!("iothub-ehub-{}", hub.to_ascii_lowercase())
}

/// The Event Hubs-compatible connection string the portal shows, for `host[:port]`:
/// `Endpoint=sb://{host}/;SharedAccessKeyName={policy};SharedAccessKey={key};EntityPath={eh}`.
/// With `emulator`, `;UseDevelopmentEmulator=true` is added, which makes Python and Node dial
/// plain TCP on the endpoint's port.
pub(crate) fn connection_string(
    host_and_port: &str,
    policy: &str,
    key: &str,
    event_hub: &str,
    emulator: bool,
) -> String {
    let mut s = format!(
        "Endpoint=sb://{host_and_port}/;SharedAccessKeyName={policy};SharedAccessKey={key};EntityPath={event_hub}"
    );
    if emulator {
        s.push_str(";UseDevelopmentEmulator=true");
    }
    s
}

/// What every connection of the endpoint shares.
pub(crate) struct Endpoint {
    state: Arc<HubState>,
    log: Arc<TelemetryLog>,
    event_hub: String,
    created_at: SystemTime,
    owners: Owners,
}

impl Endpoint {
    /// The endpoint for `state`'s hub serving `log` as Event Hub `event_hub`.
    pub(crate) fn new(
        state: Arc<HubState>,
        log: Arc<TelemetryLog>,
        event_hub: String,
    ) -> Arc<Self> {
        let created_at = state.clock.now();
        Arc::new(Endpoint {
            state,
            log,
            event_hub,
            created_at,
            owners: Owners::default(),
        })
    }
}

/// Accepts connections on `listener` until it fails: TLS when `tls` is given, plain TCP
/// otherwise (the emulator form).
pub(crate) async fn serve(
    endpoint: Arc<Endpoint>,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
) {
    match tls {
        Some(acceptor) => {
            crate::local_hub::tls::accept_loop(
                listener,
                acceptor,
                "Event Hubs AMQP",
                HANDSHAKE_TIMEOUT,
                move |stream, peer| run_connection(endpoint.clone(), stream, peer),
            )
            .await
        }
        None => loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "Event Hubs accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(run_connection(endpoint.clone(), tcp, peer.to_string()));
        },
    }
}

/// Runs one connection until it ends or the hub stops.
async fn run_connection<S>(endpoint: Arc<Endpoint>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut stopping = endpoint.state.stopping();
    tokio::select! {
        result = connection(endpoint.clone(), stream, &peer) => {
            if let Err(e) = result {
                tracing::info!(%peer, error = %e, "Event Hubs connection ended");
            }
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
}

async fn connection<S>(endpoint: Arc<Endpoint>, mut stream: S, peer: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("no protocol header: {e}")),
        Err(_) => return Err("no protocol header in time".to_owned()),
    }
    // The same guard as the service endpoint: fe2o3's decoder panics on frame sizes 4 to 7.
    let stream = full_frames::FullFrames::new(FrameGuard::new(
        Rewind::new(header.to_vec(), stream),
        MAX_FRAME_SIZE,
    ));
    let mut connection = match header {
        SASL_HEADER => {
            // ANONYMOUS (all three Event Hubs SDKs; azure-sdk-for-python
            // `azure/eventhub/_pyamqp/sasl.py`) leaves authorization to CBS; a PLAIN policy
            // login authorizes the connection at once.
            let (sasl, slot) = HubSasl::new(endpoint.state.clone());
            let connection = ConnectionAcceptor::builder()
                .container_id(CONTAINER_ID)
                .sasl_acceptor(sasl)
                .build()
                .accept(stream)
                .await
                .map_err(|e| format!("handshake failed: {e}"))?;
            let grant = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            let conn = Conn::new(endpoint, peer);
            if let Some(crate::local_hub::amqp::sasl::SaslGrant::Plain { until, .. }) = grant {
                conn.authorize_until(until);
            }
            return sessions(connection, conn).await;
        }
        AMQP_HEADER => ConnectionAcceptor::new(CONTAINER_ID)
            .accept(stream)
            .await
            .map_err(|e| format!("handshake failed: {e}"))?,
        other => {
            let mut stream = stream;
            let _ = stream.write_all(&SASL_HEADER).await;
            let _ = stream.shutdown().await;
            return Err(format!("unsupported protocol header {other:02x?}"));
        }
    };
    let conn = Conn::new(endpoint, peer);
    let result = accept_sessions(&mut connection, &conn).await;
    let _ = connection.close().await;
    result
}

async fn sessions(mut connection: ListenerConnectionHandle, conn: Arc<Conn>) -> Result<(), String> {
    let result = accept_sessions(&mut connection, &conn).await;
    let _ = connection.close().await;
    result
}

async fn accept_sessions(
    connection: &mut ListenerConnectionHandle,
    conn: &Arc<Conn>,
) -> Result<(), String> {
    let acceptor = SessionAcceptor::new();
    while let Some(incoming) = connection.next_incoming_session().await {
        let session = acceptor
            .accept_incoming_session(incoming, connection)
            .await
            .map_err(|e| format!("session failed: {e}"))?;
        tokio::spawn(run_session(session, conn.clone()));
    }
    Ok(())
}

/// One connection's state.
pub(crate) struct Conn {
    endpoint: Arc<Endpoint>,
    peer: String,
    /// Until when the connection is authorized; `None` before any valid token.
    auth: watch::Sender<Option<SystemTime>>,
    cbs: cbs::ReplyRoute,
    management: cbs::ReplyRoute,
}

impl Conn {
    fn new(endpoint: Arc<Endpoint>, peer: &str) -> Arc<Self> {
        Arc::new(Conn {
            endpoint,
            peer: peer.to_owned(),
            auth: watch::channel(None).0,
            cbs: cbs::ReplyRoute::default(),
            management: cbs::ReplyRoute::default(),
        })
    }

    fn now(&self) -> SystemTime {
        self.endpoint.state.clock.now()
    }

    fn authorized(&self) -> bool {
        self.auth.borrow().is_some_and(|until| until > self.now())
    }

    fn authorize_until(&self, until: SystemTime) {
        self.auth.send_modify(|current| {
            if current.is_none_or(|c| c < until) {
                *current = Some(until);
            }
        });
    }

    /// Resolves when the authorization has lapsed (at once if there is none).
    async fn lapsed(&self) {
        let mut rx = self.auth.subscribe();
        loop {
            let Some(until) = *rx.borrow_and_update() else {
                return;
            };
            let Ok(left) = until.duration_since(self.now()) else {
                return;
            };
            let wait = left.min(Duration::from_secs(86_400));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = rx.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// What an ATTACH asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LinkKind {
    CbsRequests,
    CbsResponses,
    ManagementRequests,
    ManagementResponses,
    /// A partition receiver: the source path.
    Partition(String),
}

fn classify(attach: &Attach) -> Option<LinkKind> {
    match attach.role {
        Role::Sender => {
            let target = match attach.target.as_deref()? {
                TargetArchetype::Target(t) => t.address.as_deref()?,
                #[allow(unreachable_patterns)]
                _ => return None,
            };
            match token::address_path(target) {
                "$cbs" => Some(LinkKind::CbsRequests),
                path if path.ends_with("$management") => Some(LinkKind::ManagementRequests),
                _ => None,
            }
        }
        Role::Receiver => {
            let source = attach.source.as_ref()?.address.as_deref()?;
            match token::address_path(source) {
                "$cbs" => Some(LinkKind::CbsResponses),
                path if path.ends_with("$management") => Some(LinkKind::ManagementResponses),
                path => Some(LinkKind::Partition(path.to_owned())),
            }
        }
    }
}

/// fe2o3-amqp refuses a client sender without source and a client receiver without target
/// (azure_messaging_eventhubs attaches receivers with none); an empty terminus fills the gap.
fn fill_termini(mut attach: Attach) -> Attach {
    match attach.role {
        Role::Sender if attach.source.is_none() => {
            attach.source = Some(Box::new(Source::default()));
        }
        Role::Receiver if attach.target.is_none() => {
            attach.target = Some(Box::new(TargetArchetype::Target(Target::default())));
        }
        _ => {}
    }
    attach
}

pub(crate) fn amqp_error(condition: impl Into<ErrorCondition>, description: &str) -> AmqpErrorInfo {
    AmqpErrorInfo::new(condition.into(), description.to_owned(), None)
}

/// Closes a just-attached link with an error, in its own task (closing waits for the client's
/// DETACH, which must not hold up the session's next ATTACH).
pub(crate) fn refuse(endpoint: LinkEndpoint, error: AmqpErrorInfo) {
    tokio::spawn(async move {
        let _ = match endpoint {
            LinkEndpoint::Sender(s) => s.close_with_error(error).await.map_err(|_| ()),
            LinkEndpoint::Receiver(r) => r.close_with_error(error).await.map_err(|_| ()),
        };
    });
}

async fn run_session(mut session: ListenerSessionHandle, conn: Arc<Conn>) {
    // Events go out pre-settled: the Python consumer never settles (azure-sdk-for-python
    // `azure/eventhub/_pyamqp/receiver.py`), so unsettled deliveries would pile up.
    let links = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .supported_sender_settle_modes(SupportedSenderSettleModes::Settled)
        .fallback_sender_settle_mode(SenderSettleMode::Settled)
        .build();
    while let Some(attach) = session.next_incoming_attach().await {
        let name = attach.name.clone();
        let kind = classify(&attach);
        let partition_request = match &kind {
            Some(LinkKind::Partition(path)) => Some(receiver::request(&conn, path, &attach)),
            _ => None,
        };
        let endpoint = match links
            .accept_incoming_attach(fill_termini(attach), &mut session)
            .await
        {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::info!(peer = %conn.peer, link = %name, error = ?e, "Event Hubs attach failed");
                continue;
            }
        };
        let Some(kind) = kind else {
            refuse(endpoint, amqp_error(AmqpError::NotFound, "no such node"));
            continue;
        };
        let needs_auth = !matches!(kind, LinkKind::CbsRequests | LinkKind::CbsResponses);
        if needs_auth && !conn.authorized() {
            tracing::info!(peer = %conn.peer, link = %name, "Event Hubs link refused: no valid token");
            refuse(
                endpoint,
                amqp_error(
                    AmqpError::UnauthorizedAccess,
                    "put a valid token on $cbs before attaching this link",
                ),
            );
            continue;
        }
        tracing::info!(peer = %conn.peer, link = %name, ?kind, "Event Hubs link attached");
        match (kind, endpoint) {
            (LinkKind::CbsRequests, LinkEndpoint::Receiver(r)) => {
                tokio::spawn(cbs::put_token_requests(r, conn.clone()));
            }
            (LinkKind::CbsResponses, LinkEndpoint::Sender(s)) => conn.cbs.attach(s),
            (LinkKind::ManagementRequests, LinkEndpoint::Receiver(r)) => {
                tokio::spawn(management::requests(r, conn.clone()));
            }
            (LinkKind::ManagementResponses, LinkEndpoint::Sender(s)) => conn.management.attach(s),
            (LinkKind::Partition(_), LinkEndpoint::Sender(s)) => match partition_request {
                Some(Ok(request)) => {
                    tokio::spawn(receiver::run(s, request, conn.clone()));
                }
                Some(Err(error)) => refuse(LinkEndpoint::Sender(s), error),
                None => refuse(
                    LinkEndpoint::Sender(s),
                    amqp_error(AmqpError::NotFound, "no such node"),
                ),
            },
            (_, endpoint) => refuse(
                endpoint,
                amqp_error(AmqpError::NotAllowed, "unexpected link role"),
            ),
        }
    }
}
