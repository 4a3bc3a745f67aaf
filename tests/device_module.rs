//! A module identity's `DeviceClient` against an in-process local hub.
//!
//! Uses `LocalHub::create_module`, `LocalHub::is_module_connected` and `local_hub::Telemetry`
//! (issue 10, hub side).
#![cfg(all(feature = "device", feature = "local-hub"))]

use std::time::Duration;

use iothub::auth::DeviceConnectionString;
use iothub::device::{ConnectionState, DeviceClient};
use iothub::local_hub::{LocalHub, Telemetry, TelemetryStream};
use iothub::{ErrorKind, Message};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn connect(hub: &LocalHub, cs: DeviceConnectionString) -> DeviceClient {
    timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .expect("connects in time")
    .expect("connects")
}

async fn next_telemetry(telemetry: &mut TelemetryStream) -> Telemetry {
    timeout(WAIT, telemetry.recv())
        .await
        .expect("telemetry in time")
        .expect("the hub is running")
}

#[tokio::test]
async fn a_module_connects_and_its_telemetry_names_the_module() {
    let hub = LocalHub::builder().start().await.unwrap();
    let mut telemetry = hub.telemetry();
    hub.create_device("dev1").unwrap();
    let cs = hub.create_module("dev1", "m1").unwrap();
    assert_eq!(cs.module_id(), Some("m1"));
    let module = connect(&hub, cs).await;
    assert_eq!(
        *module.connection_state().borrow(),
        ConnectionState::Connected
    );
    assert!(hub.is_module_connected("dev1", "m1"));

    let sent = Message::new("{\"from\": \"module\"}")
        .with_message_id("mod-1")
        .with_property("k", "v");
    timeout(WAIT, module.send_message(sent.clone()))
        .await
        .unwrap()
        .unwrap();
    let received = next_telemetry(&mut telemetry).await;
    assert_eq!(received.device_id, "dev1");
    assert_eq!(received.module_id.as_deref(), Some("m1"));
    assert_eq!(received.message, sent);
}

#[tokio::test]
async fn a_module_has_no_cloud_to_device_messages() {
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let module = connect(&hub, hub.create_module("dev1", "m1").unwrap()).await;
    let err = timeout(WAIT, module.receive_message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
    assert!(
        err.to_string()
            .contains("modules have no cloud-to-device messages")
    );
    // Still connected: nothing was refused.
    assert!(hub.is_module_connected("dev1", "m1"));
}

#[tokio::test]
async fn a_device_and_its_module_stay_connected_side_by_side() {
    let hub = LocalHub::builder().start().await.unwrap();
    let mut telemetry = hub.telemetry();
    let device_cs = hub.create_device("dev1").unwrap();
    let module_cs = hub.create_module("dev1", "m1").unwrap();
    let device = connect(&hub, device_cs).await;
    let mut device_state = device.connection_state();
    device_state.borrow_and_update();
    let module = connect(&hub, module_cs).await;
    let mut module_state = module.connection_state();
    module_state.borrow_and_update();
    // Neither connection took the other's session slot.
    assert!(hub.is_connected("dev1"));
    assert!(hub.is_module_connected("dev1", "m1"));

    // C2D still reaches the device.
    hub.enqueue_c2d("dev1", Message::new("to device").with_message_id("c1"))
        .unwrap();
    let c2d = timeout(WAIT, device.receive_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2d.message_id(), Some("c1"));

    // Telemetry flows from both, each under its own identity.
    device
        .send_message(Message::new("d").with_message_id("from-device"))
        .await
        .unwrap();
    module
        .send_message(Message::new("m").with_message_id("from-module"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let t = next_telemetry(&mut telemetry).await;
        seen.push((
            t.device_id,
            t.module_id,
            t.message.message_id().map(str::to_owned),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("dev1".to_owned(), None, Some("from-device".to_owned())),
            (
                "dev1".to_owned(),
                Some("m1".to_owned()),
                Some("from-module".to_owned())
            ),
        ]
    );
    // Neither connection was dropped at any point: no state change since connecting.
    assert!(
        !device_state.has_changed().unwrap(),
        "the device reconnected"
    );
    assert!(
        !module_state.has_changed().unwrap(),
        "the module reconnected"
    );
    assert!(hub.is_connected("dev1"));
    assert!(hub.is_module_connected("dev1", "m1"));
}
