//! Module identities with the official SDKs: the Python (azure-iot-hub 2.7.0) and Node
//! (azure-iothub 1.16.6) registry calls against the local hub's module registry, and the Python
//! (`IoTHubModuleClient`, azure-iot-device 2.14.0) and Node (`ModuleClient`, azure-iot-device
//! 1.18.4 with azure-iot-device-mqtt) module clients sending telemetry with keys our
//! `RegistryManager` created, and the Node service SDK's module twin and method calls
//! (`module_twin.js`, `module_methods.js`) reaching our module client.
//!
//! Needs `IOTHUB_PYTHON` and `IOTHUB_NODE_MODULES` (see `tests/interop/README.md`); without them
//! each test prints a `skipped:` line and passes, unless `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(all(feature = "local-hub", feature = "service", feature = "device"))]

#[path = "interop/peer.rs"]
mod peer;

use iothub::local_hub::{LocalHub, Telemetry};
use iothub::service::RegistryManager;
use peer::{
    HUB_WAIT, PEER_DEADLINE_SECS, Peer, TempFile, hub, node_modules, python,
    python_device_connection_string,
};
use serde_json::{Value, json};
use tokio::time::timeout;

fn registry(hub: &LocalHub) -> RegistryManager {
    RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts a peer step: its name and the fields expected, with the whole line in the message.
fn assert_step(line: &Value, step: &str, expected: &[(&str, Value)]) {
    assert_eq!(line["step"], step, "{line}");
    for (key, value) in expected {
        assert_eq!(&line[*key], value, "{step}.{key} in {line}");
    }
}

#[tokio::test]
async fn python_registry_manages_modules() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let service = hub.service_connection_string().to_string();
    let https_port = hub.https_addr().port().to_string();
    let deadline = PEER_DEADLINE_SECS.to_string();
    let args = strings(&[
        "--connection-string",
        &service,
        "--ca-file",
        &ca.path().display().to_string(),
        "--https-port",
        &https_port,
        "--device-id",
        "dev1",
        "--module-id",
        "py-mod",
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn(&python, "py_module_registry.py", &args, ca.path());

    let create = peer.json_line("the create step").await;
    assert_step(
        &create,
        "create",
        &[
            ("ok", json!(true)),
            ("device_id", json!("dev1")),
            ("module_id", json!("py-mod")),
            ("managed_by", json!("py-manager")),
            ("auth_type", json!("sas")),
            ("connection_state", json!("Disconnected")),
        ],
    );
    assert_eq!(create["primary_key"], create["key1"], "{create}");
    assert_eq!(create["secondary_key"], create["key2"], "{create}");
    let generated = peer.json_line("the create_generated step").await;
    assert_step(&generated, "create_generated", &[("ok", json!(true))]);
    let key = generated["primary_key"].as_str().unwrap_or_default();
    assert_eq!(key.len(), 44, "the hub generated the keys: {generated}");
    let hub_cs = hub.module_connection_string("dev1", "py-mod-gen").unwrap();
    assert!(hub_cs.to_string().contains(key));

    let get = peer.json_line("the get step").await;
    assert_step(
        &get,
        "get",
        &[("ok", json!(true)), ("etag", create["etag"].clone())],
    );
    let list = peer.json_line("the list step").await;
    assert_step(
        &list,
        "list",
        &[("module_ids", json!(["py-mod", "py-mod-gen"]))],
    );
    let update = peer.json_line("the update step").await;
    assert_step(
        &update,
        "update",
        &[
            ("ok", json!(true)),
            ("managed_by", json!("py-manager-2")),
            ("primary_key", create["key2"].clone()),
            ("secondary_key", create["key1"].clone()),
        ],
    );
    assert_ne!(update["etag"], create["etag"]);
    let stale = peer.json_line("the update_stale step").await;
    assert_step(
        &stale,
        "update_stale",
        &[
            ("ok", json!(false)),
            ("error_status_code", json!(412)),
            ("iothub_errorcode", json!("PreconditionFailed")),
        ],
    );
    let delete = peer.json_line("the delete step").await;
    assert_step(
        &delete,
        "delete",
        &[("ok", json!(true)), ("result", json!("None"))],
    );
    let gone = peer.json_line("the get_deleted step").await;
    assert_step(
        &gone,
        "get_deleted",
        &[
            ("ok", json!(false)),
            ("error_status_code", json!(404)),
            ("iothub_errorcode", json!("ModuleNotFound")),
        ],
    );
    let unknown = peer.json_line("the unknown_device step").await;
    assert_step(
        &unknown,
        "unknown_device",
        &[
            ("error_status_code", json!(404)),
            ("iothub_errorcode", json!("DeviceNotFound")),
        ],
    );
    peer.expect_success().await;
    assert!(hub.module_connection_string("dev1", "py-mod").is_none());
}

#[tokio::test]
async fn node_registry_module_crud_as_the_node_e2e_does() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let service = hub.service_connection_string().to_string();
    let https_port = hub.https_addr().port().to_string();
    let deadline = PEER_DEADLINE_SECS.to_string();
    let args = strings(&[
        "--connection-string",
        &service,
        "--https-port",
        &https_port,
        "--device-id",
        "dev1",
        "--module-id",
        "node+mod#1", // sent as node%2Bmod%231 (encodeURIComponent)
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn_node(&node_modules, "node_module_registry.js", &args, ca.path());

    let add = peer.json_line("the add step").await;
    assert_step(
        &add,
        "add",
        &[
            ("deviceId", json!("dev1")),
            ("moduleId", json!("node+mod#1")),
            ("connectionState", json!("Disconnected")),
        ],
    );
    assert_eq!(
        add["primaryKey"].as_str().unwrap_or_default().len(),
        44,
        "{add}"
    );
    let get = peer.json_line("the get step").await;
    assert_eq!(get["etag"], add["etag"], "{get}");
    assert_eq!(get["primaryKey"], add["primaryKey"], "{get}");
    let list = peer.json_line("the list step").await;
    assert_step(&list, "list", &[("moduleIds", json!(["node+mod#1"]))]);
    let swapped = peer.json_line("the update_etag step").await;
    assert_step(
        &swapped,
        "update_etag",
        &[
            ("primaryKey", add["secondaryKey"].clone()),
            ("secondaryKey", add["primaryKey"].clone()),
        ],
    );
    assert_ne!(swapped["etag"], add["etag"]);
    let stale = peer.json_line("the update_stale step").await;
    assert_step(
        &stale,
        "update_stale",
        &[
            ("error", json!("InvalidEtagError")),
            ("status", json!(412)),
            ("code", json!("PreconditionFailed")),
        ],
    );
    let forced = peer.json_line("the update_force step").await;
    assert_step(
        &forced,
        "update_force",
        &[("primaryKey", add["secondaryKey"].clone())],
    );
    peer.expect_line(r#"{"step":"remove_object"}"#).await;
    peer.expect_line(r#"{"step":"remove_ids"}"#).await;
    let removed = peer.json_line("the get_removed step").await;
    // azure-iothub maps a 404 to DeviceNotFoundError only for the DeviceNotFound code.
    assert_step(
        &removed,
        "get_removed",
        &[("status", json!(404)), ("code", json!("ModuleNotFound"))],
    );
    let unknown = peer.json_line("the add_unknown_device step").await;
    assert_step(
        &unknown,
        "add_unknown_device",
        &[
            ("error", json!("DeviceNotFoundError")),
            ("status", json!(404)),
            ("code", json!("DeviceNotFound")),
        ],
    );
    peer.expect_success().await;
    assert!(hub.module_connection_string("dev1", "node+mod#1").is_none());
}

/// The next telemetry message, within the hub wait.
async fn next(telemetry: &mut iothub::local_hub::TelemetryStream) -> Telemetry {
    timeout(HUB_WAIT, telemetry.recv())
        .await
        .expect("telemetry in time")
        .expect("the hub is running")
}

#[tokio::test]
async fn python_module_client_sends_telemetry_as_its_module() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let mut telemetry = hub.telemetry();
    let registry = registry(&hub);
    registry.create_device("dev1").await.unwrap();
    let module = registry.create_module("dev1", "py-module").await.unwrap();
    let cs = hub
        .module_connection_string("dev1", "py-module")
        .unwrap()
        .to_string();
    assert!(cs.contains(&module.authentication.symmetric_key.primary_key));
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mqtt_port = hub.mqtt_addr().port().to_string();
    let deadline = PEER_DEADLINE_SECS.to_string();
    let args = strings(&[
        "--connection-string",
        &python_device_connection_string(&cs),
        "--ca-file",
        &ca.path().display().to_string(),
        "--mqtt-port",
        &mqtt_port,
        "--text",
        "hello from Python",
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn(&python, "py_module_client.py", &args, ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    let got = next(&mut telemetry).await;
    assert_eq!(got.device_id, "dev1");
    assert_eq!(got.module_id.as_deref(), Some("py-module"));
    assert_eq!(got.message.message_id(), Some("py-module-1"));
    assert_eq!(got.message.body_str(), Some("hello from Python"));
    peer.expect_success().await;
}

#[tokio::test]
async fn node_module_client_sends_telemetry_as_its_module() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let mut telemetry = hub.telemetry();
    let registry = registry(&hub);
    registry.create_device("dev1").await.unwrap();
    registry.create_module("dev1", "node-module").await.unwrap();
    let cs = hub
        .module_connection_string("dev1", "node-module")
        .unwrap()
        .to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let deadline = PEER_DEADLINE_SECS.to_string();
    let args = strings(&[
        "--connection-string",
        &cs,
        "--ca-file",
        &ca.path().display().to_string(),
        "--text",
        "hello from Node",
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn_node(&node_modules, "node_module_client.js", &args, ca.path());
    peer.expect_line("connected").await;
    assert!(hub.is_module_connected("dev1", "node-module"));
    assert!(
        !hub.is_connected("dev1"),
        "the module's connection is not its device's"
    );
    peer.expect_line("sent").await;
    let got = next(&mut telemetry).await;
    assert_eq!(got.device_id, "dev1");
    assert_eq!(got.module_id.as_deref(), Some("node-module"));
    assert_eq!(got.message.message_id(), Some("node-module-1"));
    assert_eq!(got.message.body_str(), Some("hello from Node"));
    peer.expect_success().await;
}

/// The Node e2e `module_twin.js` and `module_methods.js` calls (azure-iothub) against our
/// module client: the back end reads the module's reported properties, its desired patch
/// reaches the module, and its method call gets the module's status and payload.
#[tokio::test]
async fn node_service_module_twin_and_methods_reach_our_module_client() {
    use iothub::device::{DesiredUpdateKind, DeviceClient};

    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let registry = registry(&hub);
    registry.create_device("dev1").await.unwrap();
    registry.create_module("dev1", "m1").await.unwrap();
    let cs = hub.module_connection_string("dev1", "m1").unwrap();
    let module = timeout(
        HUB_WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
    timeout(
        HUB_WAIT,
        module.update_reported_properties(json!({"reported_key": "from our module"})),
    )
    .await
    .unwrap()
    .unwrap();
    let mut updates = timeout(HUB_WAIT, module.desired_property_updates())
        .await
        .unwrap()
        .unwrap();
    let full = timeout(HUB_WAIT, updates.recv()).await.unwrap().unwrap();
    assert_eq!(full.kind, DesiredUpdateKind::FullDocument);
    let mut requests = timeout(HUB_WAIT, module.method_requests())
        .await
        .unwrap()
        .unwrap();
    // module_methods.js answers 400 with a payload and checks both come back.
    let answering = tokio::spawn(async move {
        let request = requests.recv().await.unwrap();
        let name = request.name().to_owned();
        let payload = request.payload().clone();
        request
            .respond(400, json!({"answer": "from our module"}))
            .await
            .unwrap();
        (name, payload)
    });

    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let service = hub.service_connection_string().to_string();
    let https_port = hub.https_addr().port().to_string();
    let deadline = PEER_DEADLINE_SECS.to_string();
    let args = strings(&[
        "--connection-string",
        &service,
        "--https-port",
        &https_port,
        "--device-id",
        "dev1",
        "--module-id",
        "m1",
        "--desired",
        r#"{"fake_key":"fake_value"}"#,
        "--method",
        "my_method",
        "--payload",
        r#"{"n":1}"#,
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn_node(
        &node_modules,
        "node_module_twin_methods.js",
        &args,
        ca.path(),
    );
    let twin = peer.json_line("the get_module_twin step").await;
    assert_step(
        &twin,
        "get_module_twin",
        &[
            ("deviceId", json!("dev1")),
            ("moduleId", json!("m1")),
            ("reported", json!({"reported_key": "from our module"})),
        ],
    );
    let update = peer.json_line("the update step").await;
    assert_eq!(update["step"], "update", "{update}");
    let patch = timeout(HUB_WAIT, updates.recv()).await.unwrap().unwrap();
    assert_eq!(patch.kind, DesiredUpdateKind::Patch);
    assert_eq!(patch.properties["fake_key"], "fake_value");
    assert_eq!(json!(patch.version), update["desired_version"], "{update}");

    let invoke = peer.json_line("the invoke step").await;
    assert_step(
        &invoke,
        "invoke",
        &[
            ("status", json!(400)),
            ("payload", json!({"answer": "from our module"})),
        ],
    );
    let (name, payload) = timeout(HUB_WAIT, answering).await.unwrap().unwrap();
    assert_eq!((name.as_str(), payload), ("my_method", json!({"n": 1})));
    peer.expect_success().await;
    // The device itself saw nothing: it is not even connected.
    assert!(!hub.is_connected("dev1"));
}
