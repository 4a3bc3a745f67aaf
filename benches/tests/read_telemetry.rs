//! `examples/read_device_to_cloud_messages.rs`: the official Event Hubs SDK for Rust
//! (`azure_messaging_eventhubs`) reads what our `DeviceClient` sends, through the local hub's
//! Event Hubs-compatible endpoint, with the body, the device's properties and IoT Hub's
//! annotations; and the example itself, run as a program the way a user runs it.
//!
//! `cargo test` builds the example before it runs the tests (`target/debug/examples/`); when it
//! is not there (`--test read_telemetry` alone builds no example), the tests that run it say so
//! and pass, unless `IOTHUB_REQUIRE_EXAMPLES=1`.

#[path = "../../examples/read_device_to_cloud_messages.rs"]
#[allow(dead_code)] // `main` and the embedded run are the program's, not the tests'
mod example;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use example::{D2cEvent, D2cReader, plain_amqp_endpoint};
use iothub::Message;
use iothub::device::DeviceClient;
use iothub::local_hub::LocalHub;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

/// Every wait in these tests (the machine is shared and loaded).
const WAIT: Duration = Duration::from_secs(60);

async fn hub() -> LocalHub {
    LocalHub::builder().start().await.expect("the hub starts")
}

async fn device(hub: &LocalHub, device_id: &str) -> DeviceClient {
    let connection_string = hub.create_device(device_id).expect("registered");
    timeout(
        WAIT,
        DeviceClient::builder(connection_string)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .expect("the device connects in time")
    .expect("the device connects")
}

/// Message `i` with every property a device can set.
fn telemetry(i: usize) -> Message {
    Message::new(format!("{{\"reading\":{i}}}"))
        .with_message_id(format!("msg-{i}"))
        .with_correlation_id(format!("corr-{i}"))
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_property(
            "temperatureAlert",
            if i.is_multiple_of(2) { "false" } else { "true" },
        )
        .with_property("index", i.to_string())
}

async fn next_event(reader: &mut D2cReader) -> D2cEvent {
    timeout(WAIT, reader.next())
        .await
        .expect("an event in time")
        .expect("the receivers run")
        .expect("the event is read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_reads_body_properties_and_annotations_of_device_telemetry() {
    let hub = hub().await;
    let device = device(&hub, "reader-device").await;
    for i in 0..3_usize {
        device.send_message(telemetry(i)).await.expect("sent");
    }

    // Opened after the sends: the receivers start at the oldest retained event.
    let mut reader = D2cReader::open(&hub.event_hubs_emulator_connection_string())
        .await
        .expect("the SDK connects");
    let mut partition = None;
    for i in 0..3_usize {
        let event = next_event(&mut reader).await;
        // One device's messages are in one partition, in order.
        assert_eq!(
            partition.get_or_insert_with(|| event.partition.clone()),
            &event.partition
        );
        assert_eq!(event.body, format!("{{\"reading\":{i}}}").into_bytes());
        let properties = BTreeMap::from([
            ("index".to_owned(), i.to_string()),
            (
                "temperatureAlert".to_owned(),
                (if i.is_multiple_of(2) { "false" } else { "true" }).to_owned(),
            ),
        ]);
        assert_eq!(event.application_properties, properties);
        let system = &event.system_properties;
        let expected = [
            ("iothub-connection-device-id", "reader-device".to_owned()),
            ("iothub-connection-auth-method", String::new()),
            ("iothub-connection-auth-generation-id", String::new()),
            ("iothub-enqueuedtime", String::new()),
            ("iothub-message-source", "Telemetry".to_owned()),
            ("x-opt-sequence-number", i.to_string()),
            ("x-opt-offset", String::new()),
            ("x-opt-enqueued-time", String::new()),
            ("message-id", format!("msg-{i}")),
            ("correlation-id", format!("corr-{i}")),
            ("content-type", "application/json".to_owned()),
            ("content-encoding", "utf-8".to_owned()),
        ];
        for (name, value) in expected {
            let actual = system
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in {system:?}"));
            if value.is_empty() {
                assert!(!actual.is_empty(), "{name} is empty in {system:?}");
            } else {
                assert_eq!(actual, &value, "{name} in {system:?}");
            }
        }
        assert!(
            system["iothub-connection-auth-method"].contains("sas"),
            "{system:?}"
        );
        assert!(!system.contains_key("iothub-connection-module-id"));

        // Printed as Microsoft's ReadD2cMessages prints it.
        let printed = event.to_string();
        assert!(printed.starts_with(&format!(
            "Message received on partition {}:\n\tMessage body: {{\"reading\":{i}}}\n\
             \tApplication properties (set by device):\n\t\tindex: {i}\n",
            event.partition
        )));
        assert!(printed.contains("\tSystem properties (set by IoT Hub):\n"));
        assert!(printed.contains("\n\t\tiothub-connection-device-id: reader-device"));
    }
    reader.close().await;
    device.close().await.expect("closed");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_telemetry_carries_the_module_id() {
    let hub = hub().await;
    hub.create_device("edge-device").expect("registered");
    let module_connection_string = hub
        .create_module("edge-device", "sensor")
        .expect("module registered");
    let module = timeout(
        WAIT,
        DeviceClient::builder(module_connection_string)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .expect("the module connects in time")
    .expect("the module connects");
    let mut reader = D2cReader::open(&hub.event_hubs_emulator_connection_string())
        .await
        .expect("the SDK connects");
    module
        .send_message(Message::new("from a module"))
        .await
        .expect("sent");
    let event = next_event(&mut reader).await;
    assert_eq!(event.body, b"from a module");
    assert_eq!(
        event.system_properties.get("iothub-connection-device-id"),
        Some(&"edge-device".to_owned())
    );
    assert_eq!(
        event.system_properties.get("iothub-connection-module-id"),
        Some(&"sensor".to_owned())
    );
    reader.close().await;
    module.close().await.expect("closed");
    hub.shutdown().await;
}

#[test]
fn only_the_emulator_connection_string_form_is_accepted() {
    let key = "SharedAccessKeyName=service;SharedAccessKey=a2V5;EntityPath=iothub-ehub-x";
    assert_eq!(
        plain_amqp_endpoint(&format!(
            "Endpoint=sb://localhost:15672/;{key};UseDevelopmentEmulator=true"
        )),
        Ok("amqp://localhost:15672".to_owned())
    );
    assert_eq!(
        plain_amqp_endpoint(&format!(
            "Endpoint=sb://localhost;{key};UseDevelopmentEmulator=true"
        )),
        Ok("amqp://localhost:5672".to_owned())
    );
    let tls = plain_amqp_endpoint(&format!("Endpoint=sb://localhost:15671/;{key}"))
        .expect_err("TLS needs the SDK's TLS features");
    assert!(tls.contains("EVENTHUB_EMULATOR_CONNECTION_STRING"), "{tls}");
    assert!(!tls.contains("a2V5"), "no key in {tls}");
}

/// The built example, if `cargo test` built it.
fn example_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test's path");
    let path = exe.parent()?.parent()?.join("examples").join(format!(
        "read_device_to_cloud_messages{}",
        std::env::consts::EXE_SUFFIX
    ));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("IOTHUB_REQUIRE_EXAMPLES").is_none_or(|v| v != "1"),
        "{} is not built (run `cargo test --workspace --all-features`)",
        path.display()
    );
    eprintln!(
        "skipped: {} is not built; `cargo test --workspace` builds the examples",
        path.display()
    );
    None
}

fn command(program: &PathBuf) -> Command {
    let mut command = Command::new(program);
    command
        .env_remove("EVENTHUB_CONNECTION_STRING")
        .env_remove("EVENTHUB_EMULATOR_CONNECTION_STRING")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_alone_reads_back_what_its_simulated_device_sent() {
    let Some(program) = example_program() else {
        return;
    };
    let output = timeout(WAIT, command(&program).output())
        .await
        .expect("the example ends in time")
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(
        stdout.matches("Message received on partition ").count(),
        5,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("\t\tiothub-connection-device-id: myFirstDevice\n")
            .count(),
        5,
        "{stdout}"
    );
    assert_eq!(stdout.matches("\t\ttemperatureAlert: ").count(), 5);
    assert!(stdout.ends_with("Done\n"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_reads_a_running_hub_from_its_connection_string() {
    let Some(program) = example_program() else {
        return;
    };
    let hub = hub().await;
    let device = device(&hub, "cli-device").await;
    device
        .send_message(Message::new("before the reader").with_property("k", "v"))
        .await
        .expect("sent");

    let mut child = command(&program)
        .env(
            "EVENTHUB_CONNECTION_STRING",
            hub.event_hubs_emulator_connection_string(),
        )
        .spawn()
        .expect("the example starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next_line = async || {
        timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("stdout readable")
            .expect("the example still runs")
    };
    assert_eq!(
        next_line().await,
        "Listening for messages on all partitions. Press Ctrl-C to exit."
    );
    // A message retained before it started, then one sent while it runs.
    for (body, retained) in [("before the reader", true), ("while it runs", false)] {
        if !retained {
            device
                .send_message(Message::new(body).with_property("k", "v"))
                .await
                .expect("sent");
        }
        let header = next_line().await;
        assert!(
            header.starts_with("Message received on partition "),
            "{header}"
        );
        assert_eq!(next_line().await, format!("\tMessage body: {body}"));
        assert_eq!(
            next_line().await,
            "\tApplication properties (set by device):"
        );
        assert_eq!(next_line().await, "\t\tk: v");
        assert_eq!(next_line().await, "\tSystem properties (set by IoT Hub):");
        let mut system = Vec::new();
        loop {
            let line = next_line().await;
            if line.is_empty() {
                break;
            }
            system.push(line);
        }
        assert!(
            system.contains(&"\t\tiothub-connection-device-id: cli-device".to_owned()),
            "{system:?}"
        );
    }
    child.start_kill().expect("stopped");
    let _ = child.wait().await;

    // The TLS connection string is refused with a hint, as a set-up error.
    let output = timeout(
        WAIT,
        command(&program)
            .env(
                "EVENTHUB_CONNECTION_STRING",
                hub.event_hubs_connection_string(),
            )
            .output(),
    )
    .await
    .expect("the example ends in time")
    .expect("the example runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("EVENTHUB_EMULATOR_CONNECTION_STRING"),
        "{stderr}"
    );
    device.close().await.expect("closed");
    hub.shutdown().await;
}
