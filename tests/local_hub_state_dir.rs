//! `LocalHubBuilder::state_dir`: a hub started again on the same directory has the same CA,
//! keys, ports, devices, modules, twins, queued C2D messages, feedback and telemetry.
#![cfg(all(feature = "local-hub", feature = "device"))]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::WAIT;
use futures_util::StreamExt;
use iothub::device::DeviceClient;
use iothub::local_hub::{C2dLimits, LocalHub, TelemetryStart};
use iothub::{Ack, Message};
use tokio::time::timeout;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iothub-state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn start(dir: &PathBuf) -> LocalHub {
    LocalHub::builder()
        .state_dir(dir)
        .feedback_flush_interval(Duration::from_millis(50))
        .c2d_limits(C2dLimits::new().with_max_pending(100))
        .start()
        .await
        .expect("the hub starts on its state directory")
}

#[tokio::test]
async fn a_restarted_hub_keeps_keys_ca_ports_registry_queue_feedback_and_telemetry() {
    let dir = scratch_dir("restart");
    let hub = start(&dir).await;
    let device_cs = hub.create_device("dev1").unwrap();
    let module_cs = hub.create_module("dev1", "m1").unwrap();
    hub.create_device("gone").unwrap();
    hub.delete_device("gone").unwrap();
    let service_cs = hub.service_connection_string().to_string();
    let ca_pem = hub.ca_pem().to_owned();
    let ports = (hub.mqtt_addr(), hub.amqp_addr(), hub.https_addr());

    // Telemetry and a completed C2D message (whose feedback is pending) before the restart.
    let device = DeviceClient::builder(device_cs.clone())
        .trust_ca_pem(&ca_pem)
        .connect()
        .await
        .unwrap();
    for i in 0..5 {
        device
            .send_message(Message::new(format!("t{i}")).with_message_id(format!("t{i}")))
            .await
            .unwrap();
    }
    hub.enqueue_c2d(
        "dev1",
        Message::new("first")
            .with_message_id("c0")
            .with_ack(Ack::Full),
    )
    .unwrap();
    let first = timeout(WAIT, device.receive_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.message_id(), Some("c0"));
    // The completion (PUBACK) reaches the hub: the queue empties.
    timeout(WAIT, async {
        while hub.c2d_queue_len("dev1") != Some(0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    device.close().await.unwrap();
    for i in 1..4 {
        hub.enqueue_c2d(
            "dev1",
            Message::new(format!("m{i}"))
                .with_message_id(format!("c{i}"))
                .with_property("k", "v;=")
                .with_ack(Ack::Full),
        )
        .unwrap();
    }
    hub.update_desired_properties("dev1", None, serde_json::json!({"rate": 5}))
        .unwrap();
    hub.update_desired_properties("dev1", Some("m1"), serde_json::json!({"mode": "eco"}))
        .unwrap();
    let twin_before = hub.twin_properties("dev1", None).unwrap();
    hub.persisted().await.unwrap();
    hub.shutdown().await;

    let hub = start(&dir).await;
    assert_eq!(hub.service_connection_string().to_string(), service_cs);
    assert_eq!(hub.ca_pem(), ca_pem);
    assert_eq!(
        (hub.mqtt_addr(), hub.amqp_addr(), hub.https_addr()),
        ports,
        "port 0 reuses the ports of the last start"
    );
    assert_eq!(
        hub.device_connection_string("dev1"),
        Some(device_cs.clone())
    );
    assert_eq!(hub.module_connection_string("dev1", "m1"), Some(module_cs));
    assert_eq!(hub.device_connection_string("gone"), None);
    assert_eq!(hub.c2d_queue_len("dev1"), Some(3));
    assert_eq!(hub.twin_properties("dev1", None).unwrap(), twin_before);
    let module_twin =
        serde_json::to_value(hub.twin_properties("dev1", Some("m1")).unwrap()).unwrap();
    assert_eq!(module_twin["desired"]["mode"], "eco");
    let mut telemetry = hub.telemetry_from(TelemetryStart::Earliest).unwrap();
    for _ in 0..5 {
        timeout(WAIT, telemetry.next()).await.unwrap().unwrap();
    }
    let mut feedback = hub.feedback();
    let batch = timeout(WAIT, feedback.next()).await.unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].original_message_id, "c0");

    // A device that trusts the CA of the first start connects and gets the queued messages.
    let device = DeviceClient::builder(device_cs)
        .trust_ca_pem(&ca_pem)
        .connect()
        .await
        .unwrap();
    for i in 1..4 {
        let message = timeout(WAIT, device.receive_message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.message_id(), Some(format!("c{i}").as_str()));
        assert_eq!(message.property("k"), Some("v;="));
    }
    device.close().await.unwrap();
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_state_directory_of_another_hub_name_is_refused_with_what_to_do() {
    let dir = scratch_dir("name");
    start(&dir).await.shutdown().await;
    let error = LocalHub::builder()
        .host_name("other")
        .state_dir(&dir)
        .start()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("'localhost'") && text.contains("--hostname"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A message read back from the state directory still expires on time: the restarted hub
/// files its deadline, and its sender gets `Expired` feedback although no device ever connects.
#[tokio::test]
async fn a_restored_message_expires_and_its_sender_hears_of_it() {
    let dir = scratch_dir("expiry");
    let hub = start(&dir).await;
    hub.create_device("dev1").unwrap();
    hub.enqueue_c2d(
        "dev1",
        Message::new("late")
            .with_message_id("late")
            .with_expiry(std::time::SystemTime::now() + Duration::from_secs(2))
            .with_ack(Ack::Full),
    )
    .unwrap();
    hub.persisted().await.unwrap();
    hub.shutdown().await;

    let hub = start(&dir).await;
    assert_eq!(hub.c2d_queue_len("dev1"), Some(1));
    let mut feedback = hub.feedback();
    let batch = timeout(WAIT, feedback.next()).await.unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].original_message_id, "late");
    assert_eq!(
        batch[0].status_code,
        iothub::protocol::FeedbackStatus::Expired
    );
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file of the state directory, as text.
fn state_text(dir: &PathBuf) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

/// A registry change made over HTTPS is on disk when the hub answers it: a `kill -9` right
/// after the answer cannot lose it.
#[tokio::test]
async fn a_registry_change_is_on_disk_before_the_hub_answers_it() {
    let dir = scratch_dir("https");
    let hub = start(&dir).await;
    let registry = iothub::service::RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap();
    for i in 0..20 {
        let id = format!("durable-{i}");
        registry.create_device(&id).await.unwrap();
        assert!(
            state_text(&dir).contains(&id),
            "{id} was answered before it was written"
        );
    }
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The state directory holds the hub's keys and its CA's private key: only its owner may read
/// it.
#[cfg(unix)]
#[tokio::test]
async fn the_state_directory_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("private");
    let hub = start(&dir).await;
    hub.create_device("dev1").unwrap();
    hub.persisted().await.unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode(&dir) & 0o077, 0, "the directory is {:o}", mode(&dir));
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file()
            && std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("dev1")
        {
            files += 1;
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is {:o}",
                path.display(),
                mode(&path)
            );
        }
    }
    assert!(files > 0, "no file holds the device");
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
