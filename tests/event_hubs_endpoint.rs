//! The local hub's built-in Event Hubs-compatible endpoint read by the official Event Hubs
//! consumers: azure-eventhub 5.15.1 for Python (plain TCP, the emulator connection string) and
//! @azure/event-hubs 6.0.4 for Node (TLS, the portal's connection string with the policy's
//! secondary key). Telemetry comes from our `DeviceClient` (a device and one of its modules)
//! and from the official Python and Node device SDKs; every property and annotation is
//! checked, reads from an offset, a sequence number and an enqueued time return exactly the
//! right events, and two consumer groups each see every event.
//!
//! Peers as in `tests/interop/README.md`: skipped with a printed reason unless
//! `IOTHUB_PYTHON` / `IOTHUB_NODE_MODULES` point at environments with the Event Hubs SDKs,
//! failing instead when `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(feature = "local-hub")]

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use iothub::Message;
use iothub::device::DeviceClient;
use iothub::local_hub::{LocalHub, Telemetry, TelemetryStart, TelemetryStream};
use serde_json::Value;
use tokio::time::timeout;

#[path = "interop/peer.rs"]
mod peer;

use peer::{
    HUB_WAIT, PEER_DEADLINE_SECS, Peer, TempFile, device_args, python_device_connection_string,
};

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

/// A hub with the consumer group `readers` besides `$Default`.
async fn hub() -> LocalHub {
    LocalHub::builder()
        .consumer_group("readers")
        .start()
        .await
        .expect("the local hub starts")
}

async fn next(stream: &mut TelemetryStream) -> Telemetry {
    timeout(HUB_WAIT, stream.recv())
        .await
        .expect("telemetry in time")
        .expect("the hub is running")
}

fn enqueued_ms(t: &Telemetry) -> u64 {
    t.enqueued_time
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Three messages from `device1` sent by our `DeviceClient` (the second from its module
/// `sensor`) with every system property set on the first, and one from another device that
/// must not appear in partition 2; returns what the hub logged for the three. Sends are 5 ms
/// apart so that each has its own enqueued time (milliseconds on the wire).
async fn fill(hub: &LocalHub) -> Vec<Telemetry> {
    let mut logged = hub.telemetry();
    let connect = |cs| async move {
        timeout(
            HUB_WAIT,
            DeviceClient::builder(cs)
                .trust_ca_pem(hub.ca_pem())
                .connect(),
        )
        .await
        .expect("connects in time")
        .expect("connects")
    };
    let device = connect(hub.create_device(DEVICE).unwrap()).await;
    let module = connect(hub.create_module(DEVICE, "sensor").unwrap()).await;
    let other = connect(hub.create_device("myDevice").unwrap()).await;
    let first = Message::new(r#"{"temp":21.5}"#)
        .with_message_id("m-1")
        .with_correlation_id("c-1")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_property("alert", "high temp")
        .with_property("grüße", "✓");
    let mut events = Vec::new();
    for (client, message) in [
        (&device, first),
        (&module, Message::new("second")),
        (&device, Message::new("third")),
    ] {
        client.send_message(message).await.expect("sent");
        events.push(next(&mut logged).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(enqueued_ms(&events[0]) < enqueued_ms(&events[1]));
    other.send_message(Message::new("elsewhere")).await.unwrap();
    assert_ne!(next(&mut logged).await.partition, PARTITION);
    assert!(events.iter().all(|e| e.partition == PARTITION));
    assert_eq!(
        events.iter().map(|e| e.sequence_number).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    events
}

/// Python lists every annotation and property in `system_properties`; Node maps the `x-opt-`
/// annotations to their own fields and names properties in camel case.
/// The generation id the hub stamped: IoT Hub's form, 18 digits.
fn generation_id(event: &Value) -> String {
    let id = event["system_properties"]["iothub-connection-auth-generation-id"]
        .as_str()
        .expect("a generation id")
        .to_owned();
    assert!(
        id.len() == 18 && id.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    id
}

fn check_first_event(got: &Value, appended: &Telemetry, generation_id: &str, python: bool) {
    assert_eq!(got["body"], r#"{"temp":21.5}"#);
    assert_eq!(got["sequence_number"], appended.sequence_number);
    assert_eq!(got["offset"], appended.offset.to_string());
    assert_eq!(got["enqueued_ms"], enqueued_ms(appended));
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
        generation_id
    );
    assert_eq!(system["iothub-enqueuedtime"], enqueued_ms(appended));
    if python {
        assert_eq!(system["x-opt-enqueued-time"], enqueued_ms(appended));
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

/// The module's event names it and says the module authenticated.
fn check_module_event(event: &Value) {
    let system = &event["system_properties"];
    assert_eq!(system["iothub-connection-device-id"], DEVICE);
    assert_eq!(system["iothub-connection-module-id"], "sensor");
    let auth: Value =
        serde_json::from_str(system["iothub-connection-auth-method"].as_str().unwrap()).unwrap();
    assert_eq!(auth["scope"], "module");
    assert_eq!(auth["type"], "sas");
}

fn consumer_args(cs: &str, group: &str, partition: u32, start: &str, count: usize) -> Vec<String> {
    [
        "--connection-string",
        cs,
        "--consumer-group",
        group,
        "--partition",
        &partition.to_string(),
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

#[allow(clippy::too_many_arguments)]
async fn read_python(
    python: &Path,
    ca: &Path,
    cs: &str,
    group: &str,
    partition: u32,
    start: &str,
    count: usize,
) -> (Value, Vec<Value>) {
    let args = consumer_args(cs, group, partition, start, count);
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
    let hub = hub().await;
    let appended = fill(&hub).await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let cs = hub
        .event_hubs_emulator_connection_string_for("service")
        .unwrap();

    let (properties, events) = read_python(
        &python,
        ca.path(),
        &cs,
        "$Default",
        PARTITION,
        "earliest",
        3,
    )
    .await;
    assert_eq!(properties["eventhub"]["name"], hub.event_hub_name());
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
    let generation = generation_id(&events[0]);
    check_first_event(&events[0], &appended[0], &generation, true);
    check_module_event(&events[1]);

    // From an offset, exclusive and inclusive; from an enqueued time; another consumer group
    // (named in another case) sees every event too.
    let (_, after) = read_python(
        &python,
        ca.path(),
        &cs,
        "$default",
        PARTITION,
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
        PARTITION,
        &format!("offset:{}:inclusive", appended[1].offset),
        2,
    )
    .await;
    assert_eq!(bodies(&from), ["second", "third"]);
    let (_, seq) = read_python(&python, ca.path(), &cs, "readers", PARTITION, "seq:1", 1).await;
    assert_eq!(bodies(&seq), ["third"]);
    let (_, later) = read_python(
        &python,
        ca.path(),
        &cs,
        "readers",
        PARTITION,
        &format!("time:{}", enqueued_ms(&appended[0])),
        2,
    )
    .await;
    assert_eq!(bodies(&later), ["second", "third"]);
    let (_, all) = read_python(&python, ca.path(), &cs, "readers", PARTITION, "earliest", 3).await;
    assert_eq!(bodies(&all), bodies(&events));
}

#[allow(clippy::too_many_arguments)]
async fn read_node(
    modules: &Path,
    ca: &Path,
    cs: &str,
    group: &str,
    partition: u32,
    start: &str,
    count: usize,
) -> (Value, Vec<Value>) {
    let args = consumer_args(cs, group, partition, start, count);
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
    let hub = hub().await;
    let appended = fill(&hub).await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    // Over TLS: Node honours the port in Endpoint and trusts the CA via NODE_EXTRA_CA_CERTS;
    // signed with the policy's secondary key.
    let cs = hub
        .event_hubs_secondary_connection_string_for("service")
        .unwrap();

    let (properties, events) = read_node(
        &modules,
        ca.path(),
        &cs,
        "$Default",
        PARTITION,
        "earliest",
        3,
    )
    .await;
    assert_eq!(properties["eventhub"]["name"], hub.event_hub_name());
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
    assert_eq!(partition["lastEnqueuedOnUtc"], enqueued_ms(&appended[2]));
    assert_eq!(partition["isEmpty"], false);
    assert_eq!(bodies(&events), ["{\"temp\":21.5}", "second", "third"]);
    let generation = generation_id(&events[0]);
    check_first_event(&events[0], &appended[0], &generation, false);
    check_module_event(&events[1]);

    let (_, after) = read_node(
        &modules,
        ca.path(),
        &cs,
        "READERS",
        PARTITION,
        &format!("offset:{}", appended[0].offset),
        2,
    )
    .await;
    assert_eq!(bodies(&after), ["second", "third"]);
    let (_, from) = read_node(
        &modules,
        ca.path(),
        &cs,
        "readers",
        PARTITION,
        "seq:1:inclusive",
        2,
    )
    .await;
    assert_eq!(bodies(&from), ["second", "third"]);
    let (_, later) = read_node(
        &modules,
        ca.path(),
        &cs,
        "readers",
        PARTITION,
        &format!("time:{}", enqueued_ms(&appended[1])),
        1,
    )
    .await;
    assert_eq!(bodies(&later), ["third"]);
    let (_, all) = read_node(
        &modules,
        ca.path(),
        &cs,
        "readers",
        PARTITION,
        "earliest",
        3,
    )
    .await;
    assert_eq!(bodies(&all), bodies(&events));
}

/// The official device SDKs' telemetry (MQTT over TLS), read by the Python consumer with the
/// properties each SDK set: message id, content type and encoding, the custom property, and
/// for Node the correlation id.
#[tokio::test]
async fn official_device_sdks_telemetry_reaches_the_python_consumer() {
    let Some(python) = python_with_eventhub() else {
        return;
    };
    let node = node_with_event_hubs();
    let hub = hub().await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let cs = hub.event_hubs_emulator_connection_string();
    let mut logged = hub.telemetry();
    let body = r#"{"t":1,"s":"grüße & 100%"}"#;

    let mut senders = vec![("py-device", false)];
    if node.is_some() {
        senders.push(("node-device", true));
    }
    for (device_id, is_node) in senders {
        let device_cs = hub.create_device(device_id).unwrap().to_string();
        let mut peer = if is_node {
            let args = [
                "--connection-string",
                &device_cs,
                "--ca-file",
                &ca.path().display().to_string(),
                "--count",
                "0",
                "--timeout",
                &PEER_DEADLINE_SECS.to_string(),
                "--send-telemetry",
                body,
            ]
            .map(str::to_owned);
            Peer::spawn_node(node.as_ref().unwrap(), "node_device.js", &args, ca.path())
        } else {
            let args = device_args(
                &python_device_connection_string(&device_cs),
                ca.path(),
                &hub,
                0,
                &["--send-telemetry", body],
            );
            Peer::spawn(&python, "py_device.py", &args, ca.path())
        };
        peer.expect_line("connected").await;
        peer.expect_line("sent").await;
        peer.expect_success().await;
        let logged = next(&mut logged).await;
        assert_eq!(logged.device_id, device_id);

        let (_, events) = read_python(
            &python,
            ca.path(),
            &cs,
            "$Default",
            logged.partition,
            &format!("seq:{}:inclusive", logged.sequence_number),
            1,
        )
        .await;
        let got = &events[0];
        assert_eq!(got["body"], body, "{device_id}");
        assert_eq!(got["message_id"], "d2c-1");
        assert_eq!(got["content_type"], "application/json");
        assert_eq!(got["properties"]["k"], "v v");
        assert_eq!(got["sequence_number"], logged.sequence_number);
        let system = &got["system_properties"];
        assert_eq!(system["iothub-connection-device-id"], device_id);
        assert_eq!(system["content-encoding"], "utf-8");
        assert_eq!(system["iothub-message-source"], "Telemetry");
        if is_node {
            assert_eq!(got["correlation_id"], "corr-1");
        }
    }
}

/// In process, `LocalHub::telemetry_from` reads the same log: from the earliest event, from
/// an offset, from an enqueued time.
#[tokio::test]
async fn in_process_readers_start_from_a_position() {
    let hub = hub().await;
    let appended = fill(&hub).await;
    let mut all = hub.telemetry_from(TelemetryStart::Earliest).unwrap();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let t = next(&mut all).await;
        if t.partition == PARTITION {
            bodies.push(t.message.body_str().unwrap().to_owned());
        }
    }
    assert_eq!(bodies, [r#"{"temp":21.5}"#, "second", "third"]);
    let mut from = hub
        .telemetry_from(TelemetryStart::Offset {
            partition: PARTITION,
            offset: appended[1].offset,
        })
        .unwrap();
    assert_eq!(next(&mut from).await.message.body_str(), Some("second"));
    assert_eq!(next(&mut from).await.message.body_str(), Some("third"));
    let mut since = hub
        .telemetry_from(TelemetryStart::EnqueuedSince(appended[2].enqueued_time))
        .unwrap();
    // "third" and, in its own partition, the later "elsewhere".
    let mut since_bodies = [next(&mut since).await, next(&mut since).await]
        .map(|t| t.message.body_str().unwrap().to_owned());
    since_bodies.sort();
    assert_eq!(since_bodies, ["elsewhere", "third"]);
    assert!(
        hub.telemetry_from(TelemetryStart::Offset {
            partition: 9,
            offset: 0
        })
        .is_err()
    );
}
