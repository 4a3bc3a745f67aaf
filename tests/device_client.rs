//! `DeviceClient` against an in-process local hub.
#![cfg(all(feature = "device", feature = "local-hub"))]

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use iothub::auth::{DeviceConnectionString, HostAndPort, SasKey};
use iothub::device::{
    AckMode, ConnectionState, DeviceClient, DeviceClientBuilder, RetryPolicy, Transport,
};
use iothub::local_hub::{FeedbackStream, LocalHub};
use iothub::protocol::FeedbackStatus;
use iothub::{Ack, ErrorKind, Message};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn hub() -> LocalHub {
    LocalHub::builder()
        .feedback_flush_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(200))
}

async fn connect(hub: &LocalHub, cs: DeviceConnectionString, ack: AckMode) -> DeviceClient {
    timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .ack_mode(ack)
            .retry_policy(fast_retry())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap()
}

async fn connect_built(builder: DeviceClientBuilder) -> DeviceClient {
    timeout(WAIT, builder.connect()).await.unwrap().unwrap()
}

/// The ids of the next `count` messages the hub reports completed, each once.
async fn completed_ids(feedback: &mut FeedbackStream, count: usize) -> BTreeSet<String> {
    let mut completed = BTreeSet::new();
    while completed.len() < count {
        let batch = timeout(WAIT, feedback.recv())
            .await
            .expect("feedback for every message taken")
            .unwrap();
        for record in batch {
            assert_eq!(record.status_code, FeedbackStatus::Success);
            assert!(
                completed.insert(record.original_message_id),
                "a message completed twice"
            );
        }
    }
    completed
}

async fn receive(client: &DeviceClient) -> Message {
    timeout(WAIT, client.receive_message())
        .await
        .expect("a message in time")
        .unwrap()
}

#[tokio::test]
async fn receives_every_property_exactly() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    assert_eq!(
        *client.connection_state().borrow(),
        ConnectionState::Connected
    );
    let expiry = UNIX_EPOCH + Duration::new(4_102_444_800, 123_400_000);
    let sent = Message::new("{\"service client sent a message\": 12.5}")
        .with_message_id("message_0")
        .with_correlation_id("correlation/0 & more")
        .with_user_id("user=1")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_expiry(expiry)
        .with_ack(Ack::Full)
        .with_property("testProperty", "PropMsg_0")
        .with_property("ünï cødé/key", "a/b&c=d%e+f $g €")
        .with_property("empty", "")
        .with_bare_property("flag");
    hub.enqueue_c2d("dev1", sent.clone()).unwrap();
    let received = receive(&client).await;
    // The hub adds `to`; everything else is exactly what was sent.
    assert_eq!(received.to(), Some("/devices/dev1/messages/devicebound"));
    assert_eq!(received, sent.with_to("/devices/dev1/messages/devicebound"));
}

#[tokio::test]
async fn messages_queued_while_offline_arrive_in_order_after_connect() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let mut feedback = hub.feedback();
    for i in 0..50 {
        let message = Message::new(format!("{i}"))
            .with_message_id(format!("m{i}"))
            .with_ack(Ack::Positive);
        hub.enqueue_c2d("dev1", message).unwrap();
    }
    let client = connect(&hub, cs, AckMode::Auto).await;
    for i in 0..50 {
        let message = receive(&client).await;
        assert_eq!(message.message_id(), Some(format!("m{i}").as_str()));
    }
    // Auto mode acknowledged each on hand-over: the hub reports every one completed.
    let mut completed = BTreeSet::new();
    while completed.len() < 50 {
        for record in timeout(WAIT, feedback.recv()).await.unwrap().unwrap() {
            assert_eq!(record.status_code, FeedbackStatus::Success);
            completed.insert(record.original_message_id);
        }
    }
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
}

#[tokio::test]
async fn manual_ack_redelivers_until_completed_and_completion_gives_success() {
    let hub = hub().await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Manual).await;
    let mut state = client.connection_state();
    hub.enqueue_c2d(
        "dev1",
        Message::new("hold")
            .with_message_id("h1")
            .with_ack(Ack::Full),
    )
    .unwrap();
    let first = receive(&client).await;
    assert_eq!(first.message_id(), Some("h1"));
    // Not completed; the connection drops and the client reconnects by itself.
    assert!(hub.disconnect_device("dev1"));
    let again = receive(&client).await;
    assert_eq!(
        again.message_id(),
        Some("h1"),
        "redelivered after the reconnect"
    );
    // Completing the stale delivery is refused; the fresh one completes.
    assert_eq!(
        first.complete().await.unwrap_err().kind(),
        ErrorKind::Transport
    );
    again.complete().await.unwrap();
    again.complete().await.unwrap(); // a second completion does nothing
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].original_message_id, "h1");
    assert_eq!(batch[0].status_code, FeedbackStatus::Success);
    // The state went through a disconnection and back.
    timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_an_unauthorized_error_at_once() {
    let hub = hub().await;
    hub.create_device("dev1").unwrap();
    let cs = DeviceConnectionString::with_key("localhost", "dev1", SasKey::from_bytes(b"wrong"))
        .with_gateway(
            HostAndPort::parse(&format!("localhost:{}", hub.mqtt_addr().port())).unwrap(),
        );
    let started = std::time::Instant::now();
    let err = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn websockets_transport_receives() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap().with_gateway(
        HostAndPort::parse(&format!("localhost:{}", hub.https_addr().port())).unwrap(),
    );
    let client = connect_built(
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .transport(Transport::WebSocket),
    )
    .await;
    hub.enqueue_c2d("dev1", Message::new("over ws").with_message_id("w1"))
        .unwrap();
    let message = receive(&client).await;
    assert_eq!(message.body_str(), Some("over ws"));
    client
        .send_message(Message::new("up").with_message_id("u1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn telemetry_reaches_the_hub_with_every_property() {
    let hub = hub().await;
    let mut telemetry = hub.telemetry();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    let sent = Message::new("{\"temperature\": 21.5}")
        .with_message_id("d2c-1")
        .with_correlation_id("c/1")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_property("k", "v v")
        .with_property("odd/&=%+", "ü");
    timeout(WAIT, client.send_message(sent.clone()))
        .await
        .unwrap()
        .unwrap();
    let received = timeout(WAIT, telemetry.recv()).await.unwrap().unwrap();
    assert_eq!(received.device_id, "dev1");
    assert_eq!(received.module_id, None);
    assert_eq!(received.message, sent);

    let too_big = Message::new(vec![0u8; 256 * 1024]);
    let err = client.send_message(too_big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
}

#[tokio::test]
async fn close_disconnects_and_later_calls_say_closed() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    assert!(hub.is_connected("dev1"));
    client.close().await.unwrap();
    let mut state = client.connection_state();
    timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Closed(_))),
    )
    .await
    .unwrap()
    .unwrap();
    let err = timeout(WAIT, client.receive_message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn sas_renewal_loses_nothing_and_surfaces_no_error() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let client = connect_built(
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .sas_ttl(Duration::from_secs(3))
            .retry_policy(fast_retry()),
    )
    .await;
    let mut state = client.connection_state();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while state.changed().await.is_ok() {
            seen.push(state.borrow_and_update().clone());
        }
        seen
    });
    let total = 150;
    let sender = {
        let hub_messages: Vec<Message> = (0..total)
            .map(|i| Message::new(format!("{i}")).with_message_id(format!("r{i}")))
            .collect();
        async move {
            for message in hub_messages {
                // 10 per second for 15 s; the queue never fills.
                tokio::time::sleep(Duration::from_millis(100)).await;
                hub.enqueue_c2d("dev1", message).unwrap();
            }
            hub
        }
    };
    let receiver = async {
        let mut ids = BTreeSet::new();
        while ids.len() < total {
            let message = timeout(WAIT, client.receive_message())
                .await
                .expect("no stall")
                .unwrap();
            ids.insert(message.message_id().unwrap().to_owned());
        }
        ids
    };
    let (hub, ids) = tokio::join!(sender, receiver);
    assert_eq!(ids.len(), total);
    client.close().await.unwrap();
    drop(hub);
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter()
            .all(|s| matches!(s, ConnectionState::Connected | ConnectionState::Closed(_))),
        "planned renewals are invisible: {seen:?}"
    );
}

#[tokio::test]
async fn reconnects_through_ten_hub_disconnects_without_losing_a_message() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    let mut state = client.connection_state();
    // A watch keeps only the latest state, so quick transitions may merge; every reconnect
    // waits in `Reconnecting` for the backoff, which the watcher sees.
    let watcher = tokio::spawn(async move {
        let mut away = 0;
        while state.changed().await.is_ok() {
            if matches!(
                *state.borrow_and_update(),
                ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }
            ) {
                away += 1;
            }
        }
        away
    });
    let total = 1000;
    let receiver = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut ids = BTreeSet::new();
            while ids.len() < total {
                let message = timeout(WAIT, client.receive_message())
                    .await
                    .expect("no stall")
                    .unwrap();
                ids.insert(message.message_id().unwrap().to_owned());
            }
            ids
        })
    };
    let mut sent = 0;
    let mut kicks = 0;
    while sent < total {
        match hub.enqueue_c2d(
            "dev1",
            Message::new("x").with_message_id(format!("k{sent}")),
        ) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == ErrorKind::QueueFull => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("{e}"),
        }
        if sent % 90 == 45 && kicks < 10 && hub.disconnect_device("dev1") {
            kicks += 1;
        }
    }
    let ids = timeout(Duration::from_secs(60), receiver)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids.len(), total, "every message at least once");
    assert_eq!(kicks, 10);
    client.close().await.unwrap();
    drop(client);
    let away = watcher.await.unwrap();
    assert!(away >= 1, "the state showed the disconnections");
}

#[tokio::test]
async fn manual_completions_across_sas_renewals_succeed_without_duplicates() {
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let client = connect_built(
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .ack_mode(AckMode::Manual)
            .sas_ttl(Duration::from_secs(2))
            .retry_policy(fast_retry()),
    )
    .await;
    let total = 100;
    let sender = {
        let hub_messages: Vec<Message> = (0..total)
            .map(|i| Message::new(format!("{i}")).with_message_id(format!("m{i}")))
            .collect();
        async move {
            for message in hub_messages {
                // 10 per second for 10 s: about six token renewals.
                tokio::time::sleep(Duration::from_millis(100)).await;
                hub.enqueue_c2d("dev1", message).unwrap();
            }
            hub
        }
    };
    let receiver = async {
        let mut ids = BTreeSet::new();
        let mut duplicates = Vec::new();
        let mut failed = Vec::new();
        while ids.len() < total {
            let message = timeout(WAIT, client.receive_message())
                .await
                .expect("no stall")
                .unwrap();
            let id = message.message_id().unwrap().to_owned();
            // The application works on each message for a while before completing it, so
            // some deliveries straddle a planned reconnect.
            tokio::time::sleep(Duration::from_millis(30)).await;
            if let Err(e) = message.complete().await {
                failed.push(format!("{id}: {e}"));
            }
            if !ids.insert(id.clone()) {
                duplicates.push(id);
            }
        }
        (ids, duplicates, failed)
    };
    let (hub, (ids, duplicates, failed)) = tokio::join!(sender, receiver);
    assert_eq!(ids.len(), total);
    assert!(failed.is_empty(), "complete() failed: {failed:?}");
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
    client.close().await.unwrap();
    drop(hub);
}

#[tokio::test]
async fn messages_taken_right_before_close_are_completed_not_delivered_again() {
    // The client writes PUBACKs in batches; `close()` must send the batch before its
    // DISCONNECT, or the hub would deliver these messages again to the next connection.
    const MESSAGES: usize = 40;
    let hub = hub().await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    for i in 0..MESSAGES {
        hub.enqueue_c2d(
            "dev1",
            Message::new("taken")
                .with_message_id(format!("m{i}"))
                .with_ack(Ack::Full),
        )
        .unwrap();
    }
    for _ in 0..MESSAGES {
        receive(&client).await;
    }
    client.close().await.unwrap();
    assert_eq!(completed_ids(&mut feedback, MESSAGES).await.len(), MESSAGES);
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
}

#[tokio::test]
async fn telemetry_is_acknowledged_amid_a_burst_of_cloud_to_device_messages() {
    // The connection task reads the PUBLISHes it has received without going back through
    // rumqttc's event loop; the PUBACKs of telemetry that arrive between them must still
    // resolve their sends, and nothing may break the connection.
    const MESSAGES: usize = 50;
    const SENDS: usize = 20;
    let hub = hub().await;
    let mut telemetry = hub.telemetry();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    let mut state = client.connection_state();
    state.mark_unchanged();
    for i in 0..MESSAGES {
        hub.enqueue_c2d("dev1", Message::new(format!("c2d {i}")))
            .unwrap();
    }
    let sender = client.clone();
    let sends = tokio::spawn(async move {
        for i in 0..SENDS {
            let sent = Message::new(format!("d2c {i}"));
            timeout(WAIT, sender.send_message(sent))
                .await
                .expect("every send acknowledged in time")
                .unwrap();
        }
    });
    for i in 0..MESSAGES {
        assert_eq!(
            receive(&client).await.body_str(),
            Some(format!("c2d {i}").as_str())
        );
    }
    sends.await.unwrap();
    for i in 0..SENDS {
        let received = timeout(WAIT, telemetry.recv()).await.unwrap().unwrap();
        assert_eq!(
            received.message.body_str(),
            Some(format!("d2c {i}").as_str())
        );
    }
    assert!(
        !state.has_changed().unwrap(),
        "the connection changed state"
    );
    assert_eq!(*state.borrow(), ConnectionState::Connected);
}

#[tokio::test]
async fn a_short_keep_alive_keeps_the_connection_through_several_pings() {
    // Every PINGRESP must reach rumqttc's state: a ping left unanswered there fails the next
    // one and breaks the connection. (An idle connection reads its PINGRESPs through rumqttc's
    // own loop; the direct reads are guarded by the telemetry test above.)
    let hub = hub().await;
    let cs = hub.create_device("dev1").unwrap();
    let client = connect_built(
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .keep_alive(Duration::from_secs(1)),
    )
    .await;
    let mut state = client.connection_state();
    state.mark_unchanged();
    // Three and a half keep-alive periods: three pings, each answered before the next.
    let changed = timeout(Duration::from_millis(3_500), state.changed()).await;
    assert!(changed.is_err(), "the state changed: {:?}", *state.borrow());
    hub.enqueue_c2d("dev1", Message::new("still here")).unwrap();
    assert_eq!(receive(&client).await.body_str(), Some("still here"));
}

#[tokio::test]
async fn concurrent_receivers_each_take_distinct_messages_and_every_one_is_completed() {
    // In automatic mode the client acknowledges what `receive_message` took, counted across
    // every caller; four callers at once must still complete each message exactly once.
    const MESSAGES: usize = 200;
    const RECEIVERS: usize = 4;
    let hub = hub().await;
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    let client = connect(&hub, cs, AckMode::Auto).await;
    let (taken_tx, mut taken_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..RECEIVERS {
        let client = client.clone();
        let taken_tx = taken_tx.clone();
        tokio::spawn(async move {
            while let Ok(message) = client.receive_message().await {
                let _ = taken_tx.send(message.message_id().map(str::to_owned));
            }
        });
    }
    let mut taken = BTreeSet::new();
    for i in 0..MESSAGES {
        let message = Message::new("m")
            .with_message_id(format!("m{i}"))
            .with_ack(Ack::Full);
        // IoT Hub's queue holds 50: wait for the receivers to make room.
        while let Err(e) = hub.enqueue_c2d("dev1", message.clone()) {
            assert_eq!(e.kind(), ErrorKind::QueueFull, "{e}");
            let id = timeout(WAIT, taken_rx.recv()).await.unwrap().unwrap();
            assert!(taken.insert(id.unwrap()), "a message taken twice");
        }
    }
    while taken.len() < MESSAGES {
        let id = timeout(WAIT, taken_rx.recv()).await.unwrap().unwrap();
        assert!(taken.insert(id.unwrap()), "a message taken twice");
    }
    assert_eq!(completed_ids(&mut feedback, MESSAGES).await, taken);
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
    client.close().await.unwrap();
}
