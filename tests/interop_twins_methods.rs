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
