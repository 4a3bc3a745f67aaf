//! Hardening of the local hub against hostile and idle peers (issue 17): bad bytes never
//! panic a hub task, unsupported MQTT levels get CONNACK 0x01, idle connections are bounded.
//! Each test also checks that a healthy device and back end are still served.
#![cfg(feature = "local-hub")]

mod common;

use std::sync::{Mutex, Once};

use common::{RawClient, WAIT, amqp_connection, closed_by_hub, tls_from, tls_stream};
use iothub::Message;
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Every panic message seen in this test process (a hub task that panics is caught by Tokio,
/// so the hook is the only witness).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.lock().unwrap().push(info.to_string());
            previous(info);
        }));
    });
}

fn panics() -> Vec<String> {
    PANICS.lock().unwrap().clone()
}

/// A device connects over MQTT and gets a C2D message that a back end sends over AMQP.
async fn healthy_device_and_back_end(hub: &LocalHub, device_id: &str) {
    let cs = match hub.device_connection_string(device_id) {
        Some(cs) => cs,
        None => hub.create_device(device_id).unwrap(),
    };
    let (mut device, connack) = RawClient::connect(hub, &cs).await;
    let Packet::ConnAck(connack) = connack else {
        panic!("expected CONNACK, got {connack:?}")
    };
    assert_eq!(connack.code, ConnectReturnCode::Success);
    device
        .send(Packet::Subscribe(Subscribe::new(
            format!("devices/{device_id}/messages/devicebound/#"),
            QoS::AtLeastOnce,
        )))
        .await;
    assert!(matches!(device.recv().await, Packet::SubAck(_)));
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .unwrap();
    timeout(
        WAIT,
        registry.send_c2d_message(device_id, Message::new(b"still served".to_vec())),
    )
    .await
    .expect("the send finished in time")
    .expect("the hub took the C2D message");
    match device.recv().await {
        Packet::Publish(p) => {
            assert_eq!(&p.payload[..], b"still served");
            device
                .send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
                .await;
        }
        other => panic!("expected the C2D PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn short_amqp_frames_close_the_connection_without_a_panic() {
    record_panics();
    let hub = LocalHub::builder().start().await.unwrap();
    for header in [*b"AMQP\x00\x01\x00\x00", *b"AMQP\x03\x01\x00\x00"] {
        for size in 4u32..8 {
            let mut tls = tls_stream(&hub, hub.amqp_addr().port()).await;
            let mut bytes = header.to_vec();
            bytes.extend_from_slice(&size.to_be_bytes());
            bytes.resize(8 + size as usize, 0);
            tls.write_all(&bytes).await.unwrap();
            tls.flush().await.unwrap();
            // The hub answers with its header (and SASL mechanisms), then closes.
            let mut sink = Vec::new();
            let read = timeout(WAIT, tls.read_to_end(&mut sink))
                .await
                .expect("the hub closes the connection");
            let _ = read;
        }
    }
    healthy_device_and_back_end(&hub, "healthy").await;
    let seen = panics();
    assert!(seen.is_empty(), "hub tasks panicked: {seen:?}");
}

#[tokio::test]
async fn short_amqp_frames_on_the_event_hubs_endpoint_close_without_a_panic() {
    record_panics();
    let hub = LocalHub::builder().start().await.unwrap();
    for header in [*b"AMQP\x00\x01\x00\x00", *b"AMQP\x03\x01\x00\x00"] {
        for size in 4u32..8 {
            // The emulator form of the endpoint: plain TCP.
            let mut tcp = tokio::net::TcpStream::connect(hub.event_hubs_emulator_addr())
                .await
                .unwrap();
            let mut bytes = header.to_vec();
            bytes.extend_from_slice(&size.to_be_bytes());
            bytes.resize(8 + size as usize, 0);
            tcp.write_all(&bytes).await.unwrap();
            let mut sink = Vec::new();
            let read = timeout(WAIT, tcp.read_to_end(&mut sink))
                .await
                .expect("the endpoint closes the connection");
            let _ = read;
        }
    }
    healthy_device_and_back_end(&hub, "healthy").await;
    let seen = panics();
    assert!(seen.is_empty(), "endpoint tasks panicked: {seen:?}");
}

/// A CONNECT as an MQTT 3.1 (`MQIsdp`, level 3), 3.1.1-named level 3, or MQTT 5 client writes
/// it (MQTT 5 adds a property length after the keep-alive), for device `dev`.
fn connect_bytes(name: &str, level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.push(level);
    body.push(0x02); // clean session
    body.extend_from_slice(&60u16.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&3u16.to_be_bytes());
    body.extend_from_slice(b"dev");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn mqtt_levels_other_than_4_get_connack_1() {
    let hub = LocalHub::builder().start().await.unwrap();
    for (name, level) in [("MQIsdp", 3), ("MQTT", 3), ("MQTT", 5)] {
        let mut tls = tls_stream(&hub, hub.mqtt_addr().port()).await;
        tls.write_all(&connect_bytes(name, level)).await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = Vec::new();
        timeout(WAIT, tls.read_to_end(&mut answer))
            .await
            .expect("the hub answers and closes")
            .ok();
        // CONNACK, remaining length 2, no session, return code 1 (MQTT 3.1.1 section 3.2.2.3).
        assert_eq!(answer, [0x20, 0x02, 0x00, 0x01], "{name} level {level}");
    }
    healthy_device_and_back_end(&hub, "healthy").await;
}

#[tokio::test]
async fn idle_amqp_connections_are_bounded_per_address_and_timed_out() {
    use futures_util::StreamExt;
    use iothub::local_hub::ConnectionLimits;
    use std::time::Duration;

    let hub = LocalHub::builder()
        .connection_limits(
            ConnectionLimits::new()
                .with_max_connections(100)
                .with_max_connections_per_address(20)
                .with_handshake_timeout(Duration::from_secs(20))
                .with_amqp_auth_timeout(Duration::from_secs(20)),
        )
        .start()
        .await
        .unwrap();
    let hostile = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let port = hub.amqp_addr().port();
    // 2,000 connections from one address that send the AMQP header and then nothing.
    let held: Vec<_> = futures_util::stream::iter(0..2000)
        .map(|_| {
            let hub = &hub;
            async move {
                let mut tls = tls_from(hub, hostile, port).await?;
                tls.write_all(b"AMQP\x00\x01\x00\x00").await.ok()?;
                tls.flush().await.ok()?;
                let mut header = [0u8; 8];
                timeout(WAIT, tls.read_exact(&mut header))
                    .await
                    .ok()?
                    .ok()?;
                Some(tls)
            }
        })
        .buffer_unordered(64)
        .filter_map(|tls| async move { tls })
        .collect()
        .await;
    assert!(
        !held.is_empty() && held.len() <= 20,
        "{} idle connections were admitted from one address (bound 20)",
        held.len()
    );
    // Another address is served at once (device over MQTT, back end over AMQP).
    healthy_device_and_back_end(&hub, "healthy").await;
    drop(held);
}

#[tokio::test]
async fn silent_connections_are_closed_at_their_deadlines() {
    use iothub::local_hub::ConnectionLimits;
    use std::time::Duration;

    let hub = LocalHub::builder()
        .connection_limits(
            ConnectionLimits::new()
                .with_handshake_timeout(Duration::from_millis(500))
                .with_amqp_auth_timeout(Duration::from_millis(500))
                .with_https_idle_timeout(Duration::from_millis(500)),
        )
        .start()
        .await
        .unwrap();
    let here = std::net::Ipv4Addr::LOCALHOST;
    // AMQP: header and OPEN, then no token.
    let tls = tls_from(&hub, here, hub.amqp_addr().port()).await.unwrap();
    let opened = timeout(
        WAIT,
        fe2o3_amqp::Connection::builder()
            .container_id("silent")
            .hostname("localhost")
            .scheme("amqp")
            .open_with_stream(tls),
    )
    .await
    .unwrap();
    let mut connection = opened.expect("the hub opens the connection");
    let closed = timeout(WAIT, connection.on_close()).await;
    assert!(
        closed.is_ok(),
        "the hub closed the tokenless AMQP connection"
    );
    // AMQP: header only.
    let mut tls = tls_from(&hub, here, hub.amqp_addr().port()).await.unwrap();
    tls.write_all(b"AMQP\x00\x01\x00\x00").await.unwrap();
    assert!(closed_by_hub(&mut tls).await, "AMQP after the header");
    // AMQP: TLS only.
    let mut tls = tls_from(&hub, here, hub.amqp_addr().port()).await.unwrap();
    assert!(closed_by_hub(&mut tls).await, "AMQP after TLS");
    // HTTPS: TLS only.
    let mut tls = tls_from(&hub, here, hub.https_addr().port()).await.unwrap();
    assert!(closed_by_hub(&mut tls).await, "HTTPS after TLS");
    healthy_device_and_back_end(&hub, "healthy").await;
}

#[tokio::test]
async fn a_cbs_flood_with_unread_replies_closes_its_connection() {
    use fe2o3_amqp::types::messaging::{ApplicationProperties, Message as AmqpMessage, Properties};
    use fe2o3_amqp::types::primitives::SimpleValue;
    use fe2o3_amqp::{Sender, Session};

    let hub = LocalHub::builder().start().await.unwrap();
    let mut connection = amqp_connection(&hub, "flood").await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    // A `$cbs` sender and no `$cbs` receiver: no reply is ever read.
    let mut requests = Sender::attach(&mut session, "$cbs-sender", "$cbs")
        .await
        .unwrap();
    let mut sent = 0;
    let refused = timeout(WAIT, async {
        for i in 0..1000u64 {
            let request = AmqpMessage::builder()
                .properties(Properties {
                    message_id: Some(i.into()),
                    reply_to: Some("cbs".into()),
                    ..Properties::default()
                })
                .application_properties(
                    ApplicationProperties::builder()
                        .insert("operation", SimpleValue::String("put-token".into()))
                        .insert("name", SimpleValue::String("localhost".into()))
                        .build(),
                )
                .value("SharedAccessSignature sr=localhost&sig=x&se=1&skn=nobody".to_owned())
                .build();
            if requests.send(request).await.is_err() {
                return true;
            }
            sent += 1;
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(
        refused,
        "the hub took {sent} put-tokens whose replies were never read"
    );
    assert!(sent <= 100, "{sent} put-tokens before the close");
    healthy_device_and_back_end(&hub, "healthy").await;
}

/// A TCP proxy to `target`; aborting the returned task cuts every connection through it.
async fn cuttable_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                let mut hub = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut hub).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_cut_feedback_connection_releases_its_batch_at_once() {
    use iothub::Ack;
    use std::time::Duration;

    let hub = LocalHub::builder()
        .feedback_flush_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let (mut device, _) = RawClient::connect(&hub, &cs).await;
    device
        .send(Packet::Subscribe(Subscribe::new(
            "devices/dev1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )))
        .await;
    assert!(matches!(device.recv().await, Packet::SubAck(_)));
    hub.enqueue_c2d(
        "dev1",
        Message::new("x").with_message_id("m1").with_ack(Ack::Full),
    )
    .unwrap();
    let Packet::Publish(publish) = device.recv().await else {
        panic!("expected the C2D PUBLISH")
    };
    device
        .send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(
            publish.pkid,
        )))
        .await;

    let (proxy, cut) = cuttable_proxy(hub.amqp_addr()).await;
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(proxy.port())
        .build()
        .unwrap();
    let mut receiver = registry.feedback_receiver();
    let held = timeout(WAIT, receiver.recv())
        .await
        .expect("a feedback batch in time")
        .expect("a batch")
        .expect("no error");
    assert_eq!(held.records()[0].original_message_id, "m1");
    // Cut the connection with the batch held (neither completed nor abandoned).
    cut.abort();
    let mut second = hub.feedback();
    let batch = timeout(WAIT, second.recv())
        .await
        .expect("the batch back well before its 60 s lock")
        .unwrap();
    assert_eq!(batch[0].original_message_id, "m1");
    drop(held);
}

#[tokio::test]
async fn idle_mqtt_connections_are_bounded_per_address() {
    use futures_util::StreamExt;
    use iothub::local_hub::ConnectionLimits;
    use std::time::Duration;

    let hub = LocalHub::builder()
        .connection_limits(
            ConnectionLimits::new()
                .with_max_connections(100)
                .with_max_connections_per_address(20)
                .with_handshake_timeout(Duration::from_secs(20)),
        )
        .start()
        .await
        .unwrap();
    let hostile = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let port = hub.mqtt_addr().port();
    // 500 TCP connections from one address that finish TLS and then send nothing: the hub
    // holds at most 20 of them open and closes the rest at once.
    let held: Vec<_> = futures_util::stream::iter(0..500)
        .map(|_| {
            let hub = &hub;
            async move { tls_from(hub, hostile, port).await }
        })
        .buffer_unordered(64)
        .filter_map(|tls| async move { tls })
        .collect()
        .await;
    assert!(
        !held.is_empty() && held.len() <= 20,
        "{} idle MQTT connections were admitted from one address (bound 20)",
        held.len()
    );
    // A device on another address connects at once (MQTT, and a back end over AMQP).
    healthy_device_and_back_end(&hub, "healthy-mqtt").await;
    drop(held);
}
