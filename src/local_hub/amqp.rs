//! The AMQP 1.0 service endpoint: CBS, the C2D sender link, the feedback and file-notification
//! receiver links (protocol.md §4).
//!
//! Each connection: TLS first (tokio-rustls, as IoT Hub on 5671: the TLS handshake, then the
//! AMQP header inside), or a WebSocket already terminated by the HTTPS endpoint; then the
//! 8-byte protocol header is read to pick the SASL handshake (`AMQP 3 1 0 0`, see
//! [`amqp_sasl`](super::amqp_sasl)) or none at all (`AMQP 0 1 0 0`, which azure-iothub for Node
//! sends; rhea `lib/connection.js`); then fe2o3-amqp's acceptor runs the connection, and every
//! ATTACH is dispatched here by its address.
//!
//! Authorization: a connection is authorized by a SASL PLAIN policy token or by a CBS
//! put-token (§4.4) of a policy with ServiceConnect, until that token expires. Links other than
//! `$cbs` attached before are refused with `amqp:unauthorized-access`; when the token expires
//! without a newer one, the open links are closed with the same condition.
//!
//! fe2o3-amqp chooses delivery tags itself (the delivery id, 4 bytes) and has no API to send
//! the 16-byte tags IoT Hub uses on feedback messages (C# turns them into a Guid); the official
//! Node and Python clients do not read them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::definitions::{
    AmqpError, Error as AmqpErrorInfo, ErrorCondition, ReceiverSettleMode, Role,
};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, MessageAnnotations, MessageId,
    Outcome, Properties, Source, Target, TargetArchetype,
};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Permission, SasToken};
use crate::local_hub::amqp_sasl::{HubSasl, SaslGrant};
use crate::local_hub::feedback_queue::FeedbackDelivery;
use crate::local_hub::rewind::Rewind;
use crate::local_hub::state::{HubState, random_bytes};
use crate::protocol::amqp_error;
use crate::protocol::amqp_message::{AmqpBodyMessage, id_text, message_from_amqp};
use crate::protocol::{FEEDBACK_CONTENT_TYPE, encode_feedback_batch, parse_c2d_address};

/// The SASL protocol header (OASIS AMQP 1.0 §5.3.1; protocol.md §4.9).
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The AMQP protocol header without a security layer (OASIS AMQP 1.0 §2.2).
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Time a client has to finish TLS and send its protocol header.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The container id in the hub's OPEN.
const CONTAINER_ID: &str = "iothub-local";
/// The message annotation with the feedback batch's time (csharp
/// `MessageSystemPropertyNames.EnqueuedTime`).
const ENQUEUED_TIME: &str = "iothub-enqueuedtime";

/// Accepts AMQP-over-TLS connections until the listener fails.
pub(crate) async fn serve(state: Arc<HubState>, acceptor: TlsAcceptor, listener: TcpListener) {
    crate::local_hub::tls::accept_loop(
        listener,
        acceptor,
        "AMQP",
        HANDSHAKE_TIMEOUT,
        move |tls, peer| run_connection(state.clone(), tls, peer),
    )
    .await
}

/// Runs one AMQP connection over an established stream (TLS, or a WebSocket bridge) until it
/// ends or the hub stops.
pub(crate) async fn run_connection<S>(state: Arc<HubState>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut stopping = state.stopping();
    tokio::select! {
        result = connection(state.clone(), stream, &peer) => {
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
    #[error("session failed: {0}")]
    Session(String),
}

async fn connection<S>(state: Arc<HubState>, mut stream: S, peer: &str) -> Result<(), ConnectionEnd>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ConnectionEnd::Header(e)),
        Err(_) => return Err(ConnectionEnd::HeaderTimeout),
    }
    let stream = Rewind::new(header.to_vec(), stream);
    let (mut connection, grant) = match header {
        SASL_HEADER => {
            let (sasl, slot) = HubSasl::new(state.clone());
            let acceptor = ConnectionAcceptor::builder()
                .container_id(CONTAINER_ID)
                .sasl_acceptor(sasl)
                .build();
            let connection = acceptor
                .accept(stream)
                .await
                .map_err(|e| ConnectionEnd::Open(e.to_string()))?;
            let grant = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            (connection, grant)
        }
        AMQP_HEADER => {
            let connection = ConnectionAcceptor::new(CONTAINER_ID)
                .accept(stream)
                .await
                .map_err(|e| ConnectionEnd::Open(e.to_string()))?;
            (connection, None)
        }
        other => {
            // OASIS AMQP 1.0 §2.2: answer with the header we support, then close.
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
    let (cbs_tx, cbs_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        state,
        peer: peer.to_owned(),
        auth,
        cbs_replies: cbs_tx,
        cbs_reply_rx: Mutex::new(Some(cbs_rx)),
    });
    let result = sessions(&mut connection, &conn).await;
    let _ = connection.close().await;
    result
}

async fn sessions(
    connection: &mut ListenerConnectionHandle,
    conn: &Arc<Conn>,
) -> Result<(), ConnectionEnd> {
    let acceptor = SessionAcceptor::new();
    while let Some(incoming) = connection.next_incoming_session().await {
        let session = acceptor
            .accept_incoming_session(incoming, connection)
            .await
            .map_err(|e| ConnectionEnd::Session(e.to_string()))?;
        tokio::spawn(run_session(session, conn.clone()));
    }
    Ok(())
}

/// One connection's shared state.
struct Conn {
    state: Arc<HubState>,
    peer: String,
    /// Until when the connection is authorized; `None` before any valid token.
    auth: watch::Sender<Option<SystemTime>>,
    /// CBS responses, sent on the client's `$cbs` receiver link.
    cbs_replies: mpsc::UnboundedSender<AmqpMessage<Body<Value>>>,
    cbs_reply_rx: Mutex<Option<mpsc::UnboundedReceiver<AmqpMessage<Body<Value>>>>>,
}

impl Conn {
    fn authorized(&self) -> bool {
        self.auth
            .borrow()
            .is_some_and(|until| until > SystemTime::now())
    }

    /// Records a valid token: authorized until the latest expiry seen.
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
            let Ok(left) = until.duration_since(SystemTime::now()) else {
                return;
            };
            // Re-check at least daily: far expiries need no exact timer.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkKind {
    /// The client's sender to `$cbs`: put-token requests.
    CbsRequests,
    /// The client's receiver from `$cbs`: put-token responses.
    CbsResponses,
    /// The client's sender to `/messages/devicebound`.
    CloudToDevice,
    /// The client's receiver from `/messages/serviceBound/feedback`.
    Feedback,
    /// The client's receiver from `/messages/serviceBound/filenotifications`.
    FileNotifications,
}

/// An address without any `amqps://host[:port]` prefix or trailing `/`, lowercased: clients
/// write `/messages/devicebound`, `amqps://host/messages/devicebound` (uamqp) or
/// `…/deviceBound` (c-sdk) (protocol.md §4.5, §4.6).
fn address_path(address: &str) -> String {
    let lower = address.to_ascii_lowercase();
    let path = match lower
        .strip_prefix("amqps://")
        .or_else(|| lower.strip_prefix("amqp://"))
    {
        Some(rest) => rest.find('/').map_or("", |i| &rest[i..]).to_owned(),
        None => lower,
    };
    path.trim_end_matches('/').to_owned()
}

fn target_address(attach: &Attach) -> Option<&str> {
    match attach.target.as_deref()? {
        TargetArchetype::Target(t) => t.address.as_deref(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn classify(attach: &Attach) -> Option<LinkKind> {
    // `role` is the client's role on the link.
    match attach.role {
        Role::Sender => match address_path(target_address(attach)?).as_str() {
            "$cbs" => Some(LinkKind::CbsRequests),
            "/messages/devicebound" => Some(LinkKind::CloudToDevice),
            _ => None,
        },
        Role::Receiver => {
            let source = attach.source.as_ref()?.address.as_deref()?;
            match address_path(source).as_str() {
                "$cbs" => Some(LinkKind::CbsResponses),
                "/messages/servicebound/feedback" => Some(LinkKind::Feedback),
                "/messages/servicebound/filenotifications" => Some(LinkKind::FileNotifications),
                _ => None,
            }
        }
    }
}

/// fe2o3-amqp refuses a client sender with no source and a client receiver with no target,
/// which rhea (azure-iothub for Node) attaches for `$cbs` and the feedback link (protocol.md
/// §4.4); an empty terminus fills the gap, and the reply still echoes the client's addresses
/// (§4.3: uamqp hangs on a null terminus).
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

fn amqp_error(condition: impl Into<ErrorCondition>, description: &str) -> AmqpErrorInfo {
    AmqpErrorInfo::new(condition.into(), description.to_owned(), None)
}

/// Closes a just-attached link with an error. Spawned: closing waits for the client's DETACH,
/// which must not hold up the session's next ATTACH.
fn refuse(endpoint: LinkEndpoint, error: AmqpErrorInfo) {
    tokio::spawn(async move {
        let _ = match endpoint {
            LinkEndpoint::Sender(s) => s.close_with_error(error).await.map_err(|_| ()),
            LinkEndpoint::Receiver(r) => r.close_with_error(error).await.map_err(|_| ()),
        };
    });
}

async fn run_session(mut session: ListenerSessionHandle, conn: Arc<Conn>) {
    // Clients send unsettled and wait for "accepted, settled" (protocol.md §4.5); uamqp asks
    // for rcv-settle-mode second, which would make our dispositions unsettled, so answer first.
    let links = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build();
    while let Some(attach) = session.next_incoming_attach().await {
        let name = attach.name.clone();
        let kind = classify(&attach);
        let endpoint = match links
            .accept_incoming_attach(fill_termini(attach), &mut session)
            .await
        {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::info!(peer = %conn.peer, link = %name, error = ?e, "AMQP attach failed");
                continue;
            }
        };
        let Some(kind) = kind else {
            tracing::info!(peer = %conn.peer, link = %name, "AMQP link to an unknown address refused");
            refuse(
                endpoint,
                amqp_error(AmqpError::NotFound, "no such node on this hub"),
            );
            continue;
        };
        let needs_auth = !matches!(kind, LinkKind::CbsRequests | LinkKind::CbsResponses);
        if needs_auth && !conn.authorized() {
            tracing::info!(peer = %conn.peer, link = %name, ?kind, "AMQP link refused: no valid token yet");
            refuse(
                endpoint,
                amqp_error(
                    AmqpError::UnauthorizedAccess,
                    "put a valid token on $cbs before attaching this link",
                ),
            );
            continue;
        }
        tracing::info!(peer = %conn.peer, link = %name, ?kind, "AMQP link attached");
        match (kind, endpoint) {
            (LinkKind::CbsRequests, LinkEndpoint::Receiver(r)) => {
                tokio::spawn(cbs_requests(r, conn.clone()));
            }
            (LinkKind::CbsResponses, LinkEndpoint::Sender(s)) => {
                let rx = conn
                    .cbs_reply_rx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                match rx {
                    Some(rx) => {
                        tokio::spawn(cbs_responses(s, rx));
                    }
                    None => refuse(
                        LinkEndpoint::Sender(s),
                        amqp_error(
                            AmqpError::ResourceLocked,
                            "this connection already has a $cbs receiver",
                        ),
                    ),
                }
            }
            (LinkKind::CloudToDevice, LinkEndpoint::Receiver(r)) => {
                tokio::spawn(cloud_to_device(r, conn.clone()));
            }
            (LinkKind::Feedback, LinkEndpoint::Sender(s)) => {
                tokio::spawn(feedback(s, conn.clone()));
            }
            (LinkKind::FileNotifications, LinkEndpoint::Sender(s)) => {
                tokio::spawn(file_notifications(s, conn.clone()));
            }
            (_, endpoint) => refuse(
                endpoint,
                amqp_error(AmqpError::NotAllowed, "unexpected link role"),
            ),
        }
    }
}

// ---- CBS (protocol.md §4.4) ------------------------------------------------------------------

fn text_property(message: &AmqpBodyMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// Checks a put-token request; `Ok` holds the token's expiry, `Err` the status description.
/// The audience (`name`) is not used: Python sends `https://host`, Node the bare `sr`.
fn check_put_token(state: &HubState, request: &AmqpBodyMessage) -> Result<SystemTime, String> {
    if text_property(request, "operation").as_deref() != Some("put-token") {
        return Err("unsupported operation".to_owned());
    }
    let Body::Value(AmqpValue(Value::String(text))) = &request.body else {
        return Err("the body must be the token as a string".to_owned());
    };
    let token: SasToken = text
        .parse()
        .map_err(|_| "the token is not a shared access signature".to_owned())?;
    state
        .authorize_service(&token, Permission::ServiceConnect)
        .map_err(|denied| denied.to_string())?;
    Ok(token.expiry())
}

async fn cbs_requests(mut receiver: Receiver, conn: Arc<Conn>) {
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        let request = delivery.message();
        let (status, description) = match check_put_token(&conn.state, request) {
            Ok(until) => {
                conn.authorize_until(until);
                (200, "OK".to_owned())
            }
            Err(why) => (401, why),
        };
        tracing::info!(peer = %conn.peer, status, description = %description, "CBS put-token");
        let props = request.properties.as_ref();
        // correlation-id: the request's message-id with its AMQP type (ulong from uamqp,
        // string from Node); status-code an AMQP int, which uamqp-c reads with
        // `amqpvalue_get_int` (protocol.md §4.4).
        let reply_props = Properties {
            correlation_id: props.and_then(|p| p.message_id.clone()),
            to: props.and_then(|p| p.reply_to.clone()),
            ..Properties::default()
        };
        let reply = AmqpMessage::builder()
            .properties(reply_props)
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(status))
                    .insert("status-description", SimpleValue::String(description))
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::Null)))
            .build();
        if receiver.accept(&delivery).await.is_err() {
            break;
        }
        if conn.cbs_replies.send(reply).is_err() {
            break;
        }
    }
}

async fn cbs_responses(
    mut sender: Sender,
    mut replies: mpsc::UnboundedReceiver<AmqpMessage<Body<Value>>>,
) {
    while let Some(reply) = replies.recv().await {
        if sender.send(reply).await.is_err() {
            break;
        }
    }
}

// ---- Cloud to device (protocol.md §4.5) -------------------------------------------------------

/// Why a C2D message was rejected: an AMQP condition and a description.
struct Rejection {
    condition: ErrorCondition,
    description: String,
}

impl Rejection {
    fn new(condition: impl Into<ErrorCondition>, description: impl Into<String>) -> Self {
        Rejection {
            condition: condition.into(),
            description: description.into(),
        }
    }
}

/// `com.microsoft:argument-error`, which azure-iothub maps to `ArgumentError`
/// (node-hub `src/amqp_service_errors.ts`).
fn argument_error() -> ErrorCondition {
    amqp_error::condition_from_symbol(amqp_error::ARGUMENT_ERROR)
}

/// The device id of a C2D `to` (`protocol::parse_c2d_address`). Module addresses are
/// recognized but modules have no cloud-to-device queue.
fn device_of(to: &str) -> Result<String, Rejection> {
    let address = parse_c2d_address(to)
        .map_err(|e| Rejection::new(argument_error(), e.detail().to_owned()))?;
    if address.module_id.is_some() {
        return Err(Rejection::new(
            AmqpError::NotFound,
            "modules have no cloud-to-device queue",
        ));
    }
    Ok(address.device_id)
}

fn enqueue(state: &HubState, amqp: &AmqpBodyMessage) -> Result<String, Rejection> {
    let to = amqp
        .properties
        .as_ref()
        .and_then(|p| p.to.as_deref())
        .ok_or_else(|| Rejection::new(argument_error(), "the message has no 'to'"))?;
    let device_id = device_of(to)?;
    let message = message_from_amqp(amqp)
        .map_err(|e| Rejection::new(argument_error(), e.detail().to_owned()))?;
    state.enqueue_c2d(&device_id, message).map_err(|e| {
        Rejection::new(
            amqp_error::error_condition_for(e.kind()),
            e.detail().to_owned(),
        )
    })?;
    Ok(device_id)
}

async fn cloud_to_device(mut receiver: Receiver, conn: Arc<Conn>) {
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => match delivery {
                Ok(delivery) => delivery,
                Err(_) => return,
            },
            _ = conn.lapsed() => {
                close_expired(LinkEndpoint::Receiver(receiver), &conn).await;
                return;
            }
        };
        let amqp = delivery.message();
        let message_id = amqp
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(id_text);
        let settled = match enqueue(&conn.state, amqp) {
            Ok(device_id) => {
                tracing::info!(peer = %conn.peer, device = %device_id, message_id = ?message_id, "AMQP C2D send accepted");
                receiver.accept(&delivery).await
            }
            Err(rejection) => {
                tracing::info!(
                    peer = %conn.peer,
                    message_id = ?message_id,
                    condition = %amqp_error::condition_symbol(&rejection.condition),
                    description = %rejection.description,
                    "AMQP C2D send rejected"
                );
                let error = AmqpErrorInfo::new(rejection.condition, rejection.description, None);
                receiver.reject(&delivery, error).await
            }
        };
        if settled.is_err() {
            return;
        }
    }
}

async fn close_expired(endpoint: LinkEndpoint, conn: &Conn) {
    tracing::info!(peer = %conn.peer, "AMQP token expired: closing the link");
    let error = amqp_error(AmqpError::UnauthorizedAccess, "the token has expired");
    let _ = match endpoint {
        LinkEndpoint::Sender(s) => s.close_with_error(error).await.map_err(|_| ()),
        LinkEndpoint::Receiver(r) => r.close_with_error(error).await.map_err(|_| ()),
    };
}

// ---- Feedback (protocol.md §4.6) --------------------------------------------------------------

/// The hub's name: the first label of its host name (`myhub` of `myhub.azure-devices.net`).
fn hub_name(host_name: &str) -> &str {
    host_name.split('.').next().unwrap_or(host_name)
}

fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    id_text(&MessageId::Uuid(b.into()))
}

/// One feedback batch as IoT Hub sends it: content type, user-id the hub name, annotation
/// `iothub-enqueuedtime`, the JSON array in one data section (protocol.md §4.6; csharp
/// `AmqpFeedbackReceiver.cs`, `CommonConstants.BatchedFeedbackContentType`).
fn feedback_message(state: &HubState, delivery: &FeedbackDelivery) -> AmqpMessage<Body<Value>> {
    let enqueued_ms = delivery
        .enqueued_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let properties = Properties {
        message_id: Some(MessageId::String(uuid_v4())),
        user_id: Some(Binary::from(
            hub_name(&state.settings.host_name).as_bytes().to_vec(),
        )),
        content_type: Some(Symbol::from(FEEDBACK_CONTENT_TYPE)),
        ..Properties::default()
    };
    let body = encode_feedback_batch(&delivery.records);
    AmqpMessage::builder()
        .properties(properties)
        .message_annotations(
            MessageAnnotations::builder()
                .insert(
                    OwnedKey::Symbol(Symbol::from(ENQUEUED_TIME)),
                    Value::Timestamp(Timestamp::from_milliseconds(enqueued_ms)),
                )
                .build(),
        )
        .body(Body::Data(
            vec![fe2o3_amqp_types::messaging::Data(Binary::from(body))].into(),
        ))
        .build()
}

/// Waits for the next ready batch; `None` when the link detached or the token lapsed (then
/// `lapsed` says which).
async fn next_feedback(sender: &mut Sender, conn: &Conn) -> Result<FeedbackDelivery, bool> {
    loop {
        let ready = conn.state.feedback_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        if let Some(delivery) = conn.state.lock_feedback() {
            return Ok(delivery);
        }
        tokio::select! {
            _ = ready => {}
            _ = sender.on_detach() => return Err(false),
            _ = conn.lapsed() => return Err(true),
        }
    }
}

async fn feedback(mut sender: Sender, conn: Arc<Conn>) {
    loop {
        let delivery = match next_feedback(&mut sender, &conn).await {
            Ok(delivery) => delivery,
            Err(true) => {
                close_expired(LinkEndpoint::Sender(sender), &conn).await;
                return;
            }
            Err(false) => {
                let _ = sender.close().await;
                return;
            }
        };
        let message = feedback_message(&conn.state, &delivery);
        let records = delivery.records.len();
        tracing::info!(peer = %conn.peer, records, "AMQP feedback batch sent");
        let outcome = tokio::select! {
            outcome = sender.send(message) => outcome,
            _ = conn.lapsed() => {
                conn.state.release_feedback(delivery.lock);
                close_expired(LinkEndpoint::Sender(sender), &conn).await;
                return;
            }
        };
        match outcome {
            Ok(Outcome::Accepted(_)) => {
                tracing::info!(peer = %conn.peer, records, "AMQP feedback batch accepted");
                conn.state.complete_feedback(delivery.lock);
            }
            Ok(Outcome::Rejected(_)) => {
                // Rejected = dead-lettered: the batch leaves the queue.
                tracing::info!(peer = %conn.peer, records, "AMQP feedback batch rejected");
                conn.state.complete_feedback(delivery.lock);
            }
            Ok(other) => {
                tracing::info!(peer = %conn.peer, records, outcome = ?other, "AMQP feedback batch released");
                conn.state.release_feedback(delivery.lock);
            }
            Err(e) => {
                tracing::info!(peer = %conn.peer, records, error = ?e, "AMQP feedback link lost; batch released");
                conn.state.release_feedback(delivery.lock);
                return;
            }
        }
    }
}

/// The file-notification link attaches; there is nothing to send until file upload exists.
async fn file_notifications(mut sender: Sender, conn: Arc<Conn>) {
    tokio::select! {
        _ = sender.on_detach() => { let _ = sender.close().await; }
        _ = conn.lapsed() => close_expired(LinkEndpoint::Sender(sender), &conn).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_scheme_host_and_case() {
        assert_eq!(
            address_path("amqps://localhost:5671/messages/deviceBound"),
            "/messages/devicebound"
        );
        assert_eq!(
            address_path("/messages/serviceBound/feedback/"),
            "/messages/servicebound/feedback"
        );
        assert_eq!(address_path("$cbs"), "$cbs");
    }

    #[test]
    fn device_ids_are_decoded_and_segments_case_insensitive() {
        assert_eq!(
            device_of("/devices/dev%201/messages/devicebound").ok(),
            Some("dev 1".to_owned())
        );
        assert_eq!(
            device_of("/Devices/d/Messages/deviceBound").ok(),
            Some("d".to_owned())
        );
        assert!(device_of("/devices//messages/devicebound").is_err());
        assert!(device_of("/devices/d/messages/events").is_err());
        assert!(device_of("/devices/d/modules/m/messages/devicebound").is_err());
    }
}
