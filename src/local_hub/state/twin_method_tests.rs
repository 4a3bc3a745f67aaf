//! Twins and method calls in the hub state, on a paused Tokio clock and without a network: the
//! outbox of a registered session stands in for the device.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use serde_json::{Value, json};

use super::*;
use crate::error::ErrorKind;
use crate::local_hub::feedback_queue::FeedbackLimits;
use crate::protocol::{MethodResult, TwinCollection};

fn hub() -> HubState {
    HubState::new(
        HubSettings {
            host_name: "localhost".to_owned(),
            c2d: C2dLimits::default(),
            feedback_flush_interval: Duration::from_secs(15),
            feedback: FeedbackLimits::default(),
            telemetry: crate::local_hub::telemetry_log::LogSettings::default(),
        },
        Vec::new(),
    )
}

fn register(hub: &HubState, device_id: &str) {
    let spec = DeviceSpec {
        device_id: device_id.to_owned(),
        status: DeviceStatus::Enabled,
        status_reason: None,
        primary_key: None,
        secondary_key: None,
        iot_edge: false,
        authentication: Default::default(),
    };
    hub.put_device(spec, None).unwrap();
}

/// A connected session of `device` subscribed to `features`.
fn session(hub: &HubState, device: &str, features: &[Feature]) -> SessionTicket {
    let identity = Identity::device(device);
    let ticket = hub.open_session(&identity, true).unwrap();
    for feature in features {
        hub.set_feature_subscription(&identity, ticket.id, *feature, Some(QoS::AtMostOnce));
    }
    ticket
}

fn object(value: Value) -> TwinCollection {
    value.as_object().cloned().unwrap()
}

fn patch(desired: Value) -> TwinWrite {
    TwinWrite::Patch {
        tags: None,
        desired: Some(desired),
    }
}

/// The `$rid` of the next method request in the outbox.
async fn next_request(ticket: &mut SessionTicket) -> (String, Bytes) {
    match ticket.outbox.recv().await.unwrap() {
        Outbound::Publish { topic, payload, .. } => {
            let rid = topic.split_once("?$rid=").unwrap().1.to_owned();
            (rid, payload)
        }
        other => panic!("expected a method request, got {other:?}"),
    }
}

#[test]
fn versions_etags_and_metadata_follow_each_write() {
    let hub = hub();
    register(&hub, "d");
    let d = Identity::device("d");
    let twin = hub.twin(&d).unwrap();
    assert_eq!((twin.etag.as_str(), twin.version), ("AAAAAAAAAAE=", 2));

    assert_eq!(hub.update_reported(&d, object(json!({"r": 1}))).unwrap(), 2);
    let twin = hub.twin(&d).unwrap();
    assert_eq!(twin.version, 3);
    assert_eq!(twin.etag, "AAAAAAAAAAE=", "reported writes leave the etag");

    let twin = hub.write_twin(&d, patch(json!({"a": 1})), None).unwrap();
    assert_eq!(twin.desired["$version"], 2);
    assert_eq!(twin.version, 4);
    assert_eq!(twin.etag, "AAAAAAAAAAI=");
    assert_eq!(twin.desired["$metadata"]["a"]["$lastUpdatedVersion"], 2);
    assert_eq!(twin.desired["$metadata"]["$lastUpdatedVersion"], 2);

    // A stale etag is refused and changes nothing; the current one (quoted) is accepted.
    let err = hub
        .write_twin(&d, patch(json!({"a": 2})), Some("\"AAAAAAAAAAE=\""))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let twin = hub
        .write_twin(&d, patch(json!({"a": 2})), Some("\"AAAAAAAAAAI=\""))
        .unwrap();
    assert_eq!(twin.desired["a"], 2);
    assert_eq!(twin.desired["$version"], 3);
    // `$version` and `$metadata` read back from a twin are ignored in a write.
    let twin = hub
        .write_twin(
            &d,
            patch(json!({"b": 1, "$version": 99, "$metadata": {}})),
            None,
        )
        .unwrap();
    assert_eq!(twin.desired["$version"], 4);
}

#[test]
fn a_recreated_identity_gets_a_new_twin() {
    let hub = hub();
    register(&hub, "d");
    let d = Identity::device("d");
    hub.write_twin(&d, patch(json!({"a": 1})), None).unwrap();
    hub.delete_device("d", None).unwrap();
    assert_eq!(hub.twin(&d).unwrap_err().kind(), ErrorKind::DeviceNotFound);
    register(&hub, "d");
    let twin = hub.twin(&d).unwrap();
    assert_eq!(twin.desired["$version"], 1);
    assert!(!twin.desired.contains_key("a"));
}

#[tokio::test(start_paused = true)]
async fn desired_patches_go_to_subscribed_sessions_in_version_order() {
    let hub = hub();
    register(&hub, "d");
    let d = Identity::device("d");
    let mut ticket = session(&hub, "d", &[Feature::DesiredPatches]);
    for n in 0..3 {
        hub.write_twin(&d, patch(json!({ "n": n })), None).unwrap();
    }
    for version in 2..5 {
        match ticket.outbox.recv().await.unwrap() {
            Outbound::Publish { topic, payload, .. } => {
                assert!(topic.ends_with(&format!("?$version={version}")));
                let body: Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(body["$version"], version);
            }
            other => panic!("{other:?}"),
        }
    }
    // A tags-only write is not a desired change.
    let write = TwinWrite::Patch {
        tags: Some(json!({"t": 1})),
        desired: None,
    };
    hub.write_twin(&d, write, None).unwrap();
    // A new clean session forgets the subscription.
    drop(ticket);
    let mut fresh = session(&hub, "d", &[]);
    hub.write_twin(&d, patch(json!({"n": 9})), None).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), fresh.outbox.recv())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_a_subscriber_within_its_connect_timeout() {
    let hub = hub();
    register(&hub, "d");
    let d = Identity::device("d");
    let one = json!(1);
    let call = hub.invoke_method(
        &d,
        "m",
        &one,
        Duration::from_secs(30),
        Duration::from_secs(10),
    );
    let device = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut ticket = session(&hub, "d", &[Feature::MethodRequests]);
        let (rid, payload) = next_request(&mut ticket).await;
        assert_eq!(&payload[..], b"1");
        assert!(hub.answer_method(&d, &rid, MethodResult::new(200, json!("ok"))));
        ticket
    };
    let (result, _ticket) = tokio::join!(call, device);
    assert_eq!(result.unwrap(), MethodResult::new(200, json!("ok")));

    // Nobody subscribes within the connect timeout.
    register(&hub, "e");
    let started = tokio::time::Instant::now();
    let result = hub
        .invoke_method(
            &Identity::device("e"),
            "m",
            &Value::Null,
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
        .await;
    assert!(matches!(
        result,
        Err(MethodFailure::NotOnline {
            disconnected: false
        })
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_times_out_and_a_late_answer_is_ignored() {
    let hub = hub();
    register(&hub, "d");
    register(&hub, "other");
    let d = Identity::device("d");
    let mut ticket = session(&hub, "d", &[Feature::MethodRequests]);
    let call = hub.invoke_method(
        &d,
        "m",
        &Value::Null,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    let device = async {
        let (rid, _) = next_request(&mut ticket).await;
        // Another identity cannot answer this call.
        assert!(!hub.answer_method(
            &Identity::device("other"),
            &rid,
            MethodResult::new(200, Value::Null)
        ));
        rid
    };
    let started = tokio::time::Instant::now();
    let (result, rid) = tokio::join!(call, device);
    assert!(matches!(result, Err(MethodFailure::Timeout)));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(!hub.answer_method(&d, &rid, MethodResult::new(200, Value::Null)));
    assert_eq!(hub.lock().methods.len(), 0, "nothing is left behind");
}

#[tokio::test(start_paused = true)]
async fn closing_the_session_fails_its_calls_at_once() {
    let hub = hub();
    register(&hub, "d");
    let d = Identity::device("d");
    let mut ticket = session(&hub, "d", &[Feature::MethodRequests]);
    let call = hub.invoke_method(
        &d,
        "m",
        &Value::Null,
        Duration::from_secs(300),
        Duration::ZERO,
    );
    let device = async {
        let _ = next_request(&mut ticket).await;
        hub.close_session(&d, ticket.id, []);
    };
    let started = tokio::time::Instant::now();
    let (result, ()) = tokio::join!(call, device);
    assert!(matches!(
        result,
        Err(MethodFailure::NotOnline { disconnected: true })
    ));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(hub.lock().methods.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_persistent_session_keeps_its_method_subscription() {
    let hub = hub();
    register(&hub, "d");
    let d = Identity::device("d");
    let first = hub.open_session(&d, false).unwrap();
    hub.set_feature_subscription(
        &d,
        first.id,
        Feature::MethodRequests,
        Some(QoS::AtLeastOnce),
    );
    hub.close_session(&d, first.id, []);
    let call = hub.invoke_method(
        &d,
        "m",
        &Value::Null,
        Duration::from_secs(30),
        Duration::from_secs(10),
    );
    let device = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Clean session 0 again: no SUBSCRIBE needed.
        let mut resumed = hub.open_session(&d, false).unwrap();
        assert!(resumed.session_present);
        let (rid, _) = next_request(&mut resumed).await;
        assert!(hub.answer_method(&d, &rid, MethodResult::new(204, Value::Null)));
    };
    let (result, ()) = tokio::join!(call, device);
    assert_eq!(result.unwrap().status, 204);
}
