//! Device twins and direct methods on the local hub: a raw MQTT device (rumqttc's codec over
//! TLS, so every packet is checked as bytes a device sees) and the back end over HTTPS, through
//! our `RegistryManager` and raw requests.
#![cfg(feature = "local-hub")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, WAIT};
use iothub::ErrorKind;
use iothub::local_hub::LocalHub;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe, SubscribeReasonCode, Unsubscribe};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

type Device = RawClient<TlsStream<TcpStream>>;

async fn hub() -> LocalHub {
    LocalHub::builder().start().await.unwrap()
}

async fn connect(hub: &LocalHub, device: &str) -> Device {
    let cs = hub
        .device_connection_string(device)
        .unwrap_or_else(|| hub.create_device(device).unwrap());
    let (client, _) = RawClient::connect(hub, &cs).await;
    client
}

async fn subscribe(client: &mut Device, filter: &str) -> SubscribeReasonCode {
    client
        .send(Packet::Subscribe(Subscribe::new(filter, QoS::AtMostOnce)))
        .await;
    loop {
        match client.recv().await {
            Packet::SubAck(ack) => return ack.return_codes[0],
            Packet::Publish(_) | Packet::PingResp => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

async fn publish(client: &mut Device, topic: &str, body: &[u8]) {
    let publish = Publish::new(topic, QoS::AtMostOnce, Bytes::copy_from_slice(body));
    client.send(Packet::Publish(publish)).await;
}

async fn next_publish(client: &mut Device) -> Publish {
    loop {
        match client.recv().await {
            Packet::Publish(p) => return p,
            Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp | Packet::PubAck(_) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

fn json_of(publish: &Publish) -> Value {
    serde_json::from_slice(&publish.payload).unwrap()
}

/// Nothing arrives within a short while (a PINGREQ round trip proves the hub had its turn).
async fn expect_nothing(client: &mut Device) {
    client.send(Packet::PingReq).await;
    loop {
        match client.recv().await {
            Packet::PingResp => return,
            Packet::Publish(p) => panic!("unexpected PUBLISH {}", p.topic),
            _ => {}
        }
    }
}

#[tokio::test]
async fn twin_get_and_reported_patch_over_mqtt() {
    let hub = hub().await;
    let mut device = connect(&hub, "dev1").await;
    subscribe(&mut device, "$iothub/twin/res/#").await;

    publish(&mut device, "$iothub/twin/GET/?$rid=1", b" ").await;
    let answer = next_publish(&mut device).await;
    assert_eq!(answer.topic, "$iothub/twin/res/200/?$rid=1");
    assert_eq!(
        json_of(&answer),
        json!({"desired": {"$version": 1}, "reported": {"$version": 1}})
    );

    publish(
        &mut device,
        "$iothub/twin/PATCH/properties/reported/?$rid=r2",
        br#"{"temp": 21, "nested": {"a": 1}}"#,
    )
    .await;
    let answer = next_publish(&mut device).await;
    assert_eq!(answer.topic, "$iothub/twin/res/204/?$rid=r2&$version=2");
    assert!(answer.payload.is_empty());

    publish(
        &mut device,
        "$iothub/twin/PATCH/properties/reported/?$rid=r3",
        br#"{"nested": {"a": null, "b": 2}}"#,
    )
    .await;
    let answer = next_publish(&mut device).await;
    assert_eq!(answer.topic, "$iothub/twin/res/204/?$rid=r3&$version=3");

    publish(&mut device, "$iothub/twin/GET/?$rid=4", b"").await;
    let answer = next_publish(&mut device).await;
    assert_eq!(
        json_of(&answer),
        json!({"desired": {"$version": 1},
               "reported": {"temp": 21, "nested": {"b": 2}, "$version": 3}})
    );
}

#[tokio::test]
async fn bad_reported_patches_get_400_and_change_nothing() {
    let hub = hub().await;
    let mut device = connect(&hub, "dev1").await;
    subscribe(&mut device, "$iothub/twin/res/#").await;
    let too_big = format!(
        r#"{{"big": "{}", "more": "{}"}}"#,
        "x".repeat(4000),
        "y".repeat(4000)
    );
    let mut huge = serde_json::Map::new();
    for i in 0..10 {
        huge.insert(format!("k{i}"), json!("z".repeat(4000)));
    }
    let huge = Value::Object(huge).to_string();
    let cases: [(&str, &[u8]); 7] = [
        ("malformed", b"{not json"),
        ("array", b"[1,2]"),
        ("dollar key", br#"{"$bad": 1}"#),
        ("dot key", br#"{"a.b": 1}"#),
        ("nested dollar", br#"{"a": {"$b": 1}}"#),
        ("over 32 KB", huge.as_bytes()),
        ("fits", too_big.as_bytes()),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={i}");
        publish(&mut device, &topic, body).await;
        let answer = next_publish(&mut device).await;
        if *what == "fits" {
            assert_eq!(
                answer.topic,
                format!("$iothub/twin/res/204/?$rid={i}&$version=2")
            );
        } else {
            assert_eq!(
                answer.topic,
                format!("$iothub/twin/res/400/?$rid={i}"),
                "{what}"
            );
        }
    }
    // An unknown $iothub topic is ignored, and the session goes on.
    publish(
        &mut device,
        "$iothub/twin/PATCH/properties/desired/?$rid=9",
        b"{}",
    )
    .await;
    publish(&mut device, "$iothub/methods/res/200/?$rid=unknown", b"{}").await;
    expect_nothing(&mut device).await;
    assert_eq!(
        hub.twin_properties("dev1", None)
            .unwrap()
            .reported_version(),
        Some(2)
    );
}

#[tokio::test]
async fn desired_patches_reach_subscribed_sessions_only() {
    let hub = hub().await;
    let mut subscribed = connect(&hub, "dev1").await;
    let mut other = connect(&hub, "dev2").await;
    assert_eq!(
        subscribe(&mut subscribed, "$iothub/twin/PATCH/properties/desired/#").await,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );
    let version = hub
        .update_desired_properties("dev1", None, json!({"rate": 5, "gone": null}))
        .unwrap();
    assert_eq!(version, 2);
    let patch = next_publish(&mut subscribed).await;
    assert_eq!(
        patch.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    assert_eq!(
        json_of(&patch),
        json!({"rate": 5, "gone": null, "$version": 2})
    );

    hub.update_desired_properties("dev2", None, json!({"rate": 1}))
        .unwrap();
    expect_nothing(&mut other).await;

    // After an UNSUBSCRIBE, patches stop.
    subscribed
        .send(Packet::Unsubscribe(Unsubscribe::new(
            "$iothub/twin/PATCH/properties/desired/#",
        )))
        .await;
    assert!(matches!(subscribed.recv().await, Packet::UnsubAck(_)));
    hub.update_desired_properties("dev1", None, json!({"rate": 6}))
        .unwrap();
    expect_nothing(&mut subscribed).await;
}

#[tokio::test]
async fn a_method_call_round_trips() {
    let hub = hub().await;
    let mut device = connect(&hub, "dev1").await;
    subscribe(&mut device, "$iothub/methods/POST/#").await;
    let call = hub.invoke_method(
        "dev1",
        None,
        "reboot",
        json!({"delay": 3}),
        Duration::from_secs(30),
        Duration::ZERO,
    );
    let device_side = async {
        let request = next_publish(&mut device).await;
        let (name, rid) = request
            .topic
            .strip_prefix("$iothub/methods/POST/")
            .unwrap()
            .split_once("/?$rid=")
            .unwrap();
        assert_eq!(name, "reboot");
        assert_eq!(json_of(&request), json!({"delay": 3}));
        let topic = format!("$iothub/methods/res/201/?$rid={rid}");
        publish(&mut device, &topic, br#"{"done": true}"#).await;
    };
    let (result, ()) = timeout(WAIT, async { tokio::join!(call, device_side) })
        .await
        .unwrap();
    let result = result.unwrap();
    assert_eq!(
        (result.status, result.payload),
        (201, json!({"done": true}))
    );
}

#[tokio::test]
async fn method_calls_fail_fast_when_the_device_is_not_there() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let call = |name: &'static str| {
        hub.invoke_method(
            "dev1",
            None,
            name,
            Value::Null,
            Duration::from_secs(30),
            Duration::ZERO,
        )
    };
    let err = call("m").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotOnline);
    // Connected but not subscribed to methods: still not online for methods.
    let mut device = connect(&hub, "dev1").await;
    let err = call("m").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotOnline);
    let err = hub
        .invoke_method("nobody", None, "m", Value::Null, WAIT, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotFound);
    let err = call("a/b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);

    // Subscribed, then disconnected with the call in flight: the call fails at once.
    subscribe(&mut device, "$iothub/methods/POST/#").await;
    let device_side = async {
        let _request = next_publish(&mut device).await;
        assert!(hub.disconnect_device("dev1"));
    };
    let (result, ()) = timeout(WAIT, async { tokio::join!(call("slow"), device_side) })
        .await
        .expect("the call ends when the device disconnects, long before its 30 s timeout");
    assert_eq!(result.unwrap_err().kind(), ErrorKind::DeviceNotOnline);
}
