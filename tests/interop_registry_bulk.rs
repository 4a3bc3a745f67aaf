//! The registry list and bulk calls of the official service SDKs against the local hub:
//! azure-iothub for Node (`Registry.list`, which asks `GET /devices/` with a trailing slash,
//! `addDevices`, `updateDevices`, `removeDevices`, and an edge device with a leaf device under
//! it) and azure-iot-hub for Python (`get_devices(max_number_of_devices)`,
//! `bulk_create_or_update_devices`). The peers are `tests/interop/node_registry_bulk.js` and
//! `tests/interop/py_registry_bulk.py`.
//!
//! Needs `IOTHUB_NODE_MODULES` and `IOTHUB_PYTHON` (see `tests/interop/README.md`); without
//! them each test says it is skipped and passes, unless `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(feature = "local-hub")]

#[path = "interop/peer.rs"]
mod peer;

use peer::{PEER_DEADLINE_SECS, Peer, TempFile, hub, node_modules, python};
use serde_json::{Value, json};

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
async fn node_registry_lists_and_manages_devices_in_bulk() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = hub().await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let service = hub.service_connection_string().to_string();
    let https_port = hub.https_addr().port().to_string();
    let deadline = PEER_DEADLINE_SECS.to_string();
    let args = strings(&[
        "--connection-string",
        &service,
        "--https-port",
        &https_port,
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn_node(&node_modules, "node_registry_bulk.js", &args, ca.path());

    let add = peer.json_line("the add step").await;
    assert_step(
        &add,
        "add",
        &[("isSuccessful", json!(true)), ("errors", json!([]))],
    );
    // A failed operation: HTTP 400 with the result, which azure-iothub reports as an error.
    let again = peer.json_line("the add_again step").await;
    assert_step(
        &again,
        "add_again",
        &[
            ("isSuccessful", json!(false)),
            ("errors", json!([["bulk-1", "DeviceAlreadyExists"]])),
            ("status", json!(400)),
        ],
    );
    let list = peer.json_line("the list step").await;
    assert_step(
        &list,
        "list",
        &[("ids", json!(["bulk-1", "bulk-2", "bulk-3", "bulk-4"]))],
    );
    let updated = peer.json_line("the update_etag step").await;
    assert_step(&updated, "update_etag", &[("isSuccessful", json!(true))]);
    let stale = peer.json_line("the update_stale step").await;
    assert_step(
        &stale,
        "update_stale",
        &[(
            "errors",
            json!([
                ["bulk-1", "PreconditionFailed"],
                ["bulk-2", "PreconditionFailed"]
            ]),
        )],
    );
    let forced = peer.json_line("the update_force step").await;
    assert_step(&forced, "update_force", &[("isSuccessful", json!(true))]);
    let get = peer.json_line("the get step").await;
    assert_step(
        &get,
        "get",
        &[(
            "statuses",
            json!({"bulk-1": "disabled", "bulk-2": "enabled"}),
        )],
    );
    let edge = peer.json_line("the edge step").await;
    let scope = edge["edgeScope"].as_str().unwrap_or_default().to_owned();
    assert!(
        scope.starts_with("ms-azure-iot-edge://bulk-edge-"),
        "{edge}"
    );
    assert_step(
        &edge,
        "edge",
        &[
            ("edgeParents", json!([])),
            ("leafScope", json!(scope)),
            ("leafParents", json!([scope])),
        ],
    );
    let remove_stale = peer.json_line("the remove_stale step").await;
    assert_step(
        &remove_stale,
        "remove_stale",
        &[(
            "errors",
            json!([
                ["bulk-1", "PreconditionFailed"],
                ["bulk-2", "PreconditionFailed"]
            ]),
        )],
    );
    let remove = peer.json_line("the remove step").await;
    assert_step(&remove, "remove", &[("isSuccessful", json!(true))]);
    let after = peer.json_line("the list_after step").await;
    assert_step(&after, "list_after", &[("ids", json!(["bulk-edge"]))]);
    peer.expect_success().await;
}

#[tokio::test]
async fn python_registry_lists_with_a_limit_and_manages_devices_in_bulk() {
    let Some(python) = python() else {
        return;
    };
    let hub = hub().await;
    hub.create_device("existing").unwrap();
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
        "--timeout",
        &deadline,
    ]);
    let mut peer = Peer::spawn(&python, "py_registry_bulk.py", &args, ca.path());

    let created = peer.json_line("the bulk_create step").await;
    assert_step(
        &created,
        "bulk_create",
        &[("is_successful", json!(true)), ("errors", json!([]))],
    );
    let list = peer.json_line("the list step").await;
    assert_step(
        &list,
        "list",
        &[(
            "ids",
            json!(["existing", "py-bulk-1", "py-bulk-2", "py-bulk-3"]),
        )],
    );
    let top = peer.json_line("the list_top step").await;
    assert_step(&top, "list_top", &[("count", json!(2))]);
    let mixed = peer.json_line("the bulk_mixed step").await;
    assert_step(
        &mixed,
        "bulk_mixed",
        &[
            ("is_successful", json!(false)),
            ("errors", json!([["py-bulk-1", "DeviceAlreadyExists"]])),
        ],
    );
    let get = peer.json_line("the get step").await;
    assert_step(&get, "get", &[("status", json!("disabled"))]);
    let after = peer.json_line("the list_after step").await;
    assert_step(
        &after,
        "list_after",
        &[("ids", json!(["existing", "py-bulk-1", "py-bulk-2"]))],
    );
    peer.expect_success().await;
}
