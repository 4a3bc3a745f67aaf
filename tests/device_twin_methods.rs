//! Device twins and direct methods of `DeviceClient` (device and module identities) against an
//! in-process local hub; the back end's side goes through our `RegistryManager` (HTTPS) or the
//! hub's own twin and method calls (`LocalHub::update_desired_properties`, `twin_properties`,
//! `invoke_method`).
#![cfg(all(feature = "device", feature = "service", feature = "local-hub"))]

use std::sync::Arc;
use std::time::Duration;

use iothub::ErrorKind;
use iothub::RetryPolicy;
use iothub::auth::DeviceConnectionString;
use iothub::device::{
    ConnectionState, DesiredPropertyUpdates, DesiredUpdateKind, DeviceClient, MethodRequests,
};
use iothub::local_hub::LocalHub;
use iothub::protocol::TwinPatch;
use iothub::service::RegistryManager;
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

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

fn registry(hub: &LocalHub) -> RegistryManager {
    RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .expect("the registry manager builds")
}

async fn next_update(
    updates: &mut DesiredPropertyUpdates,
) -> iothub::device::DesiredPropertiesUpdate {
    timeout(WAIT, updates.recv())
        .await
        .expect("an update in time")
        .expect("the client is open")
}

/// A client that waits `delay` before reconnecting, so that a change made right after the
/// hub drops it is surely made while it is away.
async fn connect_slow_to_return(
    hub: &LocalHub,
    cs: DeviceConnectionString,
    delay: Duration,
) -> DeviceClient {
    let retry = RetryPolicy::new()
        .with_initial_delay(delay)
        .with_jitter(0.0);
    timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .retry_policy(retry)
            .connect(),
    )
    .await
    .expect("connects in time")
    .expect("connects")
}

async fn wait_connected(client: &DeviceClient) {
    let mut state = client.connection_state();
    timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .expect("reconnects in time")
        .expect("the client is running");
}

/// Answers every request on `requests` with 200 and `{"echo": payload, "method": name}`.
fn echo_methods(mut requests: MethodRequests) {
    tokio::spawn(async move {
        while let Ok(request) = requests.recv().await {
            let answer = json!({"method": request.name(), "echo": request.payload().clone()});
            let _ = request.respond(200, answer).await;
        }
    });
}

#[tokio::test]
async fn reported_properties_grow_the_version_and_the_back_end_reads_them() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs).await;

    let twin = timeout(WAIT, client.get_twin()).await.unwrap().unwrap();
    let first = twin.reported.version;
    let v1 = timeout(
        WAIT,
        client.update_reported_properties(json!({"firmware": "1.0", "battery": {"level": 80}})),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(v1 > first, "{v1} > {first}");
    let v2 = timeout(
        WAIT,
        client.update_reported_properties(json!({"battery": {"level": 79}, "firmware": null})),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(v2, v1 + 1);

    let twin = timeout(WAIT, client.get_twin()).await.unwrap().unwrap();
    assert_eq!(twin.reported.version, v2);
    assert_eq!(twin.reported.properties["battery"]["level"], 79);
    assert!(
        !twin.reported.properties.contains_key("firmware"),
        "null deletes"
    );

    let seen = registry(&hub).get_twin("dev1").await.unwrap();
    assert_eq!(seen.properties.reported["battery"]["level"], 79);
    assert_eq!(seen.properties.reported_version(), Some(v2));
    assert!(!seen.properties.reported.contains_key("firmware"));
}

#[tokio::test]
async fn the_hub_refuses_bad_reported_patches_with_typed_errors() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs).await;
    let err = timeout(WAIT, client.update_reported_properties(json!({"$bad": 1})))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{err}");
    let err = timeout(
        WAIT,
        client.update_reported_properties(json!("not an object")),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);
    // The client still works.
    timeout(WAIT, client.update_reported_properties(json!({"ok": true})))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn desired_changes_arrive_with_their_version_and_none_is_lost_across_a_reconnect() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect_slow_to_return(&hub, cs, Duration::from_secs(2)).await;
    let v0 = hub
        .update_desired_properties("dev1", None, json!({"interval": 5}))
        .unwrap();

    let mut updates = timeout(WAIT, client.desired_property_updates())
        .await
        .unwrap()
        .unwrap();
    let first = next_update(&mut updates).await;
    assert_eq!(first.kind, DesiredUpdateKind::FullDocument);
    assert_eq!(first.version, v0);
    assert_eq!(first.properties["interval"], 5);

    let patch = TwinPatch::new().desired(json!({"interval": 10, "mode": "eco"}));
    let twin = registry(&hub)
        .update_twin("dev1", &patch, None)
        .await
        .unwrap();
    let v1 = twin.properties.desired_version().unwrap();
    let patch = next_update(&mut updates).await;
    assert_eq!((patch.kind, patch.version), (DesiredUpdateKind::Patch, v1));
    assert_eq!(patch.properties["interval"], 10);
    assert_eq!(patch.properties["mode"], "eco");

    // The device drops off; the back end changes the desired properties meanwhile.
    let mut state = client.connection_state();
    assert!(hub.disconnect_device("dev1"));
    timeout(
        WAIT,
        state.wait_for(|s| !matches!(s, ConnectionState::Connected)),
    )
    .await
    .unwrap()
    .unwrap();
    let v2 = hub
        .update_desired_properties("dev1", None, json!({"interval": 30, "mode": null}))
        .unwrap();
    assert_eq!(v2, v1 + 1);
    wait_connected(&client).await;
    let caught_up = next_update(&mut updates).await;
    assert_eq!(
        (caught_up.kind, caught_up.version),
        (DesiredUpdateKind::FullDocument, v2)
    );
    assert_eq!(caught_up.properties["interval"], 30);
    assert!(
        !caught_up.properties.contains_key("mode"),
        "removed while away"
    );

    // Patches flow again on the restored subscription.
    let v3 = hub
        .update_desired_properties("dev1", None, json!({"interval": 60}))
        .unwrap();
    let patch = next_update(&mut updates).await;
    assert_eq!((patch.kind, patch.version), (DesiredUpdateKind::Patch, v3));
}

#[tokio::test]
async fn a_method_call_gets_the_application_answer_and_a_dropped_one_gets_500() {
    let hub = Arc::new(LocalHub::builder().start().await.unwrap());
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs).await;
    let mut requests = timeout(WAIT, client.method_requests())
        .await
        .unwrap()
        .unwrap();

    let invoke = |name: &'static str, payload: Value| {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.invoke_method(
                "dev1",
                None,
                name,
                payload,
                Duration::from_secs(30),
                Duration::from_secs(0),
            )
            .await
        })
    };

    let call = invoke("reboot", json!({"delay": 3}));
    let request = timeout(WAIT, requests.recv()).await.unwrap().unwrap();
    assert_eq!(request.name(), "reboot");
    assert_eq!(request.payload(), &json!({"delay": 3}));
    timeout(
        WAIT,
        request.respond(200, json!({"rebooting": true, "in": 3})),
    )
    .await
    .unwrap()
    .unwrap();
    let result = timeout(WAIT, call).await.unwrap().unwrap().unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(result.payload, json!({"rebooting": true, "in": 3}));

    // The application takes a request and drops it: the caller gets 500 long before its
    // 30 s response timeout.
    let call = invoke("forget", Value::Null);
    let request = timeout(WAIT, requests.recv()).await.unwrap().unwrap();
    assert_eq!(request.payload(), &Value::Null);
    drop(request);
    let result = timeout(WAIT, call).await.unwrap().unwrap().unwrap();
    assert_eq!(result.status, iothub::device::DROPPED_REQUEST_STATUS);

    // A payload close to the 128 KB limit goes both ways.
    let big = "x".repeat(120 * 1024);
    echo_methods(requests);
    let result = timeout(WAIT, invoke("echo", json!(big)))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(result.payload["echo"], json!(big));
}

#[tokio::test]
async fn methods_work_again_after_a_reconnect() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs).await;
    echo_methods(
        timeout(WAIT, client.method_requests())
            .await
            .unwrap()
            .unwrap(),
    );
    let mut state = client.connection_state();
    assert!(hub.disconnect_device("dev1"));
    timeout(
        WAIT,
        state.wait_for(|s| !matches!(s, ConnectionState::Connected)),
    )
    .await
    .unwrap()
    .unwrap();
    wait_connected(&client).await;
    let result = hub
        .invoke_method(
            "dev1",
            None,
            "ping",
            json!(1),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(result.payload["method"], "ping");
}

#[tokio::test]
async fn a_module_has_its_own_twin_and_methods() {
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let cs = hub.create_module("dev1", "m1").unwrap();
    let module = connect(&hub, cs).await;

    let version = timeout(
        WAIT,
        module.update_reported_properties(json!({"role": "filter"})),
    )
    .await
    .unwrap()
    .unwrap();
    let seen = hub.twin_properties("dev1", Some("m1")).unwrap();
    assert_eq!(seen.reported["role"], "filter");
    assert_eq!(seen.reported["$version"], version);
    let device_twin = hub.twin_properties("dev1", None).unwrap();
    assert!(
        !device_twin.reported.contains_key("role"),
        "the device's twin is separate"
    );

    let mut updates = timeout(WAIT, module.desired_property_updates())
        .await
        .unwrap()
        .unwrap();
    next_update(&mut updates).await; // the full document
    let v = hub
        .update_desired_properties("dev1", Some("m1"), json!({"threshold": 7}))
        .unwrap();
    let patch = next_update(&mut updates).await;
    assert_eq!((patch.kind, patch.version), (DesiredUpdateKind::Patch, v));
    assert_eq!(patch.properties["threshold"], 7);

    echo_methods(
        timeout(WAIT, module.method_requests())
            .await
            .unwrap()
            .unwrap(),
    );
    let result = hub
        .invoke_method(
            "dev1",
            Some("m1"),
            "status",
            json!({"q": 1}),
            Duration::from_secs(30),
            Duration::from_secs(0),
        )
        .await
        .unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(result.payload["echo"], json!({"q": 1}));

    // Modules still have no cloud-to-device messages.
    assert_eq!(
        module.receive_message().await.unwrap_err().kind(),
        ErrorKind::NotSupported
    );
}

#[tokio::test]
async fn a_twin_request_to_a_closed_client_is_a_closed_error() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs).await;
    client.close().await.unwrap();
    assert_eq!(
        client.get_twin().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        client.method_requests().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[tokio::test]
async fn a_twin_request_made_while_away_times_out_after_the_builder_timeout() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let retry = RetryPolicy::new().with_initial_delay(Duration::from_secs(60));
    let client = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .retry_policy(retry)
            .twin_request_timeout(Duration::from_millis(300))
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
    let mut state = client.connection_state();
    assert!(hub.disconnect_device("dev1"));
    timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let err = timeout(WAIT, client.update_reported_properties(json!({"a": 1})))
        .await
        .expect("the request's own timeout fires first")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}
