//! Interop with the official Azure IoT Node service SDK (azure-iothub 1.16.6): it sends a C2D
//! message over AMQP to an in-process [`LocalHub`] (no SASL layer, CBS with a string
//! message-id, the port in `HostName`), the official Python device SDK receives it, and the
//! Node feedback receiver gets the `Success` record.
//!
//! Needs `IOTHUB_NODE_MODULES=DIR/node_modules` from `tests/interop/setup-node.sh DIR` and
//! `IOTHUB_PYTHON` (see `interop_python.rs`). Without them each test prints a `skipped:` line
//! and passes, unless `IOTHUB_REQUIRE_INTEROP=1`. See `tests/interop/README.md`.
#![cfg(feature = "local-hub")]

#[path = "interop/peer.rs"]
mod peer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub::protocol::FeedbackStatus;
use peer::{
    PEER_DEADLINE_SECS, Peer, TempFile, device_args, hub, hub_time_text, node_modules, python,
    python_device_connection_string,
};
use serde_json::json;

#[tokio::test]
async fn node_service_sends_c2d_and_receives_feedback() {
    let (Some(python), Some(node_modules)) = (python(), node_modules()) else {
        return;
    };
    let hub = hub().await;
    let device_id = "node-amqp=1"; // sent as /devices/node-amqp%3D1/... (encodeURIComponent)
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());

    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        1,
        &[],
    );
    let mut device = Peer::spawn(&python, "py_device.py", &args, ca.path());
    device.expect_line("connected").await;

    let service = hub.amqp_connection_string().to_string();
    assert!(
        service.starts_with(&format!("HostName=localhost:{};", hub.amqp_addr().port())),
        "{service}"
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expiry_ms = (now.as_secs() + 3600) * 1000 + 302;
    let body = r#"{"hello":"from azure-iothub"}"#;
    let node_args: Vec<String> = [
        "--connection-string",
        &service,
        "--device-id",
        device_id,
        "--data",
        body,
        "--message-id",
        "node-m1",
        "--correlation-id",
        "node-c1",
        "--expiry-ms",
        &expiry_ms.to_string(),
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut sender = Peer::spawn_node(&node_modules, "node_service.js", &node_args, ca.path());
    assert_eq!(
        sender.json_line("the sent step").await,
        json!({"step": "sent"})
    );

    let got = device.json_line("the C2D message as JSON").await;
    let expected = json!({
        "data": body,
        "message_id": "node-m1",
        "correlation_id": "node-c1",
        "user_id": null,
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "expiry_time_utc": hub_time_text(UNIX_EPOCH + Duration::from_millis(expiry_ms)),
        "ack": "full",
        "custom_properties": {"prop1": "v1", "prop 2": "a/b=c&d"},
    });
    assert_eq!(got, expected, "what azure-iot-device decoded");
    device.expect_success().await;

    // The device's PUBACK completed the message; the batch reaches Node's feedback receiver.
    let feedback = sender.json_line("a feedback message").await;
    assert_eq!(feedback["step"], "feedback", "{feedback}");
    assert_eq!(
        feedback["contentType"], "application/vnd.microsoft.iothub.feedback.json",
        "{feedback}"
    );
    let record = &feedback["records"][0];
    assert_eq!(record["originalMessageId"], "node-m1", "{feedback}");
    assert_eq!(
        record["statusCode"],
        FeedbackStatus::Success.as_str(),
        "{feedback}"
    );
    assert_eq!(record["description"], "Success", "{feedback}");
    assert_eq!(record["deviceId"], device_id, "{feedback}");
    sender.expect_success().await;
}
