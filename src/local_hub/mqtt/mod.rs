//! The MQTT 3.1.1 endpoint for devices and modules: one task per connection.
//!
//! The rules are IoT Hub's (Microsoft Learn, "Communicate with an IoT hub using the MQTT
//! protocol", `iot-mqtt-connect-to-iot-hub.md`): the user name is
//! `{host}/{device}[/{module}]/?{query}` with any api-version, the client id is `{device}` or
//! `{device}/{module}` and must name the same identity, the password is a SAS token for that
//! identity; CONNACK 5 (not authorized) on any failure. The connection is closed at 1.5 ×
//! keep-alive without traffic, on a QoS 2 PUBLISH, when a newer connection for the same
//! identity arrives, when the identity is deleted or its device disabled, and when the token
//! expires. A device or module may subscribe only to its own topics; C2D is for devices only.
//!
//! Packets go out from one place, the session task, which takes them from the wire (answers)
//! and from its outbox (what the rest of the hub pushes: see `state::sessions`).

mod session;
mod wire;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::auth::{AccessDenied, HostAndPort, SasToken};
use crate::local_hub::limits::{ConnectionGate, ConnectionLimits};
use crate::local_hub::state::{Credential, DeviceStatus, HubState, Identity};

use session::Session;
use wire::{First, Wire};

/// How far away a certificate session's "token expiry" is: never, in practice.
const NO_TOKEN_EXPIRY: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Time a client has to send CONNECT once TLS is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts MQTT-over-TLS connections until the listener fails, within `limits`' connection
/// bounds (per listener and per source address) and TLS handshake deadline.
pub(crate) async fn serve(
    state: Arc<HubState>,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    limits: ConnectionLimits,
) {
    crate::local_hub::tls::accept_loop_bounded(
        listener,
        acceptor,
        "MQTT",
        ConnectionGate::new(&limits),
        limits.handshake_timeout,
        move |tls, peer| {
            let certificates = crate::local_hub::tls::peer_certificates(&tls);
            run_session_with_certificates(state.clone(), tls, peer, certificates)
        },
    )
    .await
}

/// The identity a user name names: `{host}/{device}[/{module}]/?{query}`, with the host
/// checked against the hub's.
fn parse_username(state: &HubState, username: &str) -> Result<Identity, &'static str> {
    let (path, _query) = username.split_once('?').unwrap_or((username, ""));
    let mut parts = path.trim_end_matches('/').split('/');
    let host = parts.next().unwrap_or_default();
    let device_id = parts
        .next()
        .filter(|d| !d.is_empty())
        .ok_or("the user name names no device")?;
    let module_id = parts.next().filter(|m| !m.is_empty()).map(str::to_owned);
    if parts.next().is_some() {
        return Err("the user name has too many segments");
    }
    let same_hub = HostAndPort::parse(host)
        .is_ok_and(|h| h.host().eq_ignore_ascii_case(&state.settings.host_name));
    if !same_hub {
        return Err("the user name names another hub");
    }
    Ok(Identity {
        device_id: device_id.to_owned(),
        module_id,
    })
}

/// Checks a CONNECT against the registry; `Err` says why it is refused with CONNACK 5. The
/// token is `None` for a device that authenticated with its TLS client certificate.
fn authorize(
    state: &HubState,
    connect: &Connect,
    certificates: Option<&[CertificateDer<'static>]>,
) -> Result<(Identity, Option<SasToken>), Cow<'static, str>> {
    let login = connect
        .login
        .as_ref()
        .ok_or("no user name: IoT Hub's user name is {host}/{device}/?api-version=...")?;
    let identity = parse_username(state, &login.username)?;
    if connect.client_id != identity.to_string() {
        return Err("the client id does not match the user name".into());
    }
    if login.password.is_empty() {
        // X.509: user name, no password (Microsoft Learn, "Communicate with an IoT hub using
        // the MQTT protocol": "set the username but not the password").
        state.authorize_certificate(&identity, certificates.unwrap_or_default())?;
        return Ok((identity, None));
    }
    // An X.509 device has no keys in the registry (its symmetricKey fields are null), so IoT
    // Hub cannot check a SAS token for it and answers 401003 IotHubUnauthorized (Microsoft
    // Learn, "Troubleshoot 401003 IoTHubUnauthorized": "Authentication failed for this
    // device"). A hub-level policy token is refused too here, which is stricter than a hub
    // that accepts DeviceConnect policies for any device.
    if state
        .device_authentication(&identity)
        .is_some_and(|kind| kind.is_x509())
    {
        return Err(
            "401003 IotHubUnauthorized: the device is registered with X.509 \
             authentication: it must connect with its certificate and no password"
                .into(),
        );
    }
    let token: SasToken = login
        .password
        .parse()
        .map_err(|_| "the password is not a SAS token")?;
    state
        .authorize_device(&token, &identity.device_id, identity.module_id.as_deref())
        .map_err(|denied| token_refusal(state, &identity, &denied))?;
    Ok((identity, Some(token)))
}

/// Why a device's token is refused, for the hub's log. MQTT 3.1.1 has only CONNACK 4 and 5 to
/// tell the device, so the device cannot learn which; IoT Hub's REST and AMQP answers tell
/// apart an unknown device (404001 DeviceNotFound), a disabled one and a bad token (401003
/// IotHubUnauthorized: Microsoft Learn, "Troubleshoot 401003 IoTHubUnauthorized").
fn token_refusal(
    state: &HubState,
    identity: &Identity,
    denied: &AccessDenied,
) -> Cow<'static, str> {
    let device_id = &identity.device_id;
    match state.get_device(device_id) {
        None => format!("device '{device_id}' is not registered on this hub").into(),
        Some(device) if device.status == DeviceStatus::Disabled => {
            format!("device '{device_id}' is disabled").into()
        }
        Some(_) => match &identity.module_id {
            Some(module_id) if state.get_module(device_id, module_id).is_none() => {
                format!("module '{module_id}' is not registered on device '{device_id}'").into()
            }
            _ => match denied {
                AccessDenied::BadSignature => "wrong key: the token's signature matches none of \
                     the identity's keys nor a policy with DeviceConnect"
                    .into(),
                other => format!("the token does not grant this identity: {other}").into(),
            },
        },
    }
}

/// Refuses a connection with CONNACK 5 (not authorized).
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(wire: &mut Wire<S>) {
    let refuse = ConnAck::new(ConnectReturnCode::NotAuthorized, false);
    let _ = wire.send(Packet::ConnAck(refuse)).await;
}

/// Serves one connection from CONNECT to close, without a client certificate.
#[cfg(test)]
pub(crate) async fn run_session<S>(state: Arc<HubState>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    run_session_with_certificates(state, stream, peer, None).await
}

/// Serves one connection whose TLS handshake presented `certificates` (leaf first).
pub(crate) async fn run_session_with_certificates<S>(
    state: Arc<HubState>,
    stream: S,
    peer: String,
    certificates: Option<Vec<CertificateDer<'static>>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut wire = Wire::new(stream);
    let connect = match timeout(CONNECT_TIMEOUT, wire.first_packet()).await {
        Ok(Ok(First::Packet(Packet::Connect(connect)))) => connect,
        Ok(Ok(First::UnsupportedLevel(level))) => {
            // MQTT 3.1.1 section 3.2.2.3: return code 1, "unacceptable protocol level"; IoT Hub
            // speaks 3.1.1 only on this port.
            tracing::info!(%peer, level, "MQTT connect refused: unsupported protocol level");
            let refuse = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
            let _ = wire.send(Packet::ConnAck(refuse)).await;
            return;
        }
        Ok(Ok(_)) => {
            tracing::debug!(%peer, "the first packet was not CONNECT");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, reason = %e, "connection ended before CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    let (identity, token) = match authorize(&state, &connect, certificates.as_deref()) {
        Ok(ok) => ok,
        Err(reason) => {
            tracing::info!(%peer, client_id = %connect.client_id, %reason, "MQTT connect refused");
            refuse(&mut wire).await;
            return;
        }
    };
    let Some(ticket) = state.open_session(&identity, connect.clean_session) else {
        // Deleted between the check and now.
        refuse(&mut wire).await;
        return;
    };
    let accepted = ConnAck::new(ConnectReturnCode::Success, ticket.session_present);
    if wire.send(Packet::ConnAck(accepted)).await.is_err() {
        state.close_session(&identity, ticket.id, []);
        return;
    }
    tracing::info!(%peer, %identity, keep_alive = connect.keep_alive, "MQTT connected");

    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    // A certificate session has no token to expire (IoT Hub checks the certificate's dates
    // when the device connects).
    let token_expiry = match &token {
        Some(token) => state.clock.instant_at(token.expiry()),
        None => tokio::time::Instant::now() + NO_TOKEN_EXPIRY,
    };
    let credential = if token.is_some() {
        Credential::Sas
    } else {
        Credential::X509
    };
    let mut session =
        Session::new(state.clone(), identity.clone(), ticket.id).with_credential(credential);
    let mut outbox = ticket.outbox;
    let end = session
        .run(
            &mut wire,
            &ticket.kick,
            &mut outbox,
            keep_alive,
            token_expiry,
        )
        .await;
    state.close_session(&identity, ticket.id, session.in_flight_c2d());
    tracing::info!(%peer, %identity, reason = %end, "MQTT disconnected");
}

#[cfg(test)]
mod tests;
