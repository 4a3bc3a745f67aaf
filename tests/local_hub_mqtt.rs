//! The local hub's MQTT endpoint, driven by a raw client (rumqttc's codec over TLS) so that
//! every packet the hub sends is checked as bytes a device would see.
#![cfg(feature = "local-hub")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{RawClient, WAIT, connect_packet, password, username};
use iothub::auth::{DeviceConnectionString, ResourceUri, SasKey};
use iothub::local_hub::{C2dLimits, LocalHub};
use iothub::protocol::FeedbackStatus;
use iothub::{Ack, ErrorKind, Message};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

async fn hub() -> LocalHub {
    hub_with(C2dLimits::default()).await
}

async fn hub_with(limits: C2dLimits) -> LocalHub {
    LocalHub::builder()
        .c2d_limits(limits)
        .feedback_flush_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap()
}

fn connack_code(packet: &Packet) -> ConnectReturnCode {
    match packet {
        Packet::ConnAck(ack) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A raw client connected as `dev1` with a keep-alive of 1 s.
async fn connected_with_keep_alive_1s(
    hub: &LocalHub,
    cs: &DeviceConnectionString,
) -> RawClient<TlsStream<TcpStream>> {
    let mut client = RawClient::open(hub).await;
    client
        .send(connect_packet("dev1", &username(cs), &password(cs), 1))
        .await;
    assert_eq!(
        connack_code(&client.recv().await),
        ConnectReturnCode::Success
    );
    client
}

async fn subscribe_c2d<S>(client: &mut RawClient<S>, device: &str) -> Vec<SubscribeReasonCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let filter = format!("devices/{device}/messages/devicebound/#");
    client
        .send(Packet::Subscribe(Subscribe::new(filter, QoS::AtLeastOnce)))
        .await;
    loop {
        match client.recv().await {
            Packet::SubAck(ack) => return ack.return_codes,
            Packet::Publish(_) => {} // a queued message may overtake the SUBACK
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

async fn next_publish<S>(client: &mut RawClient<S>) -> Publish
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match client.recv().await {
            Packet::Publish(p) => return p,
            Packet::SubAck(_) | Packet::PingResp => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_device_connects_subscribes_and_the_hub_sees_it_connected() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    assert!(cs.to_string().contains(&format!(
        "GatewayHostName=localhost:{}",
        hub.mqtt_addr().port()
    )));
    let (mut client, connack) = RawClient::connect(&hub, &cs).await;
    assert_eq!(connack_code(&connack), ConnectReturnCode::Success);
    assert!(hub.is_connected("dev1"));
    let codes = subscribe_c2d(&mut client, "dev1").await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
}

#[tokio::test]
async fn bad_credentials_get_connack_5() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let other = hub.create_device("dev2").unwrap();
    let good_user = username(&cs);
    let wrong_key = SasKey::from_bytes(b"not the device key")
        .token(
            &ResourceUri::device("localhost", "dev1"),
            None,
            now_secs() + 3600,
        )
        .to_string();
    let expired = SasKey::from_base64(match cs.credential() {
        iothub::auth::DeviceCredential::SharedAccessKey { key, .. } => key.to_base64(),
        _ => unreachable!(),
    })
    .unwrap()
    .token(
        &ResourceUri::device("localhost", "dev1"),
        None,
        now_secs() - 10,
    )
    .to_string();
    let cases = [
        ("wrong key", "dev1".to_owned(), good_user.clone(), wrong_key),
        (
            "expired token",
            "dev1".to_owned(),
            good_user.clone(),
            expired,
        ),
        (
            "client id of another device",
            "dev2".to_owned(),
            good_user.clone(),
            password(&cs),
        ),
        (
            "another device's token",
            "dev1".to_owned(),
            good_user.clone(),
            password(&other),
        ),
        (
            "not a token",
            "dev1".to_owned(),
            good_user.clone(),
            "hunter2".to_owned(),
        ),
        (
            "another hub",
            "dev1".to_owned(),
            "elsewhere/dev1/?api-version=2021-04-12".to_owned(),
            password(&cs),
        ),
        (
            "unknown device",
            "ghost".to_owned(),
            "localhost/ghost/?api-version=2021-04-12".to_owned(),
            password(&cs),
        ),
    ];
    for (what, client_id, user, pass) in cases {
        let mut client = RawClient::open(&hub).await;
        client
            .send(connect_packet(&client_id, &user, &pass, 60))
            .await;
        assert_eq!(
            connack_code(&client.recv().await),
            ConnectReturnCode::NotAuthorized,
            "{what}"
        );
        client.expect_closed().await;
    }
    assert!(!hub.is_connected("dev1"));
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn any_api_version_and_a_policy_token_with_device_connect_are_accepted() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let mut client = RawClient::open(&hub).await;
    // The C SDK's user name form (azure-iot-sdk-c `iothubtransport_mqtt_common.c`
    // `buildConfigForUsernameStep2`: `DeviceClientType=iothubclient%2f...`) and an old api-version.
    let user = "localhost/dev1/?api-version=2016-11-14&DeviceClientType=iothubclient%2f1.9.0";
    client
        .send(connect_packet("dev1", user, &password(&cs), 60))
        .await;
    assert_eq!(
        connack_code(&client.recv().await),
        ConnectReturnCode::Success
    );
}

#[tokio::test]
async fn subscribing_to_another_devices_topics_is_refused() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    hub.create_device("dev2").unwrap();
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    client
        .send(Packet::Subscribe(Subscribe::new_many([
            SubscribeFilter::new(
                "devices/dev2/messages/devicebound/#".into(),
                QoS::AtLeastOnce,
            ),
            SubscribeFilter::new(
                "devices/dev1/messages/devicebound/#".into(),
                QoS::ExactlyOnce,
            ),
            SubscribeFilter::new("#".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("$iothub/methods/POST/#".into(), QoS::AtMostOnce),
        ])))
        .await;
    match client.recv().await {
        Packet::SubAck(ack) => assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtLeastOnce), // QoS 2 is granted as 1
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_c2d_message_arrives_with_the_exact_topic_and_its_puback_gives_success_feedback() {
    let hub = hub().await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    subscribe_c2d(&mut client, "dev1").await;
    let expiry = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
    let message = Message::new("{\"wind\": 12.5}")
        .with_message_id("message_0")
        .with_correlation_id("corr/0&1=2")
        .with_user_id("user 1")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_expiry(expiry)
        .with_ack(Ack::Full)
        .with_property("testProperty", "PropMsg_0")
        .with_property("ünïcødé key", "a/b?c=d&e%f+g $h")
        .with_bare_property("flag");
    hub.enqueue_c2d("dev1", message).unwrap();
    let publish = next_publish(&mut client).await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], b"{\"wind\": 12.5}");
    // IoT Hub's order: $.mid, $.exp, $.to, $.cid, $.uid, $.ct, $.ce, iothub-ack, app properties
    // (as in the topic captured in Azure-Samples/IoTMQTTSample `mosquitto_pub/readme.md`), with
    // uppercase percent-encoding of `/` and `=`, which azure-iot-device
    // `iothub/pipeline/mqtt_topic_iothub.py` splits on.
    assert_eq!(
        publish.topic,
        "devices/dev1/messages/devicebound/%24.mid=message_0\
         &%24.exp=2100-01-01T00%3A00%3A00.0000000Z\
         &%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound\
         &%24.cid=corr%2F0%261%3D2&%24.uid=user%201&%24.ct=application%2Fjson&%24.ce=utf-8\
         &iothub-ack=full&testProperty=PropMsg_0\
         &%C3%BCn%C3%AFc%C3%B8d%C3%A9%20key=a%2Fb%3Fc%3Dd%26e%25f%2Bg%20%24h&flag"
    );
    assert_eq!(
        hub.c2d_queue_len("dev1"),
        Some(1),
        "delivered but not yet completed"
    );
    client.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].original_message_id, "message_0");
    assert_eq!(batch[0].status_code, FeedbackStatus::Success);
    assert_eq!(batch[0].description, "Success");
    assert_eq!(batch[0].device_id, "dev1");
    assert!(!batch[0].device_generation_id.is_empty());
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
}

#[tokio::test]
async fn messages_sent_while_offline_wait_and_the_51st_is_refused() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    for i in 0..50 {
        hub.enqueue_c2d(
            "dev1",
            Message::new(format!("{i}")).with_message_id(format!("m{i}")),
        )
        .unwrap();
    }
    let err = hub.enqueue_c2d("dev1", Message::new("51")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    let err = hub
        .enqueue_c2d("dev1", Message::new(vec![0u8; 65 * 1024]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    let err = hub.enqueue_c2d("ghost", Message::new("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotFound);

    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    subscribe_c2d(&mut client, "dev1").await;
    for i in 0..50 {
        let publish = next_publish(&mut client).await;
        assert_eq!(&publish.payload[..], format!("{i}").as_bytes(), "in order");
        client.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
    }
    // Every message was completed, so the queue takes new ones again.
    hub.enqueue_c2d("dev1", Message::new("after")).unwrap();
    assert_eq!(&next_publish(&mut client).await.payload[..], b"after");
}

#[tokio::test]
async fn an_expired_message_gives_expired_feedback_and_is_not_delivered() {
    let hub = hub_with(C2dLimits::new().with_default_ttl(Duration::from_millis(200))).await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    hub.enqueue_c2d(
        "dev1",
        Message::new("late")
            .with_message_id("ttl-1")
            .with_ack(Ack::Negative),
    )
    .unwrap();
    hub.enqueue_c2d(
        "dev1",
        Message::new("quiet")
            .with_message_id("ttl-2")
            .with_ack(Ack::Positive),
    )
    .unwrap();
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    assert_eq!(
        batch.len(),
        1,
        "positive-only ack asks for no expiry feedback"
    );
    assert_eq!(batch[0].original_message_id, "ttl-1");
    assert_eq!(batch[0].status_code, FeedbackStatus::Expired);
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    subscribe_c2d(&mut client, "dev1").await;
    client.send(Packet::PingReq).await;
    assert_eq!(
        client.recv().await,
        Packet::PingResp,
        "nothing was delivered"
    );
}

#[tokio::test]
async fn a_message_not_acknowledged_is_delivered_again_after_reconnect() {
    let hub = hub().await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    hub.enqueue_c2d(
        "dev1",
        Message::new("once")
            .with_message_id("r1")
            .with_ack(Ack::Full),
    )
    .unwrap();
    let (mut first, _) = RawClient::connect(&hub, &cs).await;
    subscribe_c2d(&mut first, "dev1").await;
    let publish = next_publish(&mut first).await;
    assert_eq!(&publish.payload[..], b"once");
    drop(first); // no PUBACK

    let (mut second, connack) = RawClient::connect(&hub, &cs).await;
    match connack {
        Packet::ConnAck(ack) => assert!(ack.session_present, "clean session 0 keeps the session"),
        other => panic!("{other:?}"),
    }
    // The subscription persisted: no SUBSCRIBE needed.
    let again = next_publish(&mut second).await;
    assert_eq!(&again.payload[..], b"once");
    second.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    assert_eq!(batch[0].status_code, FeedbackStatus::Success);
}

#[tokio::test]
async fn a_lock_that_runs_out_redelivers_on_the_same_connection() {
    let hub = hub_with(C2dLimits::new().with_lock_duration(Duration::from_millis(200))).await;
    let cs = hub.create_device("dev1").unwrap();
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    subscribe_c2d(&mut client, "dev1").await;
    hub.enqueue_c2d("dev1", Message::new("slow")).unwrap();
    let first = next_publish(&mut client).await;
    let second = next_publish(&mut client).await;
    assert_eq!(second.payload, first.payload);
    assert_ne!(second.pkid, first.pkid);
}

#[tokio::test]
async fn purge_reports_the_count_and_purged_feedback() {
    let hub = hub().await;
    let mut feedback = hub.feedback();
    hub.create_device("dev1").unwrap();
    for i in 0..3 {
        hub.enqueue_c2d(
            "dev1",
            Message::new("x")
                .with_message_id(format!("p{i}"))
                .with_ack(Ack::Full),
        )
        .unwrap();
    }
    assert_eq!(hub.purge_c2d("dev1").unwrap(), 3);
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    let ids: Vec<_> = batch
        .iter()
        .map(|r| r.original_message_id.as_str())
        .collect();
    assert_eq!(ids, ["p0", "p1", "p2"]);
    assert!(
        batch
            .iter()
            .all(|r| r.status_code == FeedbackStatus::Purged)
    );
    assert_eq!(
        hub.purge_c2d("ghost").unwrap_err().kind(),
        ErrorKind::DeviceNotFound
    );
}

#[tokio::test]
async fn telemetry_is_acknowledged_and_observable() {
    let hub = hub().await;
    let mut telemetry = hub.telemetry();
    let cs = hub.create_device("dev1").unwrap();
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    let mut publish = Publish::new(
        "devices/dev1/messages/events/%24.mid=d2c-1&%24.ct=application%2Fjson&%24.ce=utf-8&k=v%20v",
        QoS::AtLeastOnce,
        b"{\"t\":1}".to_vec(),
    );
    publish.pkid = 7;
    client.send(Packet::Publish(publish)).await;
    assert_eq!(client.recv().await, Packet::PubAck(PubAck::new(7)));
    let received = timeout(WAIT, telemetry.recv()).await.unwrap().unwrap();
    assert_eq!(received.device_id, "dev1");
    assert_eq!(received.module_id, None);
    let message = received.message;
    assert_eq!(message.message_id(), Some("d2c-1"));
    assert_eq!(message.content_type(), Some("application/json"));
    assert_eq!(message.property("k"), Some("v v"));
    assert_eq!(&message.body()[..], b"{\"t\":1}");

    // Telemetry on another device's topic closes the connection.
    let mut foreign = Publish::new(
        "devices/dev2/messages/events/",
        QoS::AtLeastOnce,
        b"x".to_vec(),
    );
    foreign.pkid = 8;
    client.send(Packet::Publish(foreign)).await;
    client.expect_closed().await;
}

#[tokio::test]
async fn qos_2_publish_closes_the_connection() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    let mut publish = Publish::new(
        "devices/dev1/messages/events/",
        QoS::ExactlyOnce,
        b"x".to_vec(),
    );
    publish.pkid = 1;
    client.send(Packet::Publish(publish)).await;
    client.expect_closed().await;
}

#[tokio::test]
async fn a_second_connection_for_the_device_closes_the_first() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let (mut first, _) = RawClient::connect(&hub, &cs).await;
    let (mut second, connack) = RawClient::connect(&hub, &cs).await;
    assert_eq!(connack_code(&connack), ConnectReturnCode::Success);
    first.expect_closed().await;
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Packet::PingResp);
    assert!(hub.is_connected("dev1"));
}

#[tokio::test]
async fn keep_alive_is_enforced_at_one_and_a_half_times() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let mut client = connected_with_keep_alive_1s(&hub, &cs).await;
    let started = tokio::time::Instant::now();
    client.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
}

/// A device that keeps talking within its keep-alive stays connected well past it: every
/// packet moves the deadline.
#[tokio::test]
async fn packets_within_the_keep_alive_keep_the_connection() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let mut client = connected_with_keep_alive_1s(&hub, &cs).await;
    // Keep-alive 1 s (enforced at 1.5 s); a PINGREQ every 0.5 s for 4 s.
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..8 {
        ticks.tick().await;
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Packet::PingResp);
    }
    assert!(hub.is_connected("dev1"));
}

#[tokio::test]
async fn the_device_is_disconnected_when_its_token_expires() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let key = match cs.credential() {
        iothub::auth::DeviceCredential::SharedAccessKey { key, .. } => key.clone(),
        _ => unreachable!(),
    };
    let token = key.token(
        &ResourceUri::device("localhost", "dev1"),
        None,
        now_secs() + 2,
    );
    let mut client = RawClient::open(&hub).await;
    client
        .send(connect_packet(
            "dev1",
            &username(&cs),
            &token.to_string(),
            60,
        ))
        .await;
    assert_eq!(
        connack_code(&client.recv().await),
        ConnectReturnCode::Success
    );
    client.expect_closed().await;
    assert!(
        SystemTime::now() >= token.expiry(),
        "closed at expiry, not before"
    );
}

#[tokio::test]
async fn a_qos_0_subscription_gets_qos_0_deliveries_that_complete_when_sent() {
    let hub = hub().await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    let (mut client, _) = RawClient::connect(&hub, &cs).await;
    let filter = "devices/dev1/messages/devicebound/#";
    client
        .send(Packet::Subscribe(Subscribe::new(filter, QoS::AtMostOnce)))
        .await;
    match client.recv().await {
        Packet::SubAck(ack) => {
            assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
            )
        }
        other => panic!("{other:?}"),
    }
    hub.enqueue_c2d(
        "dev1",
        Message::new("fire and forget")
            .with_message_id("q0")
            .with_ack(Ack::Positive),
    )
    .unwrap();
    let publish = next_publish(&mut client).await;
    assert_eq!(publish.qos, QoS::AtMostOnce);
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    assert_eq!(batch[0].original_message_id, "q0");
    assert_eq!(batch[0].status_code, FeedbackStatus::Success);
}

// ---- modules ---------------------------------------------------------------------------------

/// The MQTT client id of a device or module connection string: `device[/module]`.
fn client_id(cs: &DeviceConnectionString) -> String {
    match cs.module_id() {
        Some(module) => format!("{}/{module}", cs.device_id()),
        None => cs.device_id().to_owned(),
    }
}

/// Connects as the identity of `cs` (device or module) with a valid token.
async fn connect_as(
    hub: &LocalHub,
    cs: &DeviceConnectionString,
) -> (RawClient<TlsStream<TcpStream>>, ConnectReturnCode) {
    connect_with(hub, &client_id(cs), &username(cs), &password(cs)).await
}

async fn connect_with(
    hub: &LocalHub,
    client_id: &str,
    user: &str,
    pass: &str,
) -> (RawClient<TlsStream<TcpStream>>, ConnectReturnCode) {
    let mut client = RawClient::open(hub).await;
    client.send(connect_packet(client_id, user, pass, 60)).await;
    let code = connack_code(&client.recv().await);
    (client, code)
}

#[tokio::test]
async fn create_module_returns_a_module_connection_string_and_checks_ids() {
    let hub = hub().await;
    hub.create_device("devA").unwrap();
    let cs = hub.create_module("devA", "m1").unwrap();
    assert_eq!(cs.device_id(), "devA");
    assert_eq!(cs.module_id(), Some("m1"));
    assert!(cs.to_string().contains(";ModuleId=m1"));
    assert_eq!(
        hub.module_connection_string("devA", "m1")
            .unwrap()
            .to_string(),
        cs.to_string()
    );
    assert!(hub.module_connection_string("devA", "m2").is_none());
    assert_eq!(
        hub.create_module("devA", "m1").unwrap_err().kind(),
        ErrorKind::ModuleAlreadyExists
    );
    assert_eq!(
        hub.create_module("ghost", "m1").unwrap_err().kind(),
        ErrorKind::DeviceNotFound
    );
    let err = hub.create_module("devA", "no/slash").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidIdentityId);
    assert!(err.to_string().contains("128"), "names the rule: {err}");
}

#[tokio::test]
async fn an_unregistered_module_is_refused_even_with_its_devices_token() {
    let hub = hub().await;
    let device = hub.create_device("devA").unwrap();
    let user = "localhost/devA/ghost/?api-version=2021-04-12";
    let (mut client, code) = connect_with(&hub, "devA/ghost", user, &password(&device)).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    client.expect_closed().await;
    assert!(!hub.is_module_connected("devA", "ghost"));
}

#[tokio::test]
async fn a_module_token_cannot_connect_its_device_and_a_device_token_cannot_connect_a_module() {
    let hub = hub().await;
    let device = hub.create_device("devA").unwrap();
    let module = hub.create_module("devA", "m1").unwrap();

    let (mut client, code) =
        connect_with(&hub, "devA", &username(&device), &password(&module)).await;
    assert_eq!(
        code,
        ConnectReturnCode::NotAuthorized,
        "module token for the device"
    );
    client.expect_closed().await;

    let (mut client, code) =
        connect_with(&hub, "devA/m1", &username(&module), &password(&device)).await;
    assert_eq!(
        code,
        ConnectReturnCode::NotAuthorized,
        "device token for the module"
    );
    client.expect_closed().await;

    // A device token signed for the module's resource still has the wrong key.
    let device_key = match device.credential() {
        iothub::auth::DeviceCredential::SharedAccessKey { key, .. } => key.clone(),
        _ => unreachable!(),
    };
    let forged = device_key
        .token(
            &ResourceUri::module("localhost", "devA", "m1"),
            None,
            now_secs() + 3600,
        )
        .to_string();
    let (mut client, code) = connect_with(&hub, "devA/m1", &username(&module), &forged).await;
    assert_eq!(
        code,
        ConnectReturnCode::NotAuthorized,
        "device key, module resource"
    );
    client.expect_closed().await;

    assert!(!hub.is_connected("devA"));
    assert!(!hub.is_module_connected("devA", "m1"));
}

#[tokio::test]
async fn a_device_and_its_module_stay_connected_together_and_c2d_goes_to_the_device_only() {
    let hub = hub().await;
    let device_cs = hub.create_device("devA").unwrap();
    let module_cs = hub.create_module("devA", "m1").unwrap();
    let (mut device, code) = connect_as(&hub, &device_cs).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (mut module, code) = connect_as(&hub, &module_cs).await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert!(hub.is_connected("devA"));
    assert!(hub.is_module_connected("devA", "m1"));

    subscribe_c2d(&mut device, "devA").await;
    module
        .send(Packet::Subscribe(Subscribe::new(
            "devices/devA/modules/m1/inputs/#",
            QoS::AtLeastOnce,
        )))
        .await;
    match module.recv().await {
        Packet::SubAck(ack) => assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    hub.enqueue_c2d("devA", Message::new("for the device"))
        .unwrap();
    let publish = next_publish(&mut device).await;
    assert_eq!(&publish.payload[..], b"for the device");
    device.send(Packet::PubAck(PubAck::new(publish.pkid))).await;

    // Both connections are still up, and the module got nothing but its PINGRESP.
    module.send(Packet::PingReq).await;
    assert_eq!(module.recv().await, Packet::PingResp);
    device.send(Packet::PingReq).await;
    assert_eq!(device.recv().await, Packet::PingResp);
    assert!(hub.is_connected("devA"));
    assert!(hub.is_module_connected("devA", "m1"));

    // A newer module connection replaces the older one, not the device's.
    let (mut newer, code) = connect_as(&hub, &module_cs).await;
    assert_eq!(code, ConnectReturnCode::Success);
    module.expect_closed().await;
    newer.send(Packet::PingReq).await;
    assert_eq!(newer.recv().await, Packet::PingResp);
    device.send(Packet::PingReq).await;
    assert_eq!(device.recv().await, Packet::PingResp);

    // Disconnecting the module leaves the device.
    assert!(hub.disconnect_module("devA", "m1"));
    newer.expect_closed().await;
    assert!(hub.is_connected("devA"));
}

#[tokio::test]
async fn a_module_subscribing_to_its_devices_c2d_is_refused() {
    let hub = hub().await;
    hub.create_device("devA").unwrap();
    let module_cs = hub.create_module("devA", "m1").unwrap();
    let (mut module, code) = connect_as(&hub, &module_cs).await;
    assert_eq!(code, ConnectReturnCode::Success);
    hub.enqueue_c2d("devA", Message::new("for the device"))
        .unwrap();
    assert_eq!(
        subscribe_c2d(&mut module, "devA").await,
        vec![SubscribeReasonCode::Failure]
    );
    module.send(Packet::PingReq).await;
    assert_eq!(module.recv().await, Packet::PingResp, "no C2D delivered");
    assert_eq!(hub.c2d_queue_len("devA"), Some(1));
}

#[tokio::test]
async fn deleting_the_device_closes_its_modules_connection_and_deletes_the_module() {
    let hub = hub().await;
    hub.create_device("devA").unwrap();
    let module_cs = hub.create_module("devA", "m1").unwrap();
    let (mut module, code) = connect_as(&hub, &module_cs).await;
    assert_eq!(code, ConnectReturnCode::Success);
    hub.delete_device("devA").unwrap();
    module.expect_closed().await;
    assert!(!hub.is_module_connected("devA", "m1"));
    assert!(hub.module_connection_string("devA", "m1").is_none());
    let (mut again, code) = connect_as(&hub, &module_cs).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    again.expect_closed().await;
}

#[tokio::test]
async fn module_telemetry_arrives_with_its_module_id() {
    let hub = hub().await;
    let mut telemetry = hub.telemetry();
    hub.create_device("devA").unwrap();
    let module_cs = hub.create_module("devA", "m1").unwrap();
    let (mut module, _) = connect_as(&hub, &module_cs).await;
    let mut publish = Publish::new(
        "devices/devA/modules/m1/messages/events/%24.mid=mod-1",
        QoS::AtLeastOnce,
        b"from the module".to_vec(),
    );
    publish.pkid = 3;
    module.send(Packet::Publish(publish)).await;
    assert_eq!(module.recv().await, Packet::PubAck(PubAck::new(3)));
    let received = timeout(WAIT, telemetry.recv()).await.unwrap().unwrap();
    assert_eq!(received.device_id, "devA");
    assert_eq!(received.module_id.as_deref(), Some("m1"));
    assert_eq!(received.message.message_id(), Some("mod-1"));
    assert_eq!(&received.message.body()[..], b"from the module");

    // The device's telemetry topic is not the module's.
    let mut foreign = Publish::new(
        "devices/devA/messages/events/",
        QoS::AtLeastOnce,
        b"x".to_vec(),
    );
    foreign.pkid = 4;
    module.send(Packet::Publish(foreign)).await;
    module.expect_closed().await;
}
