//! Interop with the official Azure IoT Python SDKs (azure-iot-device 2.14.0, azure-iot-hub
//! 2.7.0): the peers in `tests/interop/` talk to an in-process [`LocalHub`] over loopback, and
//! every test checks what the SDK decoded, so a wrong wire format fails here.
//!
//! Needs a venv made by `tests/interop/setup-python.sh VENV`, passed as
//! `IOTHUB_PYTHON=VENV/bin/python`. Without it each test prints a `skipped:` line and passes,
//! unless `IOTHUB_REQUIRE_INTEROP=1`, which turns the missing venv into a failure (for CI).
//! See `tests/interop/README.md`.
#![cfg(feature = "local-hub")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub::protocol::FeedbackStatus;
use iothub::{Ack, Message};
use serde_json::{Value, json};
use tokio::time::timeout;

#[path = "interop/peer.rs"]
mod peer;

use peer::{
    HUB_WAIT, PEER_DEADLINE_SECS, Peer, TempFile, device_args, hub, hub_time_text, python,
    python_device_connection_string,
};

/// A C2D message with every system property the Python SDK exposes and custom properties whose
/// names and values need percent-encoding in the topic.
async fn c2d_to_python_device(websockets: bool) {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let device_id = if websockets { "py-wss" } else { "py-tls" };
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut feedback = hub.feedback();

    let extra: &[&str] = if websockets { &["--websockets"] } else { &[] };
    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        1,
        extra,
    );
    let mut peer = Peer::spawn(&python, "py_device.py", &args, ca.path());
    peer.expect_line("connected").await;
    assert!(hub.is_connected(device_id), "the hub sees {device_id}");

    let message_id = format!("c2d-{device_id}-1");
    let body = r#"{"hello":"c2d","n":1,"s":"grüße"}"#;
    // Whole seconds plus 123.4 ms, an hour ahead: the hub keeps the time to 100 ns.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expiry = UNIX_EPOCH + Duration::new(now.as_secs() + 3600, 123_400_000);
    let properties = [
        ("prop1", "v1"),
        ("prop 2", "v/2"),
        ("unicode", "grüße ✓ 日本"),
        ("equals", "a=b"),
        ("amp", "x&y=z"),
        ("percent", "100%25 %"),
        ("plus", "1+1 = 2"),
        ("path/key", "?q=1#frag"),
        ("empty", ""),
    ];
    let mut message = Message::new(body)
        .with_message_id(&message_id)
        .with_correlation_id("corr/1 ä")
        .with_user_id("backend-user")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_expiry(expiry)
        .with_ack(Ack::Full);
    for (name, value) in properties {
        message = message.with_property(name, value);
    }
    hub.enqueue_c2d(device_id, message).unwrap();

    let got = peer.json_line("the C2D message as JSON").await;
    let custom: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let expected = json!({
        "data": body,
        "message_id": message_id,
        "correlation_id": "corr/1 ä",
        "user_id": "backend-user",
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "expiry_time_utc": hub_time_text(expiry),
        "ack": "full",
        "custom_properties": custom,
    });
    assert_eq!(
        got, expected,
        "what azure-iot-device decoded from the hub's PUBLISH"
    );
    peer.expect_success().await;

    // The SDK PUBACKs on receipt, which completes the message: full ack asks for Success.
    let record = timeout(HUB_WAIT, async {
        loop {
            let batch = feedback.recv().await.expect("the hub is running");
            if let Some(r) = batch
                .into_iter()
                .find(|r| r.original_message_id == message_id)
            {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no feedback for {message_id} within {HUB_WAIT:?}"));
    assert_eq!(record.status_code, FeedbackStatus::Success);
    assert_eq!(record.description, "Success");
    assert_eq!(record.device_id, device_id);
    assert_eq!(
        hub.c2d_queue_len(device_id),
        Some(0),
        "the message is completed"
    );
}

#[tokio::test]
async fn python_device_receives_c2d_over_mqtt_tls() {
    c2d_to_python_device(false).await;
}

#[tokio::test]
async fn python_device_receives_c2d_over_websockets() {
    c2d_to_python_device(true).await;
}

#[tokio::test]
async fn python_device_telemetry_reaches_the_hub() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let device_id = "py-d2c";
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut telemetry = hub.telemetry();

    let body = r#"{"t":1,"s":"grüße & 100%"}"#;
    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        0,
        &["--send-telemetry", body],
    );
    let mut peer = Peer::spawn(&python, "py_device.py", &args, ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    peer.expect_success().await;

    let received = timeout(HUB_WAIT, telemetry.recv())
        .await
        .unwrap_or_else(|_| panic!("no telemetry within {HUB_WAIT:?}"))
        .expect("the hub is running");
    assert_eq!(received.device_id, device_id);
    assert_eq!(received.module_id, None);
    let message = received.message;
    assert_eq!(message.body_str(), Some(body));
    assert_eq!(message.message_id(), Some("d2c-1"));
    assert_eq!(message.content_type(), Some("application/json"));
    assert_eq!(message.content_encoding(), Some("utf-8"));
    assert_eq!(message.correlation_id(), None);
    assert_eq!(message.ack(), None);
    assert_eq!(
        message.properties().collect::<Vec<_>>(),
        vec![("k", Some("v v"))],
        "custom properties of the telemetry message"
    );
}

#[tokio::test]
async fn python_registry_create_get_delete() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let service = hub.service_connection_string().to_string();
    assert!(
        service.starts_with("HostName=localhost;SharedAccessKeyName=iothubowner;"),
        "a port-free iothubowner connection string: {service:?}"
    );
    let device_id = "py-registry-1";
    let args = vec![
        "--connection-string".to_owned(),
        service,
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--https-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--device-id".to_owned(),
        device_id.to_owned(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut peer = Peer::spawn(&python, "py_registry.py", &args, ca.path());

    let device_step = |step: &str, v: &Value| {
        let ctx = format!("step {step}: {v}");
        assert_eq!(v["step"], step, "{ctx}");
        assert_eq!(v["ok"], true, "{ctx}");
        assert_eq!(v["device_id"], device_id, "{ctx}");
        assert_eq!(v["status"], "enabled", "{ctx}");
        assert_eq!(v["auth_type"], "sas", "{ctx}");
        assert_eq!(v["primary_key_matches"], true, "{ctx}");
        assert_eq!(v["secondary_key_matches"], true, "{ctx}");
        assert!(v["etag"].as_str().is_some_and(|e| !e.is_empty()), "{ctx}");
    };

    let create = peer.json_line("the create step").await;
    device_step("create", &create);
    let get = peer.json_line("the get step").await;
    device_step("get", &get);
    assert_eq!(get["etag"], create["etag"], "unchanged device, same etag");

    let delete = peer.json_line("the delete step").await;
    assert_eq!(
        delete,
        json!({"step": "delete", "ok": true, "device_id": device_id, "result": "None"})
    );

    let gone = peer.json_line("the get_deleted step").await;
    let ctx = format!("get_deleted: {gone}");
    assert_eq!(gone["step"], "get_deleted", "{ctx}");
    assert_eq!(gone["ok"], true, "{ctx}");
    assert_eq!(gone["error_status_code"], 404, "{ctx}");
    assert_eq!(gone["iothub_errorcode"], "DeviceNotFound", "{ctx}");
    assert!(
        gone["error_body"]
            .as_str()
            .is_some_and(|b| b.contains("ErrorCode:DeviceNotFound;")),
        "legacy error body: {ctx}"
    );

    peer.expect_success().await;
    assert!(
        hub.device_connection_string(device_id).is_none(),
        "the hub no longer has {device_id}"
    );
}

/// azure-iot-hub 2.7.0 sends a C2D message over AMQP (uamqp: SASL MSSBCBS, CBS with a ulong
/// message-id, the `amqps://host/messages/devicebound` target) with `iothub-ack: full`;
/// azure-iot-device 2.14.0 receives it with every property, and its PUBACK brings `Success`
/// feedback.
#[tokio::test]
async fn python_service_sends_c2d_over_amqp_to_the_python_device() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let device_id = "py-amqp";
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut feedback = hub.feedback();

    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        1,
        &[],
    );
    let mut device = Peer::spawn(&python, "py_device.py", &args, ca.path());
    device.expect_line("connected").await;

    let body = r#"{"hello":"from azure-iot-hub","s":"grüße"}"#;
    let properties = json!({
        "messageId": "svc-m1",
        "correlationId": "svc-c1",
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "iothub-ack": "full",
        "prop1": "v1",
        "prop 2": "a/b=c&d",
    });
    let service_args = vec![
        "--connection-string".to_owned(),
        hub.service_connection_string().to_string(),
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--amqp-port".to_owned(),
        hub.amqp_addr().port().to_string(),
        "--device-id".to_owned(),
        device_id.to_owned(),
        "--data".to_owned(),
        body.to_owned(),
        "--properties".to_owned(),
        properties.to_string(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut service = Peer::spawn(&python, "py_service.py", &service_args, ca.path());
    service.expect_line("sent").await;
    service.expect_success().await;

    let got = device.json_line("the C2D message as JSON").await;
    let expected = json!({
        "data": body,
        "message_id": "svc-m1",
        "correlation_id": "svc-c1",
        "user_id": null,
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "expiry_time_utc": null,
        "ack": "full",
        "custom_properties": {"prop1": "v1", "prop 2": "a/b=c&d"},
    });
    assert_eq!(got, expected, "what azure-iot-device decoded");
    device.expect_success().await;

    let record = timeout(HUB_WAIT, async {
        loop {
            let batch = feedback.recv().await.expect("the hub is running");
            if let Some(r) = batch
                .into_iter()
                .find(|r| r.original_message_id == "svc-m1")
            {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no feedback for svc-m1 within {HUB_WAIT:?}"));
    assert_eq!(record.status_code, FeedbackStatus::Success);
    assert_eq!(record.device_id, device_id);
}
