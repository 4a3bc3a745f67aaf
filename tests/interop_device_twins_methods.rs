//! Interop of our [`DeviceClient`]'s twin and direct methods with the official Azure IoT
//! service SDKs, through an in-process [`LocalHub`] (HTTPS twin and method endpoints, MQTT to
//! our device):
//!
//! - azure-iot-hub 2.7.0 for Python (`py_service_twin_methods.py`):
//!   `IoTHubRegistryManager.get_twin` reads what our device reported, `update_twin` changes the
//!   desired properties and our device receives the patch with its version,
//!   `invoke_device_method` with `CloudToDeviceMethod` gets our device's answer and payload;
//! - azure-iothub 1.16.6 for Node (`node_service_twin_methods.js`): the same with
//!   `Registry.getTwin`, `Twin.update` and `Client.invokeDeviceMethod`.
//!
//! Needs `IOTHUB_PYTHON` and/or `IOTHUB_NODE_MODULES` (see `tests/interop/README.md`); without
//! them a test prints a `skipped:` line and passes, unless `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(all(feature = "local-hub", feature = "device"))]

#[path = "interop/peer.rs"]
mod peer;

use iothub::device::{DesiredPropertyUpdates, DesiredUpdateKind, DeviceClient, MethodRequests};
use iothub::local_hub::LocalHub;
use peer::{HUB_WAIT, PEER_DEADLINE_SECS, Peer, TempFile, hub, node_modules, python};
use serde_json::{Value, json};
use tokio::time::timeout;

/// A device that reported `reported`, listens to desired updates (the first, the full
/// document, already read) and answers every method with `{"method": name, "echo": payload}`.
async fn ready_device(
    hub: &LocalHub,
    device_id: &str,
    reported: Value,
) -> (DeviceClient, DesiredPropertyUpdates, u64) {
    let cs = hub.create_device(device_id).unwrap();
    let client = timeout(
        HUB_WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .expect("the device connects in time")
    .expect("the device connects");
    let version = timeout(HUB_WAIT, client.update_reported_properties(reported))
        .await
        .unwrap()
        .unwrap();
    let mut updates = timeout(HUB_WAIT, client.desired_property_updates())
        .await
        .unwrap()
        .unwrap();
    let first = timeout(HUB_WAIT, updates.recv()).await.unwrap().unwrap();
    assert_eq!(first.kind, DesiredUpdateKind::FullDocument);
    let requests = timeout(HUB_WAIT, client.method_requests())
        .await
        .unwrap()
        .unwrap();
    answer_methods(requests);
    (client, updates, version)
}

fn answer_methods(mut requests: MethodRequests) {
    tokio::spawn(async move {
        while let Ok(request) = requests.recv().await {
            let answer = json!({"method": request.name(), "echo": request.payload().clone()});
            let _ = request.respond(200, answer).await;
        }
    });
}

/// Checks the three steps of a service peer against our device.
async fn check_peer_steps(
    peer: &mut Peer,
    updates: &mut DesiredPropertyUpdates,
    reported: &Value,
    reported_version: u64,
    desired: &Value,
    payload: &Value,
) {
    let got = peer.json_line("the get_twin step").await;
    assert_eq!(got["step"], "get_twin", "{got}");
    assert_eq!(&got["reported"], reported, "{got}");
    assert_eq!(got["reported_version"], reported_version, "{got}");
    assert!(got["etag"].as_str().is_some_and(|e| !e.is_empty()), "{got}");

    let updated = peer.json_line("the update_twin step").await;
    assert_eq!(updated["step"], "update_twin", "{updated}");
    let version = updated["desired_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("a desired $version: {updated}"));
    let patch = timeout(HUB_WAIT, updates.recv()).await.unwrap().unwrap();
    assert_eq!(
        (patch.kind, patch.version),
        (DesiredUpdateKind::Patch, version)
    );
    for (key, value) in desired.as_object().unwrap() {
        assert_eq!(&patch.properties[key], value, "{key} in {patch:?}");
    }

    let invoked = peer.json_line("the invoke step").await;
    assert_eq!(invoked["step"], "invoke", "{invoked}");
    assert_eq!(invoked["status"], 200, "{invoked}");
    assert_eq!(
        invoked["payload"],
        json!({"method": "echo", "echo": payload}),
        "{invoked}"
    );
    peer.expect_success().await;
}

fn peer_args(hub: &LocalHub, device_id: &str, desired: &Value, payload: &Value) -> Vec<String> {
    [
        "--connection-string",
        &hub.service_connection_string().to_string(),
        "--https-port",
        &hub.https_addr().port().to_string(),
        "--device-id",
        device_id,
        "--desired",
        &desired.to_string(),
        "--method",
        "echo",
        "--payload",
        &payload.to_string(),
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test]
async fn python_service_reads_and_writes_our_twin_and_invokes_our_method() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let reported = json!({"firmware": "2.0", "sensors": {"t": 21.5}});
    let (_client, mut updates, version) = ready_device(&hub, "py-twin-1", reported.clone()).await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let desired = json!({"interval": 7, "mode": {"eco": true}});
    let payload = json!({"n": 1, "text": "grüße"});
    let mut args = peer_args(&hub, "py-twin-1", &desired, &payload);
    args.extend(["--ca-file".to_owned(), ca.path().display().to_string()]);
    let mut peer = Peer::spawn(&python, "py_service_twin_methods.py", &args, ca.path());
    check_peer_steps(
        &mut peer,
        &mut updates,
        &reported,
        version,
        &desired,
        &payload,
    )
    .await;
}

#[tokio::test]
async fn node_service_reads_and_writes_our_twin_and_invokes_our_method() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let reported = json!({"firmware": "3.1", "ok": true});
    let (_client, mut updates, version) = ready_device(&hub, "node-twin-1", reported.clone()).await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let desired = json!({"interval": 9});
    let payload = json!([1, "two", {"three": 3}]);
    let args = peer_args(&hub, "node-twin-1", &desired, &payload);
    let mut peer = Peer::spawn_node(
        &node_modules,
        "node_service_twin_methods.js",
        &args,
        ca.path(),
    );
    check_peer_steps(
        &mut peer,
        &mut updates,
        &reported,
        version,
        &desired,
        &payload,
    )
    .await;
}
