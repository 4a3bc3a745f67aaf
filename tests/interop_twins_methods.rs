//! Interop of our service client's twins and direct methods with the official device SDKs,
//! through an in-process [`LocalHub`]:
//!
//! - the official Python device SDK (azure-iot-device 2.14.0, `py_device_twin.py`): `get_twin`,
//!   `patch_twin_reported_properties`, `on_twin_desired_properties_patch_received`,
//!   `on_method_request_received` + `send_method_response`;
//! - the official Node device SDK (azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4,
//!   `node_device_twin.js`): `getTwin`, `twin.properties.reported.update`, the twin's
//!   `properties.desired` event, `onDeviceMethod`.
//!
//! Each peer reads its new twin and reports properties; our [`RegistryManager`] reads them
//! back, updates desired properties (the peer sees the patch with the next `$version`) and
//! invokes a method (the peer's answer comes back with its status and payload).
//!
//! The official Python service SDK (azure-iot-hub 2.7.0, `py_registry_twin.py`) also meets the
//! Python device SDK through the hub: get, update (and a stale etag: 412), invoke, and a call to
//! an offline device (404103).
//!
//! Needs `IOTHUB_PYTHON` and/or `IOTHUB_NODE_MODULES` (see `tests/interop/README.md`); without
//! them a test prints a `skipped:` line and passes, unless `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(all(feature = "local-hub", feature = "service"))]

#[path = "interop/peer.rs"]
mod peer;

use std::time::Duration;

use iothub::local_hub::LocalHub;
use iothub::service::{RegistryManager, TwinPatch};
use peer::{
    PEER_DEADLINE_SECS, Peer, TempFile, hub, node_modules, python, python_device_connection_string,
};
use serde_json::{Value, json};

fn registry(hub: &LocalHub) -> RegistryManager {
    RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .expect("the registry manager builds")
}

/// What both peers go through once connected, subscribed and done reporting `reported`.
async fn exercise(peer: &mut Peer, registry: &RegistryManager, reported: &Value, sdk: &str) {
    let twin = peer.json_line("the twin read by the device").await;
    assert_eq!(twin["twin"]["desired"]["$version"], 1, "{twin}");
    assert_eq!(twin["twin"]["reported"]["$version"], 1, "{twin}");
    peer.expect_line("reported").await;
    peer.expect_line("ready").await;

    // Reported properties are read back by the service.
    let twin = registry.get_twin("dev1").await.unwrap();
    assert_eq!(twin.properties.reported_version(), Some(2));
    for (key, value) in reported.as_object().unwrap() {
        assert_eq!(&twin.properties.reported[key], value, "{key}");
    }

    // A desired update reaches the device with the next $version.
    let updated = registry
        .update_twin(
            "dev1",
            &TwinPatch::new().desired(json!({"rate": 7, "mode": {"eco": true}})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(updated.properties.desired_version(), Some(2));
    let patch = peer.json_line("the desired patch").await;
    assert_eq!(
        patch,
        json!({"desired": {"rate": 7, "mode": {"eco": true}, "$version": 2}})
    );

    // A method call is answered by the device's handler.
    let result = registry
        .invoke_device_method(
            "dev1",
            "echo",
            json!({"n": 1, "text": "ünï"}),
            Duration::from_secs(30),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(
        result.payload,
        json!({"echo": {"n": 1, "text": "ünï"}, "by": sdk})
    );
    let request = peer.json_line("the method request").await;
    assert_eq!(
        request,
        json!({"method": "echo", "payload": {"n": 1, "text": "ünï"}})
    );
    peer.expect_success().await;
}

#[tokio::test]
async fn python_device_sdk_reports_gets_desired_patches_and_answers_methods() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let reported = json!({"python": {"sdk": "azure-iot-device", "n": 1}, "temp": 21.5});
    let args = vec![
        "--connection-string".to_owned(),
        python_device_connection_string(&cs),
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--mqtt-port".to_owned(),
        hub.mqtt_addr().port().to_string(),
        "--wss-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--reported".to_owned(),
        reported.to_string(),
        "--patches".to_owned(),
        "1".to_owned(),
        "--methods".to_owned(),
        "1".to_owned(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut peer = Peer::spawn(&python, "py_device_twin.py", &args, ca.path());
    exercise(&mut peer, &registry(&hub), &reported, "python").await;
}

#[tokio::test]
async fn node_device_sdk_reports_gets_desired_patches_and_answers_methods() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let reported = json!({"node": {"sdk": "azure-iot-device", "n": 2}, "temp": 19});
    let args = vec![
        "--connection-string".to_owned(),
        cs,
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--reported".to_owned(),
        reported.to_string(),
        "--method-names".to_owned(),
        "echo".to_owned(),
        "--patches".to_owned(),
        "1".to_owned(),
        "--methods".to_owned(),
        "1".to_owned(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut peer = Peer::spawn_node(&node_modules, "node_device_twin.js", &args, ca.path());
    exercise(&mut peer, &registry(&hub), &reported, "node").await;
}

/// The official Python service SDK (azure-iot-hub 2.7.0, `py_registry_twin.py`) with the
/// official Python device SDK, both through the hub: the hub alone has to satisfy both.
#[tokio::test]
async fn python_service_and_device_sdks_meet_through_the_hub() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap().to_string();
    hub.create_device("offline").unwrap();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let reported = json!({"fw": "1.2.3"});
    let device_args = vec![
        "--connection-string".to_owned(),
        python_device_connection_string(&cs),
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--mqtt-port".to_owned(),
        hub.mqtt_addr().port().to_string(),
        "--reported".to_owned(),
        reported.to_string(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut device = Peer::spawn(&python, "py_device_twin.py", &device_args, ca.path());
    device.json_line("the twin read by the device").await;
    device.expect_line("reported").await;
    device.expect_line("ready").await;

    let service_args = vec![
        "--connection-string".to_owned(),
        hub.service_connection_string().to_string(),
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--https-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--device-id".to_owned(),
        "dev1".to_owned(),
        "--offline-device-id".to_owned(),
        "offline".to_owned(),
        "--desired".to_owned(),
        json!({"rate": 3}).to_string(),
        "--payload".to_owned(),
        json!({"n": 2}).to_string(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut service = Peer::spawn(&python, "py_registry_twin.py", &service_args, ca.path());
    let got = service.json_line("the twin read by the service").await;
    assert_eq!(got["reported"], reported);
    assert_eq!(got["desired_version"], 1);
    assert_eq!(got["etag"], "AAAAAAAAAAE=");
    let updated = service.json_line("the update").await;
    assert_eq!(updated, json!({"step": "update", "desired_version": 2}));
    let stale = service.json_line("the stale update").await;
    assert_eq!(stale, json!({"step": "stale_etag", "status": 412}));
    let invoked = service.json_line("the method result").await;
    assert_eq!(
        invoked,
        json!({"step": "invoke", "status": 200,
               "payload": {"echo": {"n": 2}, "by": "python"}})
    );
    let offline = service.json_line("the offline call").await;
    assert_eq!(
        offline,
        json!({"step": "offline", "status": 404, "error_code": "404103"})
    );
    service.expect_success().await;

    let patch = device.json_line("the desired patch").await;
    assert_eq!(patch, json!({"desired": {"rate": 3, "$version": 2}}));
    let request = device.json_line("the method request").await;
    assert_eq!(request, json!({"method": "echo", "payload": {"n": 2}}));
    device.expect_success().await;
}

/// The official Node service SDK (azure-iothub 1.16.6, `node_registry_twin.js`) with the
/// official Node device SDK, both through the hub.
#[tokio::test]
async fn node_service_and_device_sdks_meet_through_the_hub() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap().to_string();
    hub.create_device("offline").unwrap();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let reported = json!({"fw": "2.0"});
    let device_args = vec![
        "--connection-string".to_owned(),
        cs,
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--reported".to_owned(),
        reported.to_string(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut device = Peer::spawn_node(
        &node_modules,
        "node_device_twin.js",
        &device_args,
        ca.path(),
    );
    device.json_line("the twin read by the device").await;
    device.expect_line("reported").await;
    device.expect_line("ready").await;

    let service_args = vec![
        "--connection-string".to_owned(),
        hub.service_connection_string().to_string(),
        "--https-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--device-id".to_owned(),
        "dev1".to_owned(),
        "--offline-device-id".to_owned(),
        "offline".to_owned(),
        "--desired".to_owned(),
        json!({"rate": 4}).to_string(),
        "--payload".to_owned(),
        json!({"n": 3}).to_string(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut service = Peer::spawn_node(
        &node_modules,
        "node_registry_twin.js",
        &service_args,
        ca.path(),
    );
    let got = service.json_line("the twin read by the service").await;
    assert_eq!(got["reported"], reported);
    assert_eq!(got["desiredVersion"], 1);
    let updated = service.json_line("the update").await;
    assert_eq!(updated, json!({"step": "update", "desiredVersion": 2}));
    let stale = service.json_line("the stale update").await;
    assert_eq!(
        stale,
        json!({"step": "stale_etag", "name": "InvalidEtagError"})
    );
    let invoked = service.json_line("the method result").await;
    assert_eq!(
        invoked,
        json!({"step": "invoke", "status": 200, "payload": {"echo": {"n": 3}, "by": "node"}})
    );
    let offline = service.json_line("the offline call").await;
    assert_eq!(offline, json!({"step": "offline", "statusCode": 404}));
    service.expect_success().await;

    let patch = device.json_line("the desired patch").await;
    assert_eq!(patch["desired"]["rate"], 4);
    assert_eq!(patch["desired"]["$version"], 2);
    let request = device.json_line("the method request").await;
    assert_eq!(request, json!({"method": "echo", "payload": {"n": 3}}));
    device.expect_success().await;
}
