//! The connection task's feature subscriptions and request path, driven through its commands
//! against the in-process local hub (the public twin and methods API on top of them is tested
//! in `tests/device_twin_methods.rs`).

use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::device::connection::Command;
use crate::device::inbound::FeatureSink;
use crate::device::{AckMode, ConnectionState, DeviceClient};
use crate::error::ErrorKind;
use crate::local_hub::LocalHub;
use crate::message::Message;
use crate::protocol::{METHOD_REQUEST_SUBSCRIPTION, TwinRequestKind, input_subscription};
use crate::retry::RetryPolicy;

const WAIT: Duration = Duration::from_secs(10);

async fn connected(hub: &LocalHub) -> DeviceClient {
    let cs = hub.create_device("dev1").unwrap();
    // The default policy's first delay (250 ms) is well inside WAIT.
    timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .ack_mode(AckMode::Auto)
            .retry_policy(RetryPolicy::default())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap()
}

async fn subscribe(client: &DeviceClient, filter: String, sink: FeatureSink) -> crate::Result<()> {
    let (done, granted) = oneshot::channel();
    let command = Command::Subscribe {
        qos: QoS::AtMostOnce,
        filter,
        sink: Some(sink),
        done,
    };
    client.commands().send(command).await.unwrap();
    timeout(WAIT, granted).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_refused_feature_subscription_fails_alone_and_subscriptions_survive_a_reconnect() {
    let hub = LocalHub::builder().start().await.unwrap();
    let client = connected(&hub).await;

    let (tx, _methods) = mpsc::channel(4);
    let filter = METHOD_REQUEST_SUBSCRIPTION.to_owned();
    subscribe(&client, filter.clone(), FeatureSink::MethodRequests(tx))
        .await
        .unwrap();

    // A device may not read a module's inputs: the hub refuses, the client keeps going.
    let (tx, _inputs) = mpsc::channel(4);
    let err = subscribe(
        &client,
        input_subscription("dev1", "m1"),
        FeatureSink::Inputs(tx),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(
        *client.connection_state().borrow(),
        ConnectionState::Connected
    );

    // After the hub drops the connection, C2D (subscribed at connect) still flows and the
    // methods subscription is granted again.
    let mut state = client.connection_state();
    assert!(hub.disconnect_device("dev1"));
    timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();
    hub.enqueue_c2d("dev1", Message::new("after").with_message_id("a1"))
        .unwrap();
    let message = timeout(WAIT, client.receive_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.message_id(), Some("a1"));
    let (tx, _methods) = mpsc::channel(4);
    subscribe(&client, filter, FeatureSink::MethodRequests(tx))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_waiting_for_the_connection_times_out_and_close_fails_waiting_requests() {
    // The hub answers twin requests at once, so the request is made while the client is away
    // (its reconnection waits 60 s): it waits unsent, then its deadline passes.
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let client = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .retry_policy(RetryPolicy::new().with_initial_delay(Duration::from_secs(60)))
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
    let request = |timeout: Duration| {
        let (done, response) = oneshot::channel();
        let command = Command::Request {
            kind: TwinRequestKind::Get,
            payload: Bytes::from_static(b" "),
            timeout,
            done,
        };
        (command, response)
    };
    let (command, response) = request(Duration::from_millis(200));
    client.commands().send(command).await.unwrap();
    let err = timeout(WAIT, response).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let (command, response) = request(Duration::from_secs(600));
    client.commands().send(command).await.unwrap();
    client.close().await.unwrap();
    let err = timeout(WAIT, response).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
}
