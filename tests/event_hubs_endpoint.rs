//! The built-in Event Hubs-compatible endpoint read by the official Event Hubs consumers:
//! azure-eventhub 5.15.1 for Python and @azure/event-hubs 6.0.4 for Node, each checking every
//! property and annotation of the events, reads from an offset and from an enqueued time, and
//! two consumer groups each seeing every event.
//!
//! The endpoint runs on its own with a log this test fills (`TestEventHubsEndpoint`), until
//! `LocalHub` starts it. Peers as in `tests/interop/README.md`: skipped with a printed reason
//! unless `IOTHUB_PYTHON` / `IOTHUB_NODE_MODULES` point at environments with the Event Hubs
//! SDKs, failing instead when `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(feature = "local-hub")]

use std::path::{Path, PathBuf};

use iothub::Message;
use iothub::local_hub::{AppendedEvent, TestEventHubsEndpoint};
use serde_json::Value;

#[path = "interop/peer.rs"]
mod peer;

use peer::{PEER_DEADLINE_SECS, Peer, TempFile};

fn required() -> bool {
    std::env::var("IOTHUB_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// The venv's python if it has azure-eventhub.
fn python_with_eventhub() -> Option<PathBuf> {
    let python = peer::python()?;
    let ok = std::process::Command::new(&python)
        .args(["-c", "import azure.eventhub"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = "the venv has no azure-eventhub: run tests/interop/setup-python.sh VENV";
    assert!(!required(), "IOTHUB_REQUIRE_INTEROP=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// The Node peers' modules if they have @azure/event-hubs.
fn node_with_event_hubs() -> Option<PathBuf> {
    let modules = peer::node_modules()?;
    if modules.join("@azure/event-hubs").is_dir() {
        return Some(modules);
    }
    let why = "IOTHUB_NODE_MODULES has no @azure/event-hubs: run tests/interop/setup-node.sh DIR";
    assert!(!required(), "IOTHUB_REQUIRE_INTEROP=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// `device1` hashes to partition 2 of 4 (the C SDK test tool's mapping).
const DEVICE: &str = "device1";
const PARTITION: u32 = 2;

/// Three messages from `device1` (the second from a module) with every system property set on
/// the first, and one from another device that must not appear in partition 2.
/// Appends are 5 ms apart so that each has its own enqueued time (milliseconds on the wire).
async fn fill(endpoint: &TestEventHubsEndpoint) -> Vec<AppendedEvent> {
    let first = Message::new(r#"{"temp":21.5}"#)
        .with_message_id("m-1")
        .with_correlation_id("c-1")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_property("alert", "high temp")
        .with_property("grüße", "✓");
    let mut events = Vec::new();
    for (module, message) in [
        (None, first),
        (Some("sensor"), Message::new("second")),
        (None, Message::new("third")),
    ] {
        events.push(endpoint.append(DEVICE, module, message));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(events[0].enqueued_ms < events[1].enqueued_ms);
    let other = endpoint.append("myDevice", None, Message::new("elsewhere"));
    assert_ne!(other.partition, PARTITION);
    assert!(events.iter().all(|e| e.partition == PARTITION));
    events
}

/// Python lists every annotation and property in `system_properties`; Node maps the `x-opt-`
/// annotations to their own fields and names properties in camel case.
fn check_first_event(got: &Value, appended: &AppendedEvent, python: bool) {
    assert_eq!(got["body"], r#"{"temp":21.5}"#);
    assert_eq!(got["sequence_number"], appended.sequence_number);
    assert_eq!(got["offset"], appended.offset.to_string());
    assert_eq!(got["enqueued_ms"], appended.enqueued_ms);
    assert_eq!(got["message_id"], "m-1");
    assert_eq!(got["correlation_id"], "c-1");
    assert_eq!(got["content_type"], "application/json");
    assert_eq!(got["properties"]["alert"], "high temp");
    assert_eq!(got["properties"]["grüße"], "✓");
    let system = &got["system_properties"];
    assert_eq!(system["iothub-connection-device-id"], DEVICE);
    assert!(system.get("iothub-connection-module-id").is_none());
    assert_eq!(system["iothub-message-source"], "Telemetry");
    assert_eq!(
        system["iothub-connection-auth-generation-id"],
        "638000000000000001"
    );
    assert_eq!(system["iothub-enqueuedtime"], appended.enqueued_ms);
    if python {
        assert_eq!(system["x-opt-enqueued-time"], appended.enqueued_ms);
        assert_eq!(system["x-opt-sequence-number"], appended.sequence_number);
        assert_eq!(system["x-opt-offset"], appended.offset.to_string());
        assert_eq!(system["content-encoding"], "utf-8");
    } else {
        assert_eq!(system["contentEncoding"], "utf-8");
    }
    let auth: Value =
        serde_json::from_str(system["iothub-connection-auth-method"].as_str().unwrap()).unwrap();
    assert_eq!(
        auth,
        serde_json::json!({"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null})
    );
}

fn python_args(cs: &str, group: &str, start: &str, count: usize) -> Vec<String> {
    [
        "--connection-string",
        cs,
        "--consumer-group",
        group,
        "--partition",
        &PARTITION.to_string(),
        "--start",
        start,
        "--count",
        &count.to_string(),
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

async fn read_python(
    python: &Path,
    ca: &Path,
    cs: &str,
    group: &str,
    start: &str,
    count: usize,
) -> (Value, Vec<Value>) {
    let args = python_args(cs, group, start, count);
    let mut peer = Peer::spawn(python, "py_eventhub_consumer.py", &args, ca);
    let properties = peer.json_line("the Event Hub properties").await;
    let mut events = Vec::new();
    for _ in 0..count {
        events.push(peer.json_line("an event").await);
    }
    peer.expect_success().await;
    (properties, events)
}

fn bodies(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["body"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn python_consumer_reads_every_annotation_positions_and_groups() {
    let Some(python) = python_with_eventhub() else {
        return;
    };
    let endpoint = TestEventHubsEndpoint::start(4, &["readers"]).await.unwrap();
    let appended = fill(&endpoint).await;
    let ca = TempFile::new("ca.pem", endpoint.ca_pem());
    let cs = endpoint.emulator_connection_string("service").unwrap();

    let (properties, events) =
        read_python(&python, ca.path(), &cs, "$Default", "earliest", 3).await;
    assert_eq!(properties["eventhub"]["name"], endpoint.event_hub());
    assert_eq!(
        properties["eventhub"]["partition_ids"],
        serde_json::json!(["0", "1", "2", "3"])
    );
    let partition = &properties["partition"];
    assert_eq!(partition["last_enqueued_sequence_number"], 2);
    assert_eq!(partition["beginning_sequence_number"], 0);
    assert_eq!(
        partition["last_enqueued_offset"],
        appended[2].offset.to_string()
    );
    assert_eq!(partition["is_empty"], false);
    assert_eq!(bodies(&events), ["{\"temp\":21.5}", "second", "third"]);
    check_first_event(&events[0], &appended[0], true);
    assert_eq!(
        events[1]["system_properties"]["iothub-connection-module-id"],
        "sensor"
    );

    // From an offset, exclusive and inclusive; from an enqueued time; another consumer group
    // (named in another case) sees every event too.
    let (_, after) = read_python(
        &python,
        ca.path(),
        &cs,
        "$default",
        &format!("offset:{}", appended[0].offset),
        2,
    )
    .await;
    assert_eq!(bodies(&after), ["second", "third"]);
    let (_, from) = read_python(
        &python,
        ca.path(),
        &cs,
        "READERS",
        &format!("offset:{}:inclusive", appended[1].offset),
        2,
    )
    .await;
    assert_eq!(bodies(&from), ["second", "third"]);
    let (_, seq) = read_python(&python, ca.path(), &cs, "readers", "seq:1", 1).await;
    assert_eq!(bodies(&seq), ["third"]);
    let (_, later) = read_python(
        &python,
        ca.path(),
        &cs,
        "readers",
        &format!("time:{}", appended[0].enqueued_ms),
        2,
    )
    .await;
    assert_eq!(bodies(&later), ["second", "third"]);
    let (_, all) = read_python(&python, ca.path(), &cs, "readers", "earliest", 3).await;
    assert_eq!(bodies(&all), bodies(&events));
}

async fn read_node(
    modules: &Path,
    ca: &Path,
    cs: &str,
    group: &str,
    start: &str,
    count: usize,
) -> (Value, Vec<Value>) {
    let args = python_args(cs, group, start, count);
    let mut peer = Peer::spawn_node(modules, "node_eventhub_consumer.js", &args, ca);
    let properties = peer.json_line("the Event Hub properties").await;
    let mut events = Vec::new();
    for _ in 0..count {
        events.push(peer.json_line("an event").await);
    }
    peer.expect_success().await;
    (properties, events)
}

#[tokio::test]
async fn node_consumer_reads_every_annotation_positions_and_groups() {
    let Some(modules) = node_with_event_hubs() else {
        return;
    };
    let endpoint = TestEventHubsEndpoint::start(4, &["readers"]).await.unwrap();
    let appended = fill(&endpoint).await;
    let ca = TempFile::new("ca.pem", endpoint.ca_pem());
    // Over TLS: Node honours the port in Endpoint and trusts the CA via NODE_EXTRA_CA_CERTS.
    let cs = endpoint.tls_connection_string("service").unwrap();

    let (properties, events) = read_node(&modules, ca.path(), &cs, "$Default", "earliest", 3).await;
    assert_eq!(properties["eventhub"]["name"], endpoint.event_hub());
    assert_eq!(
        properties["eventhub"]["partitionIds"],
        serde_json::json!(["0", "1", "2", "3"])
    );
    let partition = &properties["partition"];
    assert_eq!(partition["lastEnqueuedSequenceNumber"], 2);
    assert_eq!(partition["beginningSequenceNumber"], 0);
    assert_eq!(
        partition["lastEnqueuedOffset"],
        appended[2].offset.to_string()
    );
    assert_eq!(partition["lastEnqueuedOnUtc"], appended[2].enqueued_ms);
    assert_eq!(partition["isEmpty"], false);
    assert_eq!(bodies(&events), ["{\"temp\":21.5}", "second", "third"]);
    check_first_event(&events[0], &appended[0], false);
    assert_eq!(
        events[1]["system_properties"]["iothub-connection-module-id"],
        "sensor"
    );

    let (_, after) = read_node(
        &modules,
        ca.path(),
        &cs,
        "READERS",
        &format!("offset:{}", appended[0].offset),
        2,
    )
    .await;
    assert_eq!(bodies(&after), ["second", "third"]);
    let (_, from) = read_node(&modules, ca.path(), &cs, "readers", "seq:1:inclusive", 2).await;
    assert_eq!(bodies(&from), ["second", "third"]);
    let (_, later) = read_node(
        &modules,
        ca.path(),
        &cs,
        "readers",
        &format!("time:{}", appended[1].enqueued_ms),
        1,
    )
    .await;
    assert_eq!(bodies(&later), ["third"]);
    let (_, all) = read_node(&modules, ca.path(), &cs, "readers", "earliest", 3).await;
    assert_eq!(bodies(&all), bodies(&events));
}
