//! The local hub's AMQP service endpoint, driven by fe2o3-amqp's client over tokio-rustls (and
//! raw frames where the client cannot imitate uamqp), with the MQTT device side played by the
//! raw client of `tests/common`. Every wait is bounded by `WAIT`.
#![cfg(feature = "local-hub")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{RawClient, WAIT, tls_stream};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ErrorCondition, ReceiverSettleMode};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message as AmqpMessage, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Uuid, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use futures_util::{SinkExt, StreamExt};
use iothub::auth::{ResourceUri, SasKey};
use iothub::local_hub::{C2dLimits, LocalHub};
use iothub::protocol::{FEEDBACK_CONTENT_TYPE, FeedbackStatus, decode_feedback_batch};
use iothub::{Ack, Message};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const POLICY_KEY: &[u8] = b"the iothubowner key of these tests";
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

async fn hub() -> LocalHub {
    hub_with(C2dLimits::default()).await
}

async fn hub_with(limits: C2dLimits) -> LocalHub {
    LocalHub::builder()
        .policy_key(SasKey::from_bytes(POLICY_KEY))
        .c2d_limits(limits)
        .feedback_flush_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A policy token as Node writes it (`sr` the host, here with the AMQP port as Node's
/// `HostName=localhost:PORT` gives).
fn policy_token(key: &[u8], policy: &str, sr: &str, expiry: u64) -> String {
    SasKey::from_bytes(key)
        .token(&ResourceUri::service(sr), Some(policy), expiry)
        .to_string()
}

fn good_token() -> String {
    policy_token(POLICY_KEY, "iothubowner", "localhost", now_secs() + 3600)
}

async fn with_timeout<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"))
}

// ---- connections -------------------------------------------------------------------------

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn amqp_tls(hub: &LocalHub) -> Tls {
    tls_stream(hub, hub.amqp_addr().port()).await
}

/// Opens a connection on `stream` with no SASL layer (what azure-iothub for Node does).
async fn open_plain_amqp<S>(stream: S) -> ConnectionHandle<()>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    with_timeout(
        "OPEN",
        Connection::builder()
            .container_id("tests")
            .hostname("localhost")
            .scheme("amqp") // TLS is already done
            .open_with_stream(stream),
    )
    .await
    .expect("the hub opens the connection")
}

fn frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&[2, frame_type, 0, 0]);
    v.extend_from_slice(body);
    v
}

async fn read_frame_body<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).await.unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(size) as usize - 4];
    s.read_exact(&mut rest).await.unwrap();
    let data_offset = rest[0] as usize * 4;
    rest[data_offset - 4..].to_vec()
}

/// uamqp's handshake (`azure-uamqp-c`, `src/sasl_mssbcbs.c`): SASL header, `MSSBCBS` with an empty initial
/// response; returns the mechanisms the hub offered.
async fn sasl_mssbcbs<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Vec<String> {
    with_timeout("the SASL exchange", async {
        s.write_all(&SASL_HEADER).await.unwrap();
        let mut header = [0u8; 8];
        s.read_exact(&mut header).await.unwrap();
        assert_eq!(header, SASL_HEADER);
        let mechanisms: SaslMechanisms = serde_amqp::from_slice(&read_frame_body(s).await).unwrap();
        let init = SaslInit {
            mechanism: Symbol::from("MSSBCBS"),
            initial_response: Some(Binary::from(Vec::new())),
            hostname: None,
        };
        s.write_all(&frame(1, &serde_amqp::to_vec(&init).unwrap()))
            .await
            .unwrap();
        let outcome: SaslOutcome = serde_amqp::from_slice(&read_frame_body(s).await).unwrap();
        assert!(matches!(outcome.code, SaslCode::Ok), "{outcome:?}");
        mechanisms
            .sasl_server_mechanisms
            .0
            .into_iter()
            .map(|m| m.0)
            .collect()
    })
    .await
}

struct Cbs {
    requests: Sender,
    responses: Receiver,
}

async fn cbs(session: &mut SessionHandle<()>) -> Cbs {
    let requests = Sender::builder()
        .name("$cbs-sender")
        .source("$cbs")
        .target("$cbs")
        .attach(session)
        .await
        .unwrap();
    let responses = Receiver::builder()
        .name("$cbs-receiver")
        .source("$cbs")
        .target("$cbs")
        .attach(session)
        .await
        .unwrap();
    Cbs {
        requests,
        responses,
    }
}

/// A put-token request; returns the response's correlation-id, status-code and description.
async fn put_token(
    cbs: &mut Cbs,
    id: MessageId,
    audience: &str,
    token: &str,
) -> (Option<MessageId>, SimpleValue, SimpleValue) {
    let request = AmqpMessage::builder()
        .properties(Properties {
            message_id: Some(id),
            to: Some("$cbs".into()),
            reply_to: Some("cbs".into()),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", SimpleValue::String("put-token".into()))
                .insert(
                    "type",
                    SimpleValue::String("servicebus.windows.net:sastoken".into()),
                )
                .insert("name", SimpleValue::String(audience.into()))
                .build(),
        )
        .value(token.to_owned())
        .build();
    let outcome = with_timeout("the put-token disposition", cbs.requests.send(request))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let delivery = with_timeout(
        "the put-token response",
        cbs.responses.recv::<Body<Value>>(),
    )
    .await
    .unwrap();
    cbs.responses.accept(&delivery).await.unwrap();
    let reply = delivery.into_message();
    let app = reply.application_properties.unwrap().0;
    (
        reply.properties.and_then(|p| p.correlation_id),
        app.get("status-code").cloned().unwrap(),
        app.get("status-description").cloned().unwrap(),
    )
}

/// A session on a fresh no-SASL connection, authorized through CBS.
async fn authorized_session(hub: &LocalHub) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let mut connection = open_plain_amqp(amqp_tls(hub).await).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = cbs(&mut session).await;
    let (_, status, _) = put_token(
        &mut cbs,
        MessageId::String("auth".into()),
        "localhost",
        &good_token(),
    )
    .await;
    assert_eq!(status, SimpleValue::Int(200));
    (connection, session)
}

async fn c2d_sender(session: &mut SessionHandle<()>, target: &str) -> Sender {
    Sender::builder()
        .name(format!("c2d-{target}"))
        .source("tests")
        .target(target)
        .receiver_settle_mode(ReceiverSettleMode::Second) // as uamqp's C2D sender asks
        .attach(session)
        .await
        .unwrap()
}

fn c2d_message(device: &str, id: MessageId, body: Vec<u8>) -> AmqpMessage<Data> {
    AmqpMessage::builder()
        .properties(Properties {
            message_id: Some(id),
            to: Some(format!("/devices/{device}/messages/devicebound")),
            ..Properties::default()
        })
        .data(Binary::from(body))
        .build()
}

async fn send(sender: &mut Sender, message: AmqpMessage<Data>) -> Outcome {
    with_timeout("the C2D disposition", sender.send(message))
        .await
        .unwrap()
}

fn rejection(outcome: &Outcome) -> (String, String) {
    let Outcome::Rejected(rejected) = outcome else {
        panic!("expected rejected, got {outcome:?}")
    };
    let error = rejected.error.as_ref().expect("an error");
    let condition = match &error.condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e).0,
        ErrorCondition::LinkError(e) => Symbol::from(e).0,
        ErrorCondition::Custom(s) => s.0.clone(),
        other => format!("{other:?}"),
    };
    (condition, error.description.clone().unwrap_or_default())
}

// ---- MQTT device -------------------------------------------------------------------------

async fn subscribed_device(hub: &LocalHub, device_id: &str) -> RawClient<Tls> {
    let cs = hub.create_device(device_id).unwrap();
    let (mut client, _) = RawClient::connect(hub, &cs).await;
    client
        .send(Packet::Subscribe(Subscribe::new(
            format!("devices/{device_id}/messages/devicebound/#"),
            QoS::AtLeastOnce,
        )))
        .await;
    assert!(matches!(client.recv().await, Packet::SubAck(_)));
    client
}

async fn next_publish(client: &mut RawClient<Tls>) -> Publish {
    loop {
        match client.recv().await {
            Packet::Publish(p) => return p,
            Packet::PingResp => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test]
async fn cbs_put_token_answers_200_or_401_and_gates_the_links() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let mut connection = open_plain_amqp(amqp_tls(&hub).await).await;
    let mut session = Session::begin(&mut connection).await.unwrap();

    // A link before any token is refused with amqp:unauthorized-access.
    let mut early = c2d_sender(&mut session, "/messages/devicebound").await;
    let detach = with_timeout("the refusal", early.on_detach()).await;
    assert!(
        format!("{detach:?}").contains("UnauthorizedAccess"),
        "{detach:?}"
    );

    let mut cbs = cbs(&mut session).await;
    let device_key = SasKey::from_bytes(b"device key");
    let device_token = device_key
        .token(
            &ResourceUri::device("localhost", "dev1"),
            None,
            now_secs() + 3600,
        )
        .to_string();
    let bad = [
        (
            "wrong key",
            policy_token(b"wrong", "iothubowner", "localhost", now_secs() + 3600),
        ),
        (
            "expired",
            policy_token(POLICY_KEY, "iothubowner", "localhost", now_secs() - 10),
        ),
        ("device token", device_token),
        ("not a token", "hello".to_owned()),
    ];
    for (i, (what, token)) in bad.iter().enumerate() {
        let (correlation, status, description) = put_token(
            &mut cbs,
            MessageId::String(format!("bad-{i}")),
            "localhost",
            token,
        )
        .await;
        assert_eq!(status, SimpleValue::Int(401), "{what}");
        assert_eq!(correlation, Some(MessageId::String(format!("bad-{i}"))));
        let SimpleValue::String(description) = description else {
            panic!("{what}: a string description")
        };
        assert!(
            !description.contains("SharedAccessSignature"),
            "no token in {description:?}"
        );
    }
    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;
    let detach = with_timeout("the refusal", c2d.on_detach()).await;
    assert!(format!("{detach:?}").contains("UnauthorizedAccess"));

    // uamqp: ulong message-id, audience https://host; the reply keeps the type.
    let (correlation, status, description) = put_token(
        &mut cbs,
        MessageId::Ulong(0),
        "https://localhost",
        &good_token(),
    )
    .await;
    assert_eq!(correlation, Some(MessageId::Ulong(0)));
    assert_eq!(status, SimpleValue::Int(200));
    assert_eq!(description, SimpleValue::String("OK".into()));
    // Node: string message-id, audience = sr with the port, fields in Node's order.
    let port = hub.amqp_addr().port();
    let node_token = policy_token(
        POLICY_KEY,
        "iothubowner",
        &format!("localhost:{port}"),
        now_secs() + 3600,
    );
    let (correlation, status, _) = put_token(
        &mut cbs,
        MessageId::String("6a0c-node".into()),
        &format!("localhost:{port}"),
        &node_token,
    )
    .await;
    assert_eq!(correlation, Some(MessageId::String("6a0c-node".into())));
    assert_eq!(status, SimpleValue::Int(200));

    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::String("m1".into()), b"x".to_vec()),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    c2d.close().await.unwrap();
    session.end().await.unwrap();
    connection.close().await.unwrap();
}

/// A put-token whose audience (`name`) names another hub is refused with 401, even with a
/// token this hub would accept, and the connection stays unauthorized.
#[tokio::test]
async fn a_token_for_another_hubs_audience_is_refused() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let mut connection = open_plain_amqp(amqp_tls(&hub).await).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = cbs(&mut session).await;
    let audiences = [
        "otherhub.azure-devices.net",
        "https://otherhub.azure-devices.net",
        "otherhub:5671",
    ];
    for (i, audience) in audiences.iter().enumerate() {
        let (correlation, status, description) = put_token(
            &mut cbs,
            MessageId::Ulong(i as u64),
            audience,
            &good_token(),
        )
        .await;
        assert_eq!(correlation, Some(MessageId::Ulong(i as u64)));
        assert_eq!(status, SimpleValue::Int(401), "{audience}");
        let SimpleValue::String(description) = description else {
            panic!("{audience}: a string description")
        };
        assert!(description.contains("audience"), "{description}");
    }
    // No C2D send succeeds on this connection.
    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;
    let sent = timeout(
        WAIT,
        c2d.send(c2d_message(
            "dev1",
            MessageId::String("m1".into()),
            b"x".to_vec(),
        )),
    )
    .await;
    assert!(
        !matches!(sent, Ok(Ok(Outcome::Accepted(_)))),
        "the send was accepted: {sent:?}"
    );
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
}

#[tokio::test]
async fn an_expiring_token_ends_the_authorization() {
    let hub = hub().await;
    let mut connection = open_plain_amqp(amqp_tls(&hub).await).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = cbs(&mut session).await;
    let short = policy_token(POLICY_KEY, "iothubowner", "localhost", now_secs() + 2);
    let (_, status, _) = put_token(&mut cbs, MessageId::Ulong(1), "localhost", &short).await;
    assert_eq!(status, SimpleValue::Int(200));
    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;
    let detach = with_timeout("the link closing at expiry", c2d.on_detach()).await;
    assert!(
        format!("{detach:?}").contains("UnauthorizedAccess"),
        "{detach:?}"
    );
}

#[tokio::test]
async fn a_c2d_send_reaches_the_mqtt_device_with_every_property() {
    let hub = hub().await;
    let mut device = subscribed_device(&hub, "dev=1").await;
    let (_connection, mut session) = authorized_session(&hub).await;
    // uamqp's full-URL target, with c-sdk's capital B.
    let mut c2d = c2d_sender(&mut session, "amqps://localhost/messages/deviceBound").await;

    let uuid = Uuid::from([
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ]);
    let expiry_ms = (now_secs() as i64 + 3600) * 1000 + 302;
    let message = AmqpMessage::builder()
        .properties(Properties {
            message_id: Some(MessageId::Uuid(uuid)),
            correlation_id: Some(MessageId::Ulong(7)),
            user_id: Some(Binary::from(b"svc".to_vec())),
            // Node's encodeURIComponent(deviceId)
            to: Some("/devices/dev%3D1/messages/devicebound".into()),
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            absolute_expiry_time: Some(Timestamp::from_milliseconds(expiry_ms)),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", SimpleValue::String("full".into()))
                .insert("prop1", SimpleValue::String("v1".into()))
                .insert("prop 2", SimpleValue::String("a/b=c&d".into()))
                .insert("IoThub-status", SimpleValue::Int(200))
                .build(),
        )
        .data(Binary::from(br#"{"hello":"c2d"}"#.to_vec()))
        .build();
    let outcome = send(&mut c2d, message).await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");

    let publish = next_publish(&mut device).await;
    let topic = publish.topic.clone();
    let (to_device, got) =
        iothub::protocol::parse_c2d_topic(&topic, Bytes::from(publish.payload.to_vec())).unwrap();
    assert_eq!(to_device, "dev=1");
    let expected = Message::new(&br#"{"hello":"c2d"}"#[..])
        .with_message_id("12345678-9abc-4def-8123-456789abcdef")
        .with_correlation_id("7")
        .with_user_id("svc")
        .with_to("/devices/dev%3D1/messages/devicebound")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_expiry(UNIX_EPOCH + Duration::from_millis(expiry_ms as u64))
        .with_ack(Ack::Full)
        .with_property("prop1", "v1")
        .with_property("prop 2", "a/b=c&d")
        .with_property("IoThub-status", "200");
    assert_eq!(got, expected, "what the device decoded from {topic}");

    // The PUBACK completes the message: ack=full asks for a Success record, batched after the
    // flush interval and sent on the feedback link.
    device.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
    let mut feedback = Receiver::builder()
        .name("feedback")
        .source("/messages/serviceBound/feedback")
        .target("receiver_001")
        .attach(&mut session)
        .await
        .unwrap();
    let first = with_timeout("a feedback message", feedback.recv::<Body<Value>>())
        .await
        .unwrap();
    let m = first.message();
    let props = m.properties.as_ref().unwrap();
    assert_eq!(
        props.content_type.as_ref().map(|s| s.0.as_str()),
        Some(FEEDBACK_CONTENT_TYPE)
    );
    assert_eq!(
        props.user_id.as_ref().map(|b| b.to_vec()),
        Some(b"localhost".to_vec())
    );
    let annotations = m.message_annotations.as_ref().unwrap();
    assert!(matches!(
        annotations
            .0
            .get(&OwnedKey::Symbol(Symbol::from("iothub-enqueuedtime"))),
        Some(Value::Timestamp(_))
    ));
    let Body::Data(data) = &m.body else {
        panic!("a data body, got {:?}", m.body)
    };
    let bytes: Vec<u8> = data.iter().flat_map(|d| d.0.to_vec()).collect();
    let records = decode_feedback_batch(&bytes).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].original_message_id,
        "12345678-9abc-4def-8123-456789abcdef"
    );
    assert_eq!(records[0].status_code, FeedbackStatus::Success);
    assert_eq!(records[0].device_id, "dev=1");

    // Released (abandon): the same batch comes again; accepted: it is gone.
    feedback.release(&first).await.unwrap();
    let again = with_timeout("the released batch again", feedback.recv::<Body<Value>>())
        .await
        .unwrap();
    let Body::Data(data) = &again.message().body else {
        panic!("a data body")
    };
    let bytes: Vec<u8> = data.iter().flat_map(|d| d.0.to_vec()).collect();
    assert_eq!(decode_feedback_batch(&bytes).unwrap(), records);
    feedback.accept(&again).await.unwrap();
    feedback.close().await.unwrap();

    // A new receiver gets nothing more; a fresh record comes through it.
    let mut stream = hub.feedback();
    hub.enqueue_c2d(
        "dev=1",
        Message::new("again")
            .with_message_id("m2")
            .with_ack(Ack::Full),
    )
    .unwrap();
    let publish = next_publish(&mut device).await;
    device.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
    let batch = with_timeout("the next batch", stream.recv()).await.unwrap();
    assert_eq!(
        batch
            .iter()
            .map(|r| r.original_message_id.as_str())
            .collect::<Vec<_>>(),
        ["m2"],
        "the accepted batch did not come back"
    );
}

#[tokio::test]
async fn a_dropped_feedback_link_puts_the_batch_back() {
    let hub = hub().await;
    let mut device = subscribed_device(&hub, "dev1").await;
    hub.enqueue_c2d(
        "dev1",
        Message::new("x").with_message_id("m1").with_ack(Ack::Full),
    )
    .unwrap();
    let publish = next_publish(&mut device).await;
    device.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
    {
        let (mut connection, mut session) = authorized_session(&hub).await;
        let mut feedback = Receiver::builder()
            .name("feedback")
            .source("/messages/servicebound/feedback")
            .target("t")
            .attach(&mut session)
            .await
            .unwrap();
        let _unsettled = with_timeout("a feedback message", feedback.recv::<Body<Value>>())
            .await
            .unwrap();
        // Leave without settling.
        drop(feedback);
        drop(session);
        let _ = connection.close().await;
    }
    let mut stream = hub.feedback();
    let batch = with_timeout("the batch back", stream.recv()).await.unwrap();
    assert_eq!(batch[0].original_message_id, "m1");
}

#[tokio::test]
async fn refusals_carry_amqp_conditions() {
    let hub = hub_with(C2dLimits::new().with_max_pending(3)).await;
    hub.create_device("dev1").unwrap();
    let (_connection, mut session) = authorized_session(&hub).await;
    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;

    let outcome = send(
        &mut c2d,
        c2d_message("nobody", MessageId::String("m".into()), b"x".to_vec()),
    )
    .await;
    let (condition, description) = rejection(&outcome);
    assert_eq!(condition, "amqp:not-found");
    assert!(description.contains("nobody"), "{description}");

    for i in 0..3 {
        let outcome = send(
            &mut c2d,
            c2d_message("dev1", MessageId::Ulong(i), b"x".to_vec()),
        )
        .await;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::Ulong(3), b"x".to_vec()),
    )
    .await;
    assert_eq!(rejection(&outcome).0, "amqp:resource-limit-exceeded");

    hub.purge_c2d("dev1").unwrap();
    let outcome = send(
        &mut c2d,
        c2d_message(
            "dev1",
            MessageId::String("big".into()),
            vec![b'a'; 65 * 1024],
        ),
    )
    .await;
    assert_eq!(rejection(&outcome).0, "amqp:link:message-size-exceeded");

    let mut no_to = c2d_message("dev1", MessageId::String("m".into()), b"x".to_vec());
    no_to.properties.as_mut().unwrap().to = Some("/devices/dev1/messages/events".into());
    let outcome = send(&mut c2d, no_to).await;
    assert_eq!(rejection(&outcome).0, "com.microsoft:argument-error");

    // The link keeps working after refusals.
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::String("ok".into()), b"x".to_vec()),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
}

#[tokio::test]
async fn the_51st_message_is_refused_with_resource_limit_exceeded() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let (_connection, mut session) = authorized_session(&hub).await;
    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;
    for i in 0..50 {
        let outcome = send(
            &mut c2d,
            c2d_message("dev1", MessageId::Ulong(i), b"x".to_vec()),
        )
        .await;
        assert!(matches!(outcome, Outcome::Accepted(_)), "{i}: {outcome:?}");
    }
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::Ulong(50), b"x".to_vec()),
    )
    .await;
    assert_eq!(rejection(&outcome).0, "amqp:resource-limit-exceeded");
    assert_eq!(hub.c2d_queue_len("dev1"), Some(50));
}

#[tokio::test]
async fn sasl_plain_authorizes_the_connection() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let plain = |password: String| SaslProfile::Plain {
        username: "iothubowner@sas.root.localhost".into(),
        password,
    };
    let mut connection = with_timeout(
        "OPEN with PLAIN",
        Connection::builder()
            .container_id("c-sdk")
            .hostname("localhost")
            .scheme("amqp")
            .sasl_profile(plain(good_token()))
            .open_with_stream(amqp_tls(&hub).await),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut c2d = c2d_sender(&mut session, "amqps://localhost/messages/deviceBound").await;
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::String("c1".into()), b"x".to_vec()),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    c2d.close().await.unwrap();
    session.end().await.unwrap();
    connection.close().await.unwrap();

    let wrong = policy_token(b"wrong", "iothubowner", "localhost", now_secs() + 60);
    let refused = with_timeout(
        "OPEN with a bad PLAIN",
        Connection::builder()
            .container_id("c-sdk")
            .scheme("amqp")
            .sasl_profile(plain(wrong))
            .open_with_stream(amqp_tls(&hub).await),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn sasl_mssbcbs_then_cbs_works() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let mut stream = amqp_tls(&hub).await;
    let offered = sasl_mssbcbs(&mut stream).await;
    assert_eq!(offered, ["MSSBCBS", "PLAIN", "ANONYMOUS"]);
    let mut connection = open_plain_amqp(stream).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = cbs(&mut session).await;
    let (correlation, status, _) = put_token(
        &mut cbs,
        MessageId::Ulong(0),
        "https://localhost",
        &good_token(),
    )
    .await;
    assert_eq!(correlation, Some(MessageId::Ulong(0)));
    assert_eq!(status, SimpleValue::Int(200));
    let mut c2d = c2d_sender(&mut session, "amqps://localhost/messages/devicebound").await;
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::String("svc-m1".into()), b"x".to_vec()),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    // The file-notification link attaches too.
    let _files = Receiver::builder()
        .name("files")
        .source("/messages/serviceBound/filenotifications")
        .target("t")
        .attach(&mut session)
        .await
        .unwrap();
}

#[tokio::test]
async fn garbage_closes_only_its_own_connection() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let (_connection, mut session) = authorized_session(&hub).await;
    let mut c2d = c2d_sender(&mut session, "/messages/devicebound").await;

    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &b"AMQP\x02\x01\x00\x00"[..]] {
        let mut bad = amqp_tls(&hub).await;
        bad.write_all(garbage).await.unwrap();
        let mut answer = Vec::new();
        let _ = with_timeout("the hub closing", bad.read_to_end(&mut answer)).await;
        assert_eq!(
            answer, SASL_HEADER,
            "the hub names the header it speaks, then closes"
        );
    }
    let outcome = send(
        &mut c2d,
        c2d_message("dev1", MessageId::String("still".into()), b"x".to_vec()),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
}

/// AMQP over WebSockets on the HTTPS port: both paths, subprotocol `AMQPWSB10`.
#[tokio::test]
async fn amqp_over_websockets_answers_on_both_paths() {
    let hub = hub().await;
    for path in ["/$iothub/websocket", "/$servicebus/websocket/"] {
        let tls = tls_stream(&hub, hub.https_addr().port()).await;
        let mut request = format!("wss://localhost:{}{path}", hub.https_addr().port())
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("AMQPWSB10"),
        );
        let (mut ws, response) = with_timeout(
            "the WebSocket upgrade",
            tokio_tungstenite::client_async(request, tls),
        )
        .await
        .unwrap();
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "AMQPWSB10",
            "{path}"
        );
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            AMQP_HEADER.to_vec().into(),
        ))
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < 8 {
            match with_timeout("the AMQP header back", ws.next()).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                    got.extend_from_slice(&b)
                }
                other => panic!("{path}: unexpected {other:?}"),
            }
        }
        assert_eq!(&got[..8], AMQP_HEADER, "{path}");
    }
}
