//! A session over an in-memory stream: what the rest of the hub pushes reaches the client.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, PubAck, Subscribe};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

use super::run_session;
use crate::auth::ResourceUri;
use crate::local_hub::c2d_queue::C2dLimits;
use crate::local_hub::feedback_queue::FeedbackLimits;
use crate::local_hub::state::{
    DeviceSpec, DeviceStatus, HubSettings, HubState, Identity, Outbound,
};
use crate::message::Message;

const WAIT: Duration = Duration::from_secs(5);

struct Client {
    stream: DuplexStream,
    read: BytesMut,
}

impl Client {
    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, usize::MAX).unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        timeout(WAIT, async {
            loop {
                match Packet::read(&mut self.read, 1 << 20) {
                    Ok(packet) => return packet,
                    Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("malformed packet: {e}"),
                }
                let n = self.stream.read_buf(&mut self.read).await.unwrap();
                assert_ne!(n, 0, "the hub closed the connection");
            }
        })
        .await
        .expect("a packet in time")
    }
}

/// A hub with device `dev1` and a client connected as it.
async fn connected() -> (Arc<HubState>, Client) {
    let state = Arc::new(HubState::new(
        HubSettings {
            host_name: "localhost".to_owned(),
            c2d: C2dLimits::default(),
            feedback_flush_interval: Duration::from_secs(15),
            feedback: FeedbackLimits::default(),
            telemetry: crate::local_hub::telemetry_log::LogSettings::default(),
        },
        Vec::new(),
    ));
    let record = state
        .put_device(
            DeviceSpec {
                device_id: "dev1".to_owned(),
                status: DeviceStatus::Enabled,
                status_reason: None,
                primary_key: None,
                secondary_key: None,
                iot_edge: false,
                authentication: Default::default(),
            },
            None,
        )
        .unwrap();
    let now = state.clock.now().duration_since(UNIX_EPOCH).unwrap();
    let token = record.primary_key.token(
        &ResourceUri::device("localhost", "dev1"),
        None,
        now.as_secs() + 3600,
    );
    let (hub_side, client_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(run_session(state.clone(), hub_side, "test".to_owned()));
    let mut client = Client {
        stream: client_side,
        read: BytesMut::new(),
    };
    let mut connect = Connect::new("dev1");
    connect.keep_alive = 60;
    connect.login = Some(Login::new(
        "localhost/dev1/?api-version=2021-04-12",
        token.to_string(),
    ));
    client.send(Packet::Connect(connect)).await;
    match client.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.code, mqttbytes::v4::ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    (state, client)
}

#[tokio::test]
async fn a_pushed_publish_reaches_the_client_beside_c2d_deliveries() {
    let (state, mut client) = connected().await;
    let device = Identity::device("dev1");
    let pushed = Outbound::Publish {
        topic: "$iothub/methods/POST/reboot/?$rid=1".to_owned(),
        payload: Bytes::from_static(b"{}"),
        qos: QoS::AtLeastOnce,
    };
    assert!(state.push(&device, pushed));
    let publish = match client.recv().await {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(publish.topic, "$iothub/methods/POST/reboot/?$rid=1");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_ne!(publish.pkid, 0);
    client.send(Packet::PubAck(PubAck::new(publish.pkid))).await;

    // C2D still flows, on its own packet ids, and completes on PUBACK.
    client
        .send(Packet::Subscribe(Subscribe::new(
            "devices/dev1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )))
        .await;
    assert!(matches!(client.recv().await, Packet::SubAck(_)));
    state.enqueue_c2d("dev1", Message::new("c2d")).unwrap();
    let delivery = match client.recv().await {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(&delivery.payload[..], b"c2d");
    client
        .send(Packet::PubAck(PubAck::new(delivery.pkid)))
        .await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
    assert_eq!(state.c2d_queue_len("dev1"), Some(0));

    // Nobody is connected as a module of dev1.
    let to_module = Outbound::Publish {
        topic: "t".to_owned(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
    };
    assert!(!state.push(&Identity::module("dev1", "m1"), to_module));
}
