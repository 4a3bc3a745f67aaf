//! The AMQP 1.0 service endpoint: CBS, the C2D sender link, the feedback and file-notification
//! receiver links.
//!
//! Each connection: TLS first (tokio-rustls, as IoT Hub on 5671: the TLS handshake, then the
//! AMQP header inside), or a WebSocket already terminated by the HTTPS endpoint; then the
//! 8-byte protocol header is read to pick the SASL handshake (`AMQP 3 1 0 0`, see [`sasl`]) or
//! none at all (`AMQP 0 1 0 0`, which azure-iothub for Node sends: rhea `lib/connection.js`
//! adds a SASL layer only when it is given mechanisms or credentials, and
//! `azure-iot-sdk-node` `service/src/amqp.ts`, `_getConnectionUri`, gives it neither); then
//! fe2o3-amqp's acceptor runs the connection, and every ATTACH is dispatched here by its
//! address to [`cbs`], [`c2d`] or [`feedback`]; a receiver on `/messages/events/…` is
//! refused with `amqp:link:redirect` to the Event Hubs-compatible endpoint ([`redirect`]).
//!
//! Authorization: a connection is authorized by a SASL PLAIN policy token or by a CBS
//! put-token of a policy with ServiceConnect, until that token expires (on the hub's clock).
//! Links other than `$cbs` attached before are refused with `amqp:unauthorized-access`; when
//! the token expires without a newer one, the open links are closed with the same condition.

mod c2d;
mod cbs;
mod feedback;
pub(crate) mod frame_guard;
mod link_kind;
mod redirect;
pub(crate) mod sasl;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp_types::definitions::{
    AmqpError, Error as AmqpErrorInfo, ErrorCondition, ReceiverSettleMode, Role,
};
use fe2o3_amqp_types::messaging::{Body, Message as AmqpMessage};
use fe2o3_amqp_types::primitives::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::error::ErrorKind;
use crate::local_hub::limits::{
    AmqpBounds, AmqpBudget, ConnectionGate, ConnectionLimits, LinkPlace, unauthorized_after,
};
use crate::local_hub::rewind::Rewind;
use crate::local_hub::state::HubState;
use crate::protocol::amqp_error;
use frame_guard::FrameGuard;

use crate::amqp_batched_writes::BatchedWrites;
use link_kind::{LinkKind, classify, fill_termini};
use sasl::{HubSasl, SaslGrant};

/// The SASL protocol header (OASIS AMQP 1.0, part 5.3.1 "SASL negotiation").
pub(crate) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The AMQP protocol header without a security layer (OASIS AMQP 1.0, part 2.2 "Version
/// negotiation").
pub(crate) const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The largest frame the hub accepts and advertises in its OPEN (fe2o3-amqp's default,
/// `fe2o3_amqp::connection::DEFAULT_MAX_FRAME_SIZE`, 256 KiB).
pub(crate) const MAX_FRAME_SIZE: u32 = 256 * 1024;
/// The container id in the hub's OPEN.
const CONTAINER_ID: &str = "iothub-local";
/// The bounds of one connection. The official service SDKs open one session with at most five
/// links: `$cbs` sender and receiver, the C2D sender, the feedback and file-notification
/// receivers (`azure-iot-sdk-node`, `service/src/amqp.ts`, class `Amqp`;
/// `azure-iot-hub-python`, `src/azure/iot/hub/iothub_amqp_client.py`), and reopen a link only
/// after the old one detached. At most `inbound_links` × [`C2D_MAX_MESSAGE_SIZE`] (8 MiB) of
/// partly received deliveries per connection.
const BOUNDS: AmqpBounds = AmqpBounds {
    sessions: 8,
    links: 32,
    inbound_links: 8,
};
/// The max-message-size of the C2D link, in the hub's ATTACH and enforced on every transfer
/// frame by fe2o3-amqp (a link past it is detached with `amqp:link:message-size-exceeded`). Four
/// times IoT Hub's largest message (256 KB device-to-cloud; Microsoft Learn, "IoT Hub quotas
/// and throttling"), so a C2D message over IoT Hub's 64 KB still reaches the hub and gets its
/// per-message `amqp:link:message-size-exceeded` rejection with the link kept open.
const C2D_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;
/// The max-message-size of the links a client sends requests on before it is authorized
/// (`$cbs`) and of links the hub refuses: a put-token request is a few hundred bytes (a SAS
/// token; an Entra ID JWT is a few KB).
const REQUEST_MAX_MESSAGE_SIZE: u64 = 64 * 1024;

/// Accepts AMQP-over-TLS connections until the listener fails, within `limits`.
pub(crate) async fn serve(
    state: Arc<HubState>,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    limits: ConnectionLimits,
) {
    let gate = ConnectionGate::new(&limits);
    let handshake_timeout = limits.handshake_timeout;
    let limits = Arc::new(limits);
    crate::local_hub::tls::accept_loop_bounded(
        listener,
        acceptor,
        "AMQP",
        gate,
        handshake_timeout,
        move |tls, peer| run_connection_within(state.clone(), tls, peer, limits.clone()),
    )
    .await
}

/// Runs one AMQP connection over an established stream (a WebSocket bridge) with the default
/// deadlines until it ends or the hub stops.
pub(crate) async fn run_connection<S>(state: Arc<HubState>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    run_connection_within(state, stream, peer, Arc::new(ConnectionLimits::default())).await
}

/// Runs one AMQP connection over an established stream with the deadlines of `limits` until
/// it ends or the hub stops.
async fn run_connection_within<S>(
    state: Arc<HubState>,
    stream: S,
    peer: String,
    limits: Arc<ConnectionLimits>,
) where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut stopping = state.stopping();
    tokio::select! {
        result = connection(state.clone(), stream, &peer, &limits) => {
            if let Err(e) = result {
                tracing::info!(%peer, error = %e, "AMQP connection ended");
            } else {
                tracing::debug!(%peer, "AMQP connection closed");
            }
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
}

/// A reason a connection ended early, for the log.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("no protocol header: {0}")]
    Header(std::io::Error),
    #[error("no protocol header in time")]
    HeaderTimeout,
    #[error("unsupported protocol header {0:02x?}")]
    UnsupportedHeader([u8; 8]),
    #[error("handshake failed: {0}")]
    Open(String),
    #[error("no SASL outcome and OPEN in time")]
    OpenTimeout,
    #[error("no valid token in time")]
    AuthTimeout,
    #[error("a per-connection bound was exceeded: {0}")]
    OverLimit(&'static str),
    #[error("session failed: {0}")]
    Session(String),
}

async fn connection<S>(
    state: Arc<HubState>,
    mut stream: S,
    peer: &str,
    limits: &ConnectionLimits,
) -> Result<(), ConnectionEnd>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match timeout(limits.handshake_timeout, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ConnectionEnd::Header(e)),
        Err(_) => return Err(ConnectionEnd::HeaderTimeout),
    }
    let stream = BatchedWrites::new(FrameGuard::new(
        Rewind::new(header.to_vec(), stream),
        MAX_FRAME_SIZE,
    ));
    let (mut connection, grant) = match header {
        SASL_HEADER => {
            let (sasl, slot) = HubSasl::new(state.clone());
            let acceptor = ConnectionAcceptor::builder()
                .container_id(CONTAINER_ID)
                .max_frame_size(MAX_FRAME_SIZE)
                .channel_max(BOUNDS.sessions as u16 - 1)
                .idle_time_out(limits.amqp_idle_millis())
                .sasl_acceptor(sasl)
                .build();
            let connection = timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| ConnectionEnd::OpenTimeout)?
                .map_err(|e| ConnectionEnd::Open(e.to_string()))?;
            let grant = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            (connection, grant)
        }
        AMQP_HEADER => {
            let acceptor = ConnectionAcceptor::builder()
                .container_id(CONTAINER_ID)
                .max_frame_size(MAX_FRAME_SIZE)
                .channel_max(BOUNDS.sessions as u16 - 1)
                .idle_time_out(limits.amqp_idle_millis())
                .build();
            let connection = timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| ConnectionEnd::OpenTimeout)?
                .map_err(|e| ConnectionEnd::Open(e.to_string()))?;
            (connection, None)
        }
        other => {
            // OASIS AMQP 1.0 part 2.2: answer with the header we support, then close.
            let mut stream = stream;
            let _ = stream.write_all(&SASL_HEADER).await;
            let _ = stream.shutdown().await;
            return Err(ConnectionEnd::UnsupportedHeader(other));
        }
    };
    let (auth, _) = watch::channel(None);
    match &grant {
        Some(SaslGrant::Plain { policy, until }) => {
            tracing::info!(%peer, policy = %policy, "AMQP connection authorized by SASL PLAIN");
            auth.send_replace(Some(*until));
        }
        Some(SaslGrant::NeedsCbs { mechanism }) => {
            tracing::info!(%peer, mechanism, "AMQP connection opened (SASL), waiting for CBS")
        }
        None => tracing::info!(%peer, "AMQP connection opened (no SASL), waiting for CBS"),
    }
    let (cbs_tx, cbs_rx) = mpsc::channel(cbs::CBS_REPLY_BOUND);
    let conn = Arc::new(Conn {
        state,
        peer: peer.to_owned(),
        auth,
        cbs_replies: cbs_tx,
        cbs_reply_rx: Mutex::new(Some(cbs_rx)),
        budget: AmqpBudget::new(BOUNDS),
        ended: watch::channel(false).0,
    });
    let result = tokio::select! {
        result = sessions(&mut connection, &conn) => result,
        _ = unauthorized_after(&conn.auth, limits.amqp_auth_timeout) => Err(ConnectionEnd::AuthTimeout),
        reason = conn.budget.exceeded() => Err(ConnectionEnd::OverLimit(reason)),
    };
    // Link tasks waiting on this connection (a feedback batch sent and not yet settled)
    // learn here that it is gone: fe2o3 does not fail their pending sends.
    conn.ended.send_replace(true);
    let error = match result {
        Err(ConnectionEnd::AuthTimeout) => Some(unauthorized(
            "no valid token within the hub's authorization deadline",
        )),
        Err(ConnectionEnd::OverLimit(reason)) => {
            tracing::info!(%peer, reason, "AMQP connection over a bound: closing");
            Some(link_error(AmqpError::ResourceLimitExceeded, reason))
        }
        _ => None,
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

async fn sessions(
    connection: &mut ListenerConnectionHandle,
    conn: &Arc<Conn>,
) -> Result<(), ConnectionEnd> {
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
            .map_err(|e| ConnectionEnd::Session(e.to_string()))?;
        let conn = conn.clone();
        tokio::spawn(async move {
            let _place = place;
            run_session(session, conn).await;
        });
    }
    Ok(())
}

/// One connection's shared state.
struct Conn {
    state: Arc<HubState>,
    peer: String,
    /// Until when the connection is authorized; `None` before any valid token.
    auth: watch::Sender<Option<SystemTime>>,
    /// CBS responses, sent on the client's `$cbs` receiver link; bounded by
    /// [`cbs::CBS_REPLY_BOUND`].
    cbs_replies: mpsc::Sender<AmqpMessage<Body<Value>>>,
    cbs_reply_rx: Mutex<Option<mpsc::Receiver<AmqpMessage<Body<Value>>>>>,
    /// The connection's sessions and links; past a bound (or too many CBS replies waiting)
    /// the connection is closed with `amqp:resource-limit-exceeded`.
    budget: AmqpBudget,
    /// Set once the connection has ended (closed, cut, or closed by the hub).
    ended: watch::Sender<bool>,
}

impl Conn {
    fn authorized(&self) -> bool {
        let now = self.state.clock.now();
        self.auth.borrow().is_some_and(|until| until > now)
    }

    /// Records a valid token: authorized until the latest expiry seen.
    fn authorize_until(&self, until: SystemTime) {
        self.auth.send_modify(|current| {
            if current.is_none_or(|c| c < until) {
                *current = Some(until);
            }
        });
    }

    /// Resolves once the connection has ended.
    async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Resolves when the authorization has lapsed (at once if there is none).
    async fn lapsed(&self) {
        let mut rx = self.auth.subscribe();
        loop {
            let Some(until) = *rx.borrow_and_update() else {
                return;
            };
            if until <= self.state.clock.now() {
                return;
            }
            // Re-check at least daily: far expiries need no exact timer.
            let wake = self
                .state
                .clock
                .instant_at(until)
                .min(tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = rx.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// An AMQP error with a description.
fn link_error(condition: impl Into<ErrorCondition>, description: &str) -> AmqpErrorInfo {
    AmqpErrorInfo::new(condition.into(), description.to_owned(), None)
}

/// `amqp:unauthorized-access`, from the one condition table.
fn unauthorized(description: &str) -> AmqpErrorInfo {
    link_error(
        amqp_error::error_condition_for(ErrorKind::Unauthorized),
        description,
    )
}

/// Closes a just-attached link with an error. Spawned: closing waits for the client's DETACH,
/// which must not hold up the session's next ATTACH; the link keeps its `place` in the
/// connection's bounds until then.
fn refuse(endpoint: LinkEndpoint, error: AmqpErrorInfo, place: LinkPlace) {
    place.spawn(async move {
        let _ = match endpoint {
            LinkEndpoint::Sender(s) => s.close_with_error(error).await.map_err(|_| ()),
            LinkEndpoint::Receiver(r) => r.close_with_error(error).await.map_err(|_| ()),
        };
    });
}

/// Closes a link whose authorization lapsed.
async fn close_expired(endpoint: LinkEndpoint, conn: &Conn) {
    tracing::info!(peer = %conn.peer, "AMQP token expired: closing the link");
    let error = unauthorized("the token has expired");
    let _ = match endpoint {
        LinkEndpoint::Sender(s) => s.close_with_error(error).await.map_err(|_| ()),
        LinkEndpoint::Receiver(r) => r.close_with_error(error).await.map_err(|_| ()),
    };
}

async fn run_session(mut session: ListenerSessionHandle, conn: Arc<Conn>) {
    // Clients send unsettled and wait for "accepted, settled"; uamqp (azure-iot-hub for
    // Python) attaches its C2D sender with rcv-settle-mode second, which would make our
    // dispositions unsettled, so answer first.
    let acceptor = |max_message_size: Option<u64>| {
        let builder = LinkAcceptor::builder()
            .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
            .fallback_receiver_settle_mode(ReceiverSettleMode::First);
        match max_message_size {
            Some(max) => builder.max_message_size(max).build(),
            None => builder.build(),
        }
    };
    // Links on which the hub sends keep no bound of their own: the client's receiver
    // advertises one if it has one.
    let links = acceptor(None);
    let c2d_links = acceptor(Some(C2D_MAX_MESSAGE_SIZE));
    let request_links = acceptor(Some(REQUEST_MAX_MESSAGE_SIZE));
    while let Some(attach) = session.next_incoming_attach().await {
        let name = attach.name.clone();
        let kind = classify(&attach);
        let source = attach.source.as_ref().and_then(|s| s.address.clone());
        let inbound = attach.role == Role::Sender;
        let Some(place) = conn.budget.link(inbound) else {
            // The connection closes with `amqp:resource-limit-exceeded`.
            return;
        };
        let links = match (inbound, kind) {
            (true, Some(LinkKind::CloudToDevice)) => &c2d_links,
            (true, _) => &request_links,
            (false, _) => &links,
        };
        let endpoint = match links
            .accept_incoming_attach(fill_termini(attach), &mut session)
            .await
        {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::info!(peer = %conn.peer, link = %name, error = %e, "AMQP attach failed");
                continue;
            }
        };
        let Some(kind) = kind else {
            tracing::info!(peer = %conn.peer, link = %name, "AMQP link to an unknown address refused");
            refuse(
                endpoint,
                link_error(AmqpError::NotFound, "no such node on this hub"),
                place,
            );
            continue;
        };
        let needs_auth = !matches!(kind, LinkKind::CbsRequests | LinkKind::CbsResponses);
        if needs_auth && !conn.authorized() {
            tracing::info!(peer = %conn.peer, link = %name, ?kind, "AMQP link refused: no valid token yet");
            refuse(
                endpoint,
                unauthorized("put a valid token on $cbs before attaching this link"),
                place,
            );
            continue;
        }
        tracing::info!(peer = %conn.peer, link = %name, ?kind, "AMQP link attached");
        match (kind, endpoint) {
            (LinkKind::CbsRequests, LinkEndpoint::Receiver(r)) => {
                place.spawn(cbs::requests(r, conn.clone()));
            }
            (LinkKind::CbsResponses, LinkEndpoint::Sender(s)) => {
                let rx = conn
                    .cbs_reply_rx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                match rx {
                    Some(rx) => {
                        place.spawn(cbs::responses(s, rx));
                    }
                    None => refuse(
                        LinkEndpoint::Sender(s),
                        link_error(
                            AmqpError::ResourceLocked,
                            "this connection already has a $cbs receiver",
                        ),
                        place,
                    ),
                }
            }
            (LinkKind::CloudToDevice, LinkEndpoint::Receiver(r)) => {
                place.spawn(c2d::receive(r, conn.clone()));
            }
            (LinkKind::Feedback, LinkEndpoint::Sender(s)) => {
                place.spawn(feedback::send(s, conn.clone()));
            }
            (LinkKind::FileNotifications, LinkEndpoint::Sender(s)) => {
                place.spawn(feedback::file_notifications(s, conn.clone()));
            }
            (LinkKind::Events, endpoint) => {
                let source = source.unwrap_or_default();
                refuse(
                    endpoint,
                    redirect::to_event_hubs(&conn.state, &source),
                    place,
                );
            }
            (_, endpoint) => refuse(
                endpoint,
                link_error(AmqpError::NotAllowed, "unexpected link role"),
                place,
            ),
        }
    }
}
