//! Bounds of the hub's AMQP endpoints (issue 17): the Event Hubs-compatible listeners have the
//! same connection limits and deadlines as the other listeners, and each AMQP connection has
//! bounded links and message sizes. Past a bound the offending connection or link is closed
//! with the protocol's error; other connections are still served.
#![cfg(feature = "local-hub")]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{WAIT, amqp_connection, closed_by_hub, tls_from, tls_stream};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, Role};
use fe2o3_amqp::types::messaging::{Source, Target};
use fe2o3_amqp::types::performatives::{Attach, Begin, Open, Transfer};
use fe2o3_amqp::{Connection, Sender, Session};
use futures_util::StreamExt;
use iothub::local_hub::{ConnectionLimits, LocalHub};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";

/// A plain TCP connection to `port` from the source address `from`.
async fn tcp_from(from: Ipv4Addr, port: u16) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.ok()
}

/// An ANONYMOUS AMQP connection to the Event Hubs emulator listener, as the Event Hubs SDKs
/// open it, with a session.
async fn event_hubs_open(hub: &LocalHub) -> Result<ConnectionHandle<()>, String> {
    let tcp = TcpStream::connect(hub.event_hubs_emulator_addr())
        .await
        .map_err(|e| e.to_string())?;
    let mut connection = timeout(
        WAIT,
        Connection::builder()
            .container_id("bounds-tests")
            .hostname("localhost")
            .scheme("amqp")
            .sasl_profile(SaslProfile::Anonymous)
            .open_with_stream(tcp),
    )
    .await
    .map_err(|_| "no OPEN in time".to_owned())?
    .map_err(|e| e.to_string())?;
    let session = timeout(WAIT, Session::begin(&mut connection))
        .await
        .map_err(|_| "no BEGIN in time".to_owned())?
        .map_err(|e| e.to_string())?;
    drop(session);
    Ok(connection)
}

/// The condition the hub closed `connection` with.
async fn closed_with(connection: &mut ConnectionHandle<()>) -> Option<ErrorCondition> {
    match timeout(WAIT, connection.on_close()).await {
        Ok(Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e))) => Some(e.condition),
        Ok(other) => panic!("closed without an error: {other:?}"),
        Err(_) => panic!("the hub did not close the connection in time"),
    }
}

#[tokio::test]
async fn idle_event_hubs_connections_are_bounded_per_address() {
    let hub = LocalHub::builder()
        .connection_limits(
            ConnectionLimits::new()
                .with_max_connections(100)
                .with_max_connections_per_address(20)
                .with_handshake_timeout(Duration::from_secs(30)),
        )
        .start()
        .await
        .unwrap();
    let hostile = Ipv4Addr::new(127, 0, 0, 2);
    // 500 plain TCP connections from one address that send the AMQP header and then nothing:
    // the endpoint answers at most 20 of them and closes the rest at once.
    let port = hub.event_hubs_emulator_addr().port();
    let held: Vec<_> = futures_util::stream::iter(0..500)
        .map(|_| async move {
            let mut tcp = tcp_from(hostile, port).await?;
            tcp.write_all(AMQP_HEADER).await.ok()?;
            let mut header = [0u8; 8];
            timeout(WAIT, tcp.read_exact(&mut header))
                .await
                .ok()?
                .ok()?;
            Some(tcp)
        })
        .buffer_unordered(64)
        .filter_map(|tcp| async move { tcp })
        .collect()
        .await;
    assert!(
        !held.is_empty() && held.len() <= 20,
        "{} idle Event Hubs connections were admitted from one address (bound 20)",
        held.len()
    );
    // The TLS listener has bounds of its own.
    let port = hub.event_hubs_addr().port();
    let held_tls: Vec<_> = futures_util::stream::iter(0..200)
        .map(|_| {
            let hub = &hub;
            async move { tls_from(hub, hostile, port).await }
        })
        .buffer_unordered(64)
        .filter_map(|tls| async move { tls })
        .collect()
        .await;
    assert!(
        !held_tls.is_empty() && held_tls.len() <= 20,
        "{} idle Event Hubs TLS connections were admitted from one address (bound 20)",
        held_tls.len()
    );
    // A consumer on another address opens a connection and a session at once.
    event_hubs_open(&hub)
        .await
        .expect("a healthy consumer is served");
    drop((held, held_tls));
}

#[tokio::test]
async fn silent_event_hubs_connections_are_closed_at_their_deadlines() {
    let hub = LocalHub::builder()
        .connection_limits(
            ConnectionLimits::new()
                .with_handshake_timeout(Duration::from_millis(500))
                .with_amqp_auth_timeout(Duration::from_millis(500)),
        )
        .start()
        .await
        .unwrap();
    let here = Ipv4Addr::LOCALHOST;
    let port = hub.event_hubs_emulator_addr().port();
    // Nothing at all, then the header only.
    let mut tcp = tcp_from(here, port).await.unwrap();
    assert!(closed_by_hub(&mut tcp).await, "plain TCP, no header");
    let mut tcp = tcp_from(here, port).await.unwrap();
    tcp.write_all(AMQP_HEADER).await.unwrap();
    assert!(closed_by_hub(&mut tcp).await, "plain TCP, header only");
    // TLS only.
    let mut tls = tls_from(&hub, here, hub.event_hubs_addr().port())
        .await
        .unwrap();
    assert!(closed_by_hub(&mut tls).await, "TLS only");
    // Open, and never a token: closed with amqp:unauthorized-access.
    let mut connection = event_hubs_open(&hub).await.unwrap();
    assert_eq!(
        closed_with(&mut connection).await,
        Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess))
    );
}

#[tokio::test]
async fn too_many_sending_links_close_the_connection_with_resource_limit_exceeded() {
    let hub = LocalHub::builder().start().await.unwrap();
    let mut connection = amqp_connection(&hub, "many-links").await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    // `$cbs` senders, each of which may hold a partly received put-token: 8 are allowed.
    let mut senders = Vec::new();
    for i in 0..9 {
        match timeout(
            WAIT,
            Sender::attach(&mut session, format!("cbs-{i}"), "$cbs"),
        )
        .await
        {
            Ok(Ok(sender)) => senders.push(sender),
            _ => break,
        }
    }
    assert_eq!(
        closed_with(&mut connection).await,
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
    );
    assert!(senders.len() <= 9);
    // Another connection is served.
    let registry = iothub::service::RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .unwrap();
    hub.create_device("dev1").unwrap();
    timeout(
        WAIT,
        registry.send_c2d_message("dev1", iothub::Message::new("served")),
    )
    .await
    .expect("the send finished in time")
    .expect("the hub took the C2D message");
}

/// Writes one AMQP frame on channel 0: `performative`, then `payload`.
async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    performative: &impl Serialize,
    payload: &[u8],
) {
    let body = serde_amqp::to_vec(performative).unwrap();
    let size = 8 + body.len() + payload.len();
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.extend_from_slice(&[2, 0, 0, 0]);
    frame.extend_from_slice(&body);
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
}

/// Reads frames until one whose performative has descriptor `code` (OASIS AMQP 1.0 part 2.7;
/// fe2o3 writes descriptors as small ulongs) and returns that frame's body; `None` when the
/// connection ends first.
async fn frame_with<S: AsyncRead + Unpin>(stream: &mut S, code: u8) -> Option<Vec<u8>> {
    loop {
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).await.ok()?;
        if &size == b"AMQP" {
            let mut rest = [0u8; 4];
            stream.read_exact(&mut rest).await.ok()?;
            continue;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(size) as usize - 4];
        stream.read_exact(&mut frame).await.ok()?;
        let body = frame.split_off(usize::from(frame[0]) * 4 - 4);
        if body.starts_with(&[0x00, 0x53, code]) {
            return Some(body);
        }
    }
}

const ATTACH: u8 = 0x12;
const DETACH: u8 = 0x16;

/// A sender link named `name` to `$cbs` on a raw connection: OPEN, BEGIN, ATTACH, and the
/// hub's ATTACH back.
async fn raw_cbs_sender<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    stream.write_all(AMQP_HEADER).await.unwrap();
    let open = Open {
        container_id: "raw".into(),
        hostname: Some("localhost".into()),
        max_frame_size: 65_536.into(),
        channel_max: 0.into(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    write_frame(stream, &open, &[]).await;
    let begin = Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 1000,
        outgoing_window: 1000,
        handle_max: 10.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    write_frame(stream, &begin, &[]).await;
    let attach = Attach {
        name: "big".into(),
        handle: 0.into(),
        role: Role::Sender,
        snd_settle_mode: Default::default(),
        rcv_settle_mode: Default::default(),
        source: Some(Box::new(Source::builder().address("raw").build())),
        target: Some(Box::new(Target::builder().address("$cbs").build().into())),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    write_frame(stream, &attach, &[]).await;
    let attached = timeout(WAIT, frame_with(stream, ATTACH)).await.unwrap();
    assert!(attached.is_some(), "the hub attached the $cbs link");
}

/// Sends `frames` transfers of `chunk` bytes each of one delivery that is never completed
/// (`more` set on every one): the bytes a receiver holds until the delivery ends.
async fn raw_unfinished_delivery<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frames: usize,
    chunk: usize,
) {
    for _ in 0..frames {
        let transfer = Transfer {
            handle: 0.into(),
            delivery_id: Some(0),
            delivery_tag: Some(vec![1u8].into()),
            message_format: Some(0),
            settled: Some(false),
            more: true,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        write_frame(stream, &transfer, &vec![0x41; chunk]).await;
    }
}

#[tokio::test]
async fn an_oversize_request_detaches_its_link_with_message_size_exceeded() {
    let hub = LocalHub::builder().start().await.unwrap();
    // The service endpoint (TLS) and the Event Hubs endpoint (plain TCP): a put-token that
    // is never finished, 80 KiB in five transfers so far, over the 64 KiB of a request link.
    let mut tls = tls_stream(&hub, hub.amqp_addr().port()).await;
    raw_cbs_sender(&mut tls).await;
    raw_unfinished_delivery(&mut tls, 5, 16 * 1024).await;
    let detach = timeout(WAIT, frame_with(&mut tls, DETACH))
        .await
        .expect("a DETACH in time")
        .expect("a DETACH before the connection ended");
    let needle = b"amqp:link:message-size-exceeded";
    assert!(
        detach.windows(needle.len()).any(|w| w == needle),
        "DETACH {detach:02x?}"
    );

    let mut tcp = TcpStream::connect(hub.event_hubs_emulator_addr())
        .await
        .unwrap();
    raw_cbs_sender(&mut tcp).await;
    raw_unfinished_delivery(&mut tcp, 5, 16 * 1024).await;
    let detach = timeout(WAIT, frame_with(&mut tcp, DETACH))
        .await
        .expect("a DETACH in time")
        .expect("a DETACH before the connection ended");
    assert!(
        detach.windows(needle.len()).any(|w| w == needle),
        "DETACH {detach:02x?}"
    );
    // Other connections are served.
    event_hubs_open(&hub).await.expect("served");
}

#[tokio::test]
async fn an_oversize_frame_closes_the_connection() {
    let hub = LocalHub::builder().start().await.unwrap();
    for port in [hub.amqp_addr().port(), hub.event_hubs_addr().port()] {
        let mut tls = tls_stream(&hub, port).await;
        raw_cbs_sender(&mut tls).await;
        // A frame header saying 1 MiB, over the 256 KiB the hub advertised.
        let mut header = (1024u32 * 1024).to_be_bytes().to_vec();
        header.extend_from_slice(&[2, 0, 0, 0]);
        tls.write_all(&header).await.unwrap();
        tls.write_all(&[0u8; 1024]).await.unwrap();
        tls.flush().await.unwrap();
        assert!(closed_by_hub(&mut tls).await, "port {port}");
    }
    event_hubs_open(&hub).await.expect("served");
}
