//! A device and two of its modules connected at once, each with its own twin and methods: the
//! back end writes desired properties and calls methods through our `RegistryManager` (HTTPS),
//! and each identity receives only its own patches and calls.
#![cfg(all(feature = "device", feature = "service", feature = "local-hub"))]

use std::time::Duration;

use iothub::ErrorKind;
use iothub::auth::DeviceConnectionString;
use iothub::device::{DesiredPropertyUpdates, DesiredUpdateKind, DeviceClient};
use iothub::local_hub::LocalHub;
use iothub::protocol::TwinPatch;
use iothub::service::RegistryManager;
use serde_json::json;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);
const METHOD_TIMEOUT: Duration = Duration::from_secs(30);

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

/// One connected identity: its client, its desired updates (the first full document read) and
/// a task answering every method call with its name.
struct Connected {
    client: DeviceClient,
    updates: DesiredPropertyUpdates,
}

async fn start(hub: &LocalHub, cs: DeviceConnectionString, name: &'static str) -> Connected {
    let client = connect(hub, cs).await;
    let mut updates = timeout(WAIT, client.desired_property_updates())
        .await
        .unwrap()
        .unwrap();
    let full = timeout(WAIT, updates.recv()).await.unwrap().unwrap();
    assert_eq!(full.kind, DesiredUpdateKind::FullDocument, "{name}");
    let mut requests = timeout(WAIT, client.method_requests())
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(async move {
        while let Ok(request) = requests.recv().await {
            let answer =
                json!({"who": name, "method": request.name(), "echo": request.payload().clone()});
            let _ = request.respond(200, answer).await;
        }
    });
    Connected { client, updates }
}

/// The next desired patch of `identity`: it must carry `who` = `expected`.
async fn expect_own_patch(identity: &mut Connected, expected: &str, round: u32) {
    let patch = timeout(WAIT, identity.updates.recv())
        .await
        .expect("a patch in time")
        .expect("the client is open");
    assert_eq!(patch.kind, DesiredUpdateKind::Patch);
    assert_eq!(
        (
            patch.properties["who"].as_str(),
            patch.properties["round"].as_u64()
        ),
        (Some(expected), Some(u64::from(round))),
        "{expected} got {patch:?}"
    );
}

#[tokio::test]
async fn a_device_and_two_modules_each_get_only_their_own_patches_and_calls() {
    let hub = LocalHub::builder().start().await.unwrap();
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap();
    registry.create_device("dev1").await.unwrap();
    registry.create_module("dev1", "m1").await.unwrap();
    registry.create_module("dev1", "m2").await.unwrap();
    let mut device = start(&hub, hub.device_connection_string("dev1").unwrap(), "dev1").await;
    let mut m1 = start(
        &hub,
        hub.module_connection_string("dev1", "m1").unwrap(),
        "m1",
    )
    .await;
    let mut m2 = start(
        &hub,
        hub.module_connection_string("dev1", "m2").unwrap(),
        "m2",
    )
    .await;
    assert!(hub.is_connected("dev1"));
    assert!(hub.is_module_connected("dev1", "m1") && hub.is_module_connected("dev1", "m2"));

    // Two rounds of desired patches, written in a different order each time: each identity's
    // next patch is always its own, so no patch went to another.
    for round in 1..=2u32 {
        let patch = |who: &str| TwinPatch::new().desired(json!({"who": who, "round": round}));
        if round == 1 {
            registry
                .update_twin("dev1", &patch("dev1"), None)
                .await
                .unwrap();
            registry
                .update_module_twin("dev1", "m1", &patch("m1"), None)
                .await
                .unwrap();
            registry
                .update_module_twin("dev1", "m2", &patch("m2"), None)
                .await
                .unwrap();
        } else {
            registry
                .update_module_twin("dev1", "m2", &patch("m2"), None)
                .await
                .unwrap();
            registry
                .update_module_twin("dev1", "m1", &patch("m1"), None)
                .await
                .unwrap();
            registry
                .update_twin("dev1", &patch("dev1"), None)
                .await
                .unwrap();
        }
        expect_own_patch(&mut device, "dev1", round).await;
        expect_own_patch(&mut m1, "m1", round).await;
        expect_own_patch(&mut m2, "m2", round).await;
    }

    // Reported properties land on each identity's own twin.
    for (client, who) in [
        (&device.client, "dev1"),
        (&m1.client, "m1"),
        (&m2.client, "m2"),
    ] {
        timeout(WAIT, client.update_reported_properties(json!({"me": who})))
            .await
            .unwrap()
            .unwrap();
    }
    let device_twin = registry.get_twin("dev1").await.unwrap();
    assert_eq!(device_twin.properties.reported["me"], "dev1");
    for module in ["m1", "m2"] {
        let twin = registry.get_module_twin("dev1", module).await.unwrap();
        assert_eq!(twin.module_id.as_deref(), Some(module));
        assert_eq!(twin.properties.reported["me"], module);
        assert_eq!(twin.properties.desired["who"], module);
    }

    // Method calls reach the identity they name, and only it.
    let to_device = registry
        .invoke_device_method(
            "dev1",
            "ping",
            json!({"n": 0}),
            METHOD_TIMEOUT,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(
        (to_device.status, &to_device.payload["who"]),
        (200, &json!("dev1"))
    );
    for (n, module) in ["m1", "m2", "m1"].into_iter().enumerate() {
        let result = registry
            .invoke_module_method(
                "dev1",
                module,
                "ping",
                json!({"n": n}),
                METHOD_TIMEOUT,
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(result.status, 200);
        assert_eq!(
            result.payload,
            json!({"who": module, "method": "ping", "echo": {"n": n}})
        );
    }

    // A module that is not connected is not online; an unknown one is not found.
    m2.client.close().await.unwrap();
    let err = registry
        .invoke_module_method(
            "dev1",
            "m2",
            "ping",
            json!(null),
            METHOD_TIMEOUT,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotOnline);
    let err = registry.get_module_twin("dev1", "ghost").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleNotFound);
    let err = registry
        .invoke_module_method(
            "dev1",
            "ghost",
            "ping",
            json!(null),
            METHOD_TIMEOUT,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleNotFound);
    // The others are unaffected.
    let again = registry
        .invoke_module_method(
            "dev1",
            "m1",
            "ping",
            json!(null),
            METHOD_TIMEOUT,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(again.payload["who"], "m1");
}

#[tokio::test]
async fn deleting_a_module_ends_its_twin_and_methods_but_not_its_siblings() {
    let hub = LocalHub::builder().start().await.unwrap();
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap();
    hub.create_device("dev1").unwrap();
    let m1 = start(&hub, hub.create_module("dev1", "m1").unwrap(), "m1").await;
    let mut m2 = start(&hub, hub.create_module("dev1", "m2").unwrap(), "m2").await;
    registry
        .update_module_twin(
            "dev1",
            "m1",
            &TwinPatch::new().desired(json!({"x": 1})),
            None,
        )
        .await
        .unwrap();

    registry.delete_module("dev1", "m1").await.unwrap();
    let err = registry.get_module_twin("dev1", "m1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleNotFound);
    // Re-created with the same id, the module starts with a new, empty twin.
    registry.create_module("dev1", "m1").await.unwrap();
    let twin = registry.get_module_twin("dev1", "m1").await.unwrap();
    assert!(twin.properties.desired.get("x").is_none(), "{twin:?}");
    drop(m1);

    registry
        .update_module_twin(
            "dev1",
            "m2",
            &TwinPatch::new().desired(json!({"who": "m2", "round": 1})),
            None,
        )
        .await
        .unwrap();
    expect_own_patch(&mut m2, "m2", 1).await;
}
