//! Interop of our service client with the official Azure IoT SDKs, through an in-process
//! [`LocalHub`]:
//!
//! - our [`RegistryManager::send_c2d_message`] (AMQP) → the official Python device SDK
//!   (azure-iot-device 2.14.0, `py_device.py`) and the official Node device SDK
//!   (azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4, `node_device.js`), each seeing
//!   every property exact; then `Success` on our [`RegistryManager::feedback_receiver`];
//! - the official Node service SDK (azure-iothub 1.16.6 `Client.send`, `node_service_send.js`)
//!   → our [`DeviceClient`], every property exact; then `Success` on Node's feedback receiver.
//!
//! Needs `IOTHUB_PYTHON` and/or `IOTHUB_NODE_MODULES` (see `tests/interop/README.md`); without
//! them a test prints a `skipped:` line and passes, unless `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(all(feature = "local-hub", feature = "service", feature = "device"))]

#[path = "interop/peer.rs"]
mod peer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub::device::DeviceClient;
use iothub::local_hub::LocalHub;
use iothub::protocol::{FeedbackRecord, FeedbackStatus};
use iothub::service::{FeedbackReceiver, RegistryManager};
use iothub::{Ack, Message};
use peer::{
    HUB_WAIT, PEER_DEADLINE_SECS, Peer, TempFile, device_args, hub, hub_time_text, node_modules,
    python, python_device_connection_string,
};
use serde_json::{Value, json};
use tokio::time::timeout;

/// Custom properties whose names and values need percent-encoding on the MQTT topic: unicode,
/// `/ & = % +`, spaces, `?` and `#`, and an empty value.
const TRICKY_PROPERTIES: &[(&str, &str)] = &[
    ("prop1", "v1"),
    ("ünï/cødé ✓", "grüße 日本 ✓"),
    ("a&b=c", "x&y=z"),
    ("percent%25 %", "100%25 %"),
    ("plus+key", "1+1 = 2"),
    ("path/key?q", "/a/b?c=d#frag"),
    ("empty", ""),
];

fn registry(hub: &LocalHub) -> RegistryManager {
    RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .expect("the registry manager builds")
}

/// An expiry an hour ahead with a millisecond part (AMQP timestamps are milliseconds).
fn expiry_in_an_hour() -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::new(now.as_secs() + 3600, 302_000_000)
}

/// A message with every property our `Message` carries and `Ack::Full`.
fn full_message(message_id: &str, body: &str, expiry: SystemTime) -> Message {
    let mut message = Message::new(body.to_owned())
        .with_message_id(message_id)
        .with_correlation_id("corr/1 ä&=%+")
        .with_user_id("backend-user")
        .with_content_type("application/json; charset=utf-8")
        .with_content_encoding("utf-8")
        .with_expiry(expiry)
        .with_ack(Ack::Full);
    for (name, value) in TRICKY_PROPERTIES {
        message = message.with_property(*name, *value);
    }
    message
}

fn tricky_properties_json(extra: &[(&str, &str)]) -> Value {
    TRICKY_PROPERTIES
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Waits on our feedback receiver for the record of `message_id`, completing every batch.
async fn our_feedback_for(feedback: &mut FeedbackReceiver, message_id: &str) -> FeedbackRecord {
    timeout(HUB_WAIT, async {
        loop {
            let batch = feedback
                .recv()
                .await
                .expect("the feedback receiver is running")
                .expect("a feedback batch");
            let found = batch
                .records()
                .iter()
                .find(|r| r.original_message_id == message_id)
                .cloned();
            batch.complete().await.expect("the batch completes");
            if let Some(record) = found {
                return record;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no feedback for {message_id} within {HUB_WAIT:?}"))
}

/// Checks a `Success` record for `device_id`, whose generation id the registry confirms.
async fn assert_success(registry: &RegistryManager, record: &FeedbackRecord, device_id: &str) {
    assert_eq!(record.status_code, FeedbackStatus::Success, "{record:?}");
    assert_eq!(record.description, "Success", "{record:?}");
    assert_eq!(record.device_id, device_id, "{record:?}");
    let device = registry.get_device(device_id).await.unwrap();
    assert_eq!(
        record.device_generation_id, device.generation_id,
        "{record:?}"
    );
    assert!(!record.enqueued_time_utc.is_empty(), "{record:?}");
}

/// (a) Our `send_c2d_message` over AMQP with every property and `Ack::Full` → azure-iot-device
/// 2.14.0 (Python, MQTT/TLS) decodes each one exactly; its PUBACK brings `Success` feedback to
/// our feedback receiver.
#[tokio::test]
async fn our_send_reaches_the_python_device_with_every_property() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let registry = registry(&hub);
    // IoT Hub allows `- . + % _ # * ? ! ( ) , : = @ $ '` in device ids; `+` and `#` cannot go in
    // an MQTT topic filter, the rest can.
    let device_id = "py.svc_dev-1:(a)=@$'!";
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut feedback = registry.feedback_receiver();

    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        1,
        &[],
    );
    let mut device = Peer::spawn(&python, "py_device.py", &args, ca.path());
    device.expect_line("connected").await;

    let message_id = "rust-svc → py ✓";
    let body = r#"{"from":"RegistryManager","s":"grüße & 100% + /"}"#;
    let expiry = expiry_in_an_hour();
    timeout(
        HUB_WAIT,
        registry.send_c2d_message(device_id, full_message(message_id, body, expiry)),
    )
    .await
    .expect("the send settles in time")
    .expect("the hub accepts the message");

    let got = device.json_line("the C2D message as JSON").await;
    let expected = json!({
        "data": body,
        "message_id": message_id,
        "correlation_id": "corr/1 ä&=%+",
        "user_id": "backend-user",
        "content_type": "application/json; charset=utf-8",
        "content_encoding": "utf-8",
        "expiry_time_utc": hub_time_text(expiry),
        "ack": "full",
        "custom_properties": tricky_properties_json(&[]),
    });
    assert_eq!(got, expected, "what azure-iot-device decoded");
    device.expect_success().await;

    let record = our_feedback_for(&mut feedback, message_id).await;
    assert_success(&registry, &record, device_id).await;
    assert_eq!(hub.c2d_queue_len(device_id), Some(0), "completed");
}

/// (b) Our `send_c2d_message` with every property and `Ack::Full` → azure-iot-device 1.18.4 +
/// azure-iot-device-mqtt 1.16.4 (Node, MQTT/TLS on the port in `GatewayHostName`); Node keeps
/// `$.to` and hands `iothub-ack` over as a custom property. `Success` feedback follows.
#[tokio::test]
async fn our_send_reaches_the_node_device_with_every_property() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let registry = registry(&hub);
    let device_id = "node.svc_dev-1:(a)=@$'!";
    let cs = hub.create_device(device_id).unwrap().to_string();
    assert!(
        cs.contains(&format!(
            ";GatewayHostName=localhost:{}",
            hub.mqtt_addr().port()
        )),
        "Node dials the port in GatewayHostName: {cs}"
    );
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut feedback = registry.feedback_receiver();

    let args: Vec<String> = [
        "--connection-string",
        &cs,
        "--ca-file",
        &ca.path().display().to_string(),
        "--count",
        "1",
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut device = Peer::spawn_node(&node_modules, "node_device.js", &args, ca.path());
    device.expect_line("connected").await;
    assert!(hub.is_connected(device_id), "the hub sees {device_id}");

    let message_id = "rust-svc → node ✓";
    let body = r#"{"from":"RegistryManager","s":"grüße & 100% + /"}"#;
    let expiry = expiry_in_an_hour();
    timeout(
        HUB_WAIT,
        registry.send_c2d_message(device_id, full_message(message_id, body, expiry)),
    )
    .await
    .expect("the send settles in time")
    .expect("the hub accepts the message");

    let got = device.json_line("the C2D message as JSON").await;
    let expected = json!({
        "data": body,
        "messageId": message_id,
        "correlationId": "corr/1 ä&=%+",
        "userId": "backend-user",
        // Our percent-encoding of the id: all but `A-Z a-z 0-9 - . _ ~`.
        "to": "/devices/node.svc_dev-1%3A%28a%29%3D%40%24%27%21/messages/devicebound",
        "contentType": "application/json; charset=utf-8",
        "contentEncoding": "utf-8",
        "expiryTimeUtc": hub_time_text(expiry),
        "properties": tricky_properties_json(&[("iothub-ack", "full")]),
    });
    assert_eq!(
        got, expected,
        "what azure-iot-device-mqtt decoded from the hub's PUBLISH"
    );
    device.expect_success().await;

    let record = our_feedback_for(&mut feedback, message_id).await;
    assert_success(&registry, &record, device_id).await;
    assert_eq!(hub.c2d_queue_len(device_id), Some(0), "completed");
}

/// (c) azure-iothub 1.16.6 `Client.send` (Node, AMQP without SASL, port in `HostName`) with every
/// property it maps — a UUID-shaped correlation id goes out as an AMQP `uuid` — reaches our
/// `DeviceClient` exactly; our automatic PUBACK brings `Success` to Node's feedback receiver.
#[tokio::test]
async fn node_service_send_reaches_our_device_with_every_property() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let device_id = "our.dev_1:(a)=@$'!";
    let cs = hub.create_device(device_id).unwrap();
    let device = timeout(
        HUB_WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .expect("the device connects in time")
    .expect("the device connects");
    let ca = TempFile::new("ca.pem", hub.ca_pem());

    let message_id = "node-svc → rust ✓";
    // Matches azure-iothub's uuid pattern, so rhea encodes it as an AMQP uuid (16 bytes).
    let correlation_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let body = r#"{"from":"azure-iothub","s":"grüße & 100% + /"}"#;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expiry_ms = (now.as_secs() + 3600) * 1000 + 302;
    let properties: Vec<Value> = TRICKY_PROPERTIES
        .iter()
        .map(|(k, v)| json!([k, v]))
        .collect();
    let spec = json!({
        "data": body,
        "messageId": message_id,
        "correlationId": correlation_id,
        "contentType": "application/json; charset=utf-8",
        "contentEncoding": "utf-8",
        "expiryMs": expiry_ms,
        "ack": "full",
        "properties": properties,
    });
    let service = hub.amqp_connection_string().to_string();
    let args: Vec<String> = [
        "--connection-string",
        &service,
        "--device-id",
        device_id,
        "--message",
        &spec.to_string(),
        "--feedback",
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut sender = Peer::spawn_node(&node_modules, "node_service_send.js", &args, ca.path());
    assert_eq!(
        sender.json_line("the sent step").await,
        json!({"step": "sent"})
    );

    let got = timeout(HUB_WAIT, device.receive_message())
        .await
        .unwrap_or_else(|_| panic!("no C2D message within {HUB_WAIT:?}"))
        .expect("a C2D message");
    assert_eq!(got.body_str(), Some(body));
    assert_eq!(got.message_id(), Some(message_id));
    assert_eq!(got.correlation_id(), Some(correlation_id));
    assert_eq!(got.user_id(), None);
    assert_eq!(got.content_type(), Some("application/json; charset=utf-8"));
    assert_eq!(got.content_encoding(), Some("utf-8"));
    assert_eq!(
        got.expiry(),
        Some(UNIX_EPOCH + Duration::from_millis(expiry_ms))
    );
    // encodeURIComponent(deviceId), as azure-iothub writes it.
    assert_eq!(
        got.to(),
        Some("/devices/our.dev_1%3A(a)%3D%40%24'!/messages/devicebound")
    );
    assert_eq!(got.ack(), Some(Ack::Full));
    let mut props: Vec<(&str, Option<&str>)> = got.properties().collect();
    props.sort();
    let mut want: Vec<(&str, Option<&str>)> = TRICKY_PROPERTIES
        .iter()
        .map(|(k, v)| (*k, Some(*v)))
        .collect();
    want.sort();
    assert_eq!(
        props, want,
        "custom properties as our DeviceClient decoded them"
    );

    // AckMode::Auto completed it on receipt: Node's feedback receiver gets Success.
    let feedback = sender.json_line("a feedback message").await;
    assert_eq!(feedback["step"], "feedback", "{feedback}");
    assert_eq!(
        feedback["contentType"], "application/vnd.microsoft.iothub.feedback.json",
        "{feedback}"
    );
    let records = feedback["records"].as_array().expect("records");
    let record = records
        .iter()
        .find(|r| r["originalMessageId"] == message_id)
        .unwrap_or_else(|| panic!("no record for {message_id}: {feedback}"));
    assert_eq!(
        record["statusCode"],
        FeedbackStatus::Success.as_str(),
        "{feedback}"
    );
    assert_eq!(record["description"], "Success", "{feedback}");
    assert_eq!(record["deviceId"], device_id, "{feedback}");
    sender.expect_success().await;
    assert_eq!(hub.c2d_queue_len(device_id), Some(0), "completed");
    device.close().await.unwrap();
}
