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
mod moot_detaches;
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

use crate::amqp_batched_writes::BatchedWrites;
use crate::local_hub::amqp::frame_guard::FrameGuard;
use crate::local_hub::amqp::sasl::HubSasl;
use crate::local_hub::amqp::{AMQP_HEADER, MAX_FRAME_SIZE, SASL_HEADER};
use crate::local_hub::limits::{
    AmqpBounds, AmqpBudget, ConnectionGate, ConnectionLimits, LinkPlace, accept_loop_plain_bounded,
    unauthorized_after,
};
use crate::local_hub::rewind::Rewind;
use crate::local_hub::state::HubState;
use crate::local_hub::telemetry_log::TelemetryLog;

pub(crate) use receiver::Owners;

/// The container id in the endpoint's OPEN.
const CONTAINER_ID: &str = "iothub-local-eventhubs";
/// The bounds of one connection. @azure/event-hubs opens a session per link (rhea-promise
/// `Connection.createReceiver` creates one; azure-sdk-for-js `sdk/core/core-amqp/src/cbs.ts`
/// and `sdk/eventhub/event-hubs/src/partitionReceiver.ts` each call it), so a consumer of every
/// partition of a hub (IoT Hub has up to 128; Microsoft Learn, "IoT Hub quotas and
/// throttling") needs that many sessions; 256 sessions is also fe2o3-amqp's default
/// `channel-max`. The client sends only on `$cbs` and `$management` request links.
const BOUNDS: AmqpBounds = AmqpBounds {
    sessions: 256,
    links: 512,
    inbound_links: 8,
};
/// The max-message-size of the links the client sends on (`$cbs` and `$management`
/// requests, a few hundred bytes to a few KB), enforced by fe2o3-amqp on every transfer frame:
/// a link past it is detached with `amqp:link:message-size-exceeded`. At most
/// `inbound_links` × this (512 KiB) of partly received deliveries per connection.
const REQUEST_MAX_MESSAGE_SIZE: u64 = 64 * 1024;

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

/// Accepts connections on `listener` until it fails, within `limits` (as the service
/// endpoint): TLS when `tls` is given, plain TCP otherwise (the emulator form).
pub(crate) async fn serve(
    endpoint: Arc<Endpoint>,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
    limits: ConnectionLimits,
) {
    let gate = ConnectionGate::new(&limits);
    let handshake_timeout = limits.handshake_timeout;
    let limits = Arc::new(limits);
    match tls {
        Some(acceptor) => {
            crate::local_hub::tls::accept_loop_bounded(
                listener,
                acceptor,
                "Event Hubs AMQP",
                gate,
                handshake_timeout,
                move |stream, peer| run_connection(endpoint.clone(), stream, peer, limits.clone()),
            )
            .await
        }
        None => {
            accept_loop_plain_bounded(listener, "Event Hubs AMQP (plain)", gate, |tcp, peer| {
                run_connection(endpoint.clone(), tcp, peer, limits.clone())
            })
            .await
        }
    }
}

/// Runs one connection until it ends or the hub stops.
pub(crate) async fn run_connection<S>(
    endpoint: Arc<Endpoint>,
    stream: S,
    peer: String,
    limits: Arc<ConnectionLimits>,
) where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut stopping = endpoint.state.stopping();
    tokio::select! {
        result = connection(endpoint.clone(), stream, &peer, &limits) => {
            if let Err(e) = result {
                tracing::info!(%peer, error = %e, "Event Hubs connection ended");
            }
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
}

async fn connection<S>(
    endpoint: Arc<Endpoint>,
    mut stream: S,
    peer: &str,
    limits: &ConnectionLimits,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match timeout(limits.handshake_timeout, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("no protocol header: {e}")),
        Err(_) => return Err("no protocol header in time".to_owned()),
    }
    // The same guard as the service endpoint: fe2o3's decoder panics on frame sizes 4 to 7.
    // Transfers to a reader written in one turn of fe2o3's connection loop go out in one
    // write (`BatchedWrites`), each padded by `FullFrames`. A client's DETACH followed by the
    // END of its session is answered by END alone (`MootDetaches`).
    let stream = BatchedWrites::new(full_frames::FullFrames::new(
        moot_detaches::MootDetaches::new(FrameGuard::new(
            Rewind::new(header.to_vec(), stream),
            MAX_FRAME_SIZE,
        )),
    ));
    let acceptor = ConnectionAcceptor::builder()
        .container_id(CONTAINER_ID)
        .max_frame_size(MAX_FRAME_SIZE)
        .channel_max(BOUNDS.sessions as u16 - 1)
        .idle_time_out(limits.amqp_idle_millis());
    let (mut connection, grant) = match header {
        SASL_HEADER => {
            // ANONYMOUS (all three Event Hubs SDKs; azure-sdk-for-python
            // `azure/eventhub/_pyamqp/sasl.py`) leaves authorization to CBS; a PLAIN policy
            // login authorizes the connection at once.
            let (sasl, slot) = HubSasl::new(endpoint.state.clone());
            let acceptor = acceptor.sasl_acceptor(sasl).build();
            let connection = timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| "no SASL outcome and OPEN in time".to_owned())?
                .map_err(|e| format!("handshake failed: {e}"))?;
            let grant = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            (connection, grant)
        }
        AMQP_HEADER => {
            let acceptor = acceptor.build();
            let connection = timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| "no OPEN in time".to_owned())?
                .map_err(|e| format!("handshake failed: {e}"))?;
            (connection, None)
        }
        other => {
            let mut stream = stream;
            let _ = stream.write_all(&SASL_HEADER).await;
            let _ = stream.shutdown().await;
            return Err(format!("unsupported protocol header {other:02x?}"));
        }
    };
    let conn = Conn::new(endpoint, peer);
    if let Some(crate::local_hub::amqp::sasl::SaslGrant::Plain { until, .. }) = grant {
        conn.authorize_until(until);
    }
    let (result, error) = tokio::select! {
        result = accept_sessions(&mut connection, &conn) => (result, None),
        _ = unauthorized_after(&conn.auth, limits.amqp_auth_timeout) => (
            Err("no valid token in time".to_owned()),
            Some(amqp_error(
                AmqpError::UnauthorizedAccess,
                "no valid token within the endpoint's authorization deadline",
            )),
        ),
        reason = conn.budget.exceeded() => (
            Err(format!("a per-connection bound was exceeded: {reason}")),
            Some(amqp_error(AmqpError::ResourceLimitExceeded, reason)),
        ),
    };
    let close = async {
        match error {
            Some(error) => connection.close_with_error(error).await,
            None => connection.close().await,
        }
    };
    let _ = timeout(limits.handshake_timeout, close).await;
    result
}

async fn accept_sessions(
    connection: &mut ListenerConnectionHandle,
    conn: &Arc<Conn>,
) -> Result<(), String> {
    let acceptor = SessionAcceptor::builder()
        .handle_max(BOUNDS.links as u32 - 1)
        .build();
    while let Some(incoming) = connection.next_incoming_session().await {
        let Some(place) = conn.budget.session() else {
            // The connection closes with `amqp:resource-limit-exceeded`.
            std::future::pending::<()>().await;
            return Ok(());
        };
        let session = acceptor
            .accept_incoming_session(incoming, connection)
            .await
            .map_err(|e| format!("session failed: {e}"))?;
        let conn = conn.clone();
        tokio::spawn(async move {
            let _place = place;
            run_session(session, conn).await;
        });
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
    /// The connection's sessions and links; past a bound the connection is closed with
    /// `amqp:resource-limit-exceeded`.
    budget: AmqpBudget,
}

impl Conn {
    fn new(endpoint: Arc<Endpoint>, peer: &str) -> Arc<Self> {
        Arc::new(Conn {
            endpoint,
            peer: peer.to_owned(),
            auth: watch::channel(None).0,
            cbs: cbs::ReplyRoute::default(),
            management: cbs::ReplyRoute::default(),
            budget: AmqpBudget::new(BOUNDS),
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
/// DETACH, which must not hold up the session's next ATTACH); the link keeps its `place` in
/// the connection's bounds until then.
pub(crate) fn refuse(endpoint: LinkEndpoint, error: AmqpErrorInfo, place: LinkPlace) {
    place.spawn(async move {
        let _ = match endpoint {
            LinkEndpoint::Sender(s) => s.close_with_error(error).await.map_err(|_| ()),
            LinkEndpoint::Receiver(r) => r.close_with_error(error).await.map_err(|_| ()),
        };
    });
}

async fn run_session(mut session: ListenerSessionHandle, conn: Arc<Conn>) {
    // Events go out pre-settled: the Python consumer never settles (azure-sdk-for-python
    // `azure/eventhub/_pyamqp/receiver.py`), so unsettled deliveries would pile up.
    let acceptor = || {
        LinkAcceptor::builder()
            .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
            .fallback_receiver_settle_mode(ReceiverSettleMode::First)
            .supported_sender_settle_modes(SupportedSenderSettleModes::Settled)
            .fallback_sender_settle_mode(SenderSettleMode::Settled)
    };
    // Links on which the endpoint sends keep no bound of their own: an event may be a little
    // over 256 KB (a full device message and its annotations).
    let links = acceptor().build();
    let request_links = acceptor()
        .max_message_size(REQUEST_MAX_MESSAGE_SIZE)
        .build();
    while let Some(attach) = session.next_incoming_attach().await {
        let name = attach.name.clone();
        let kind = classify(&attach);
        let partition_request = match &kind {
            Some(LinkKind::Partition(path)) => Some(receiver::request(&conn, path, &attach)),
            _ => None,
        };
        let inbound = attach.role == Role::Sender;
        let Some(place) = conn.budget.link(inbound) else {
            // The connection closes with `amqp:resource-limit-exceeded`.
            return;
        };
        let links = if inbound { &request_links } else { &links };
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
            refuse(
                endpoint,
                amqp_error(AmqpError::NotFound, "no such node"),
                place,
            );
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
                place,
            );
            continue;
        }
        tracing::info!(peer = %conn.peer, link = %name, ?kind, "Event Hubs link attached");
        match (kind, endpoint) {
            (LinkKind::CbsRequests, LinkEndpoint::Receiver(r)) => {
                place.spawn(cbs::put_token_requests(r, conn.clone()));
            }
            (LinkKind::CbsResponses, LinkEndpoint::Sender(s)) => conn.cbs.attach(s, place),
            (LinkKind::ManagementRequests, LinkEndpoint::Receiver(r)) => {
                place.spawn(management::requests(r, conn.clone()));
            }
            (LinkKind::ManagementResponses, LinkEndpoint::Sender(s)) => {
                conn.management.attach(s, place)
            }
            (LinkKind::Partition(_), LinkEndpoint::Sender(s)) => match partition_request {
                Some(Ok(request)) => {
                    place.spawn(receiver::run(s, request, conn.clone()));
                }
                Some(Err(error)) => refuse(LinkEndpoint::Sender(s), error, place),
                None => refuse(
                    LinkEndpoint::Sender(s),
                    amqp_error(AmqpError::NotFound, "no such node"),
                    place,
                ),
            },
            (_, endpoint) => refuse(
                endpoint,
                amqp_error(AmqpError::NotAllowed, "unexpected link role"),
                place,
            ),
        }
    }
}
