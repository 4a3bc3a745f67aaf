//! Behaviour of the hub state that needs no network: time on a paused Tokio clock, identities
//! and their authorization, and the push path.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::auth::{ResourceUri, SasKey};
use crate::error::ErrorKind;
use crate::local_hub::feedback_queue::FeedbackLimits;
use crate::message::{Ack, Message};
use crate::protocol::FeedbackStatus;

fn hub() -> HubState {
    hub_with(C2dLimits::default())
}

fn hub_with(c2d: C2dLimits) -> HubState {
    HubState::new(
        HubSettings {
            host_name: "localhost".to_owned(),
            c2d,
            feedback_flush_interval: Duration::from_secs(15),
            feedback: FeedbackLimits::default(),
            telemetry: crate::local_hub::telemetry_log::LogSettings::default(),
        },
        Vec::new(),
    )
}

fn register(hub: &HubState, device_id: &str) -> DeviceRecord {
    let spec = DeviceSpec {
        device_id: device_id.to_owned(),
        status: DeviceStatus::Enabled,
        status_reason: None,
        primary_key: None,
        secondary_key: None,
        iot_edge: false,
        authentication: Default::default(),
    };
    hub.put_device(spec, None).unwrap()
}

fn register_module(hub: &HubState, device_id: &str, module_id: &str) -> ModuleRecord {
    hub.put_module(
        ModuleSpec {
            device_id: device_id.to_owned(),
            module_id: module_id.to_owned(),
            primary_key: None,
            secondary_key: None,
            managed_by: None,
        },
        None,
    )
    .unwrap()
}

fn token(hub: &HubState, key: &SasKey, resource: &ResourceUri) -> SasToken {
    let now = hub
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    key.token(resource, None, now + 3600)
}

/// On paused Tokio time: a message whose expiry passes gives `Expired` feedback once the
/// flush interval has passed, with no real wait.
#[tokio::test(start_paused = true)]
async fn an_expired_message_gives_expired_feedback_on_paused_time() {
    let hub = hub();
    register(&hub, "dev1");
    let expiry = hub.clock.now() + Duration::from_secs(30);
    let message = Message::new("late")
        .with_message_id("m1")
        .with_ack(Ack::Full)
        .with_expiry(expiry);
    hub.enqueue_c2d("dev1", message).unwrap();
    hub.sweep();
    assert_eq!(hub.c2d_queue_len("dev1"), Some(1));
    assert!(hub.take_feedback().is_none());

    tokio::time::advance(Duration::from_secs(31)).await;
    hub.sweep();
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0), "the message expired");
    assert!(
        hub.take_feedback().is_none(),
        "not before the flush interval"
    );

    tokio::time::advance(Duration::from_secs(15)).await;
    hub.sweep();
    let batch = hub
        .take_feedback()
        .expect("a batch after the flush interval");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].original_message_id, "m1");
    assert_eq!(batch[0].status_code, FeedbackStatus::Expired);
    assert_eq!(batch[0].device_id, "dev1");
}

/// On paused Tokio time: a delivery that is not completed within the lock duration returns
/// to the queue, and the session is told through its outbox to pull it again.
#[tokio::test(start_paused = true)]
async fn a_lapsed_delivery_lock_returns_the_message_through_the_outbox() {
    let hub = hub();
    register(&hub, "dev1");
    let identity = Identity::device("dev1");
    let mut ticket = hub.open_session(&identity, true).unwrap();
    hub.set_c2d_subscribed("dev1", ticket.id, true);
    assert_eq!(ticket.outbox.recv().await, Some(Outbound::C2dReady));
    hub.enqueue_c2d("dev1", Message::new("slow").with_message_id("s1"))
        .unwrap();
    assert_eq!(ticket.outbox.recv().await, Some(Outbound::C2dReady));
    let (_, message) = hub.next_c2d("dev1", ticket.id).unwrap();
    assert_eq!(message.message_id(), Some("s1"));
    assert!(hub.next_c2d("dev1", ticket.id).is_none(), "locked");

    tokio::time::advance(Duration::from_secs(59)).await;
    hub.sweep();
    assert!(hub.next_c2d("dev1", ticket.id).is_none(), "still locked");

    tokio::time::advance(Duration::from_secs(2)).await;
    hub.sweep();
    assert_eq!(ticket.outbox.recv().await, Some(Outbound::C2dReady));
    let (second, again) = hub.next_c2d("dev1", ticket.id).unwrap();
    assert_eq!(again.message_id(), Some("s1"));
    assert_eq!(hub.c2d_queue_len("dev1"), Some(1));
    hub.complete_c2d("dev1", second);
    assert_eq!(hub.c2d_queue_len("dev1"), Some(0));
}

/// On paused Tokio time: a feedback batch whose receiver neither accepts nor releases it is
/// ready again once its lock lapses.
#[tokio::test(start_paused = true)]
async fn a_lapsed_feedback_lock_makes_the_batch_ready_again() {
    let hub = hub();
    register(&hub, "dev1");
    hub.enqueue_c2d(
        "dev1",
        Message::new("x").with_message_id("f1").with_ack(Ack::Full),
    )
    .unwrap();
    hub.purge_c2d("dev1").unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    hub.sweep();
    let delivery = hub
        .lock_feedback()
        .expect("a batch after the flush interval");
    assert_eq!(delivery.records[0].status_code, FeedbackStatus::Purged);
    assert!(hub.lock_feedback().is_none(), "the batch is locked");

    tokio::time::advance(Duration::from_secs(61)).await;
    hub.sweep();
    let again = hub
        .lock_feedback()
        .expect("ready again after the lock lapsed");
    assert_eq!(again.records, delivery.records);
    hub.complete_feedback(delivery.lock);
    hub.complete_feedback(again.lock);
    assert!(hub.lock_feedback().is_none());
}

#[test]
fn a_module_token_signs_only_for_its_module_and_a_device_token_only_for_its_device() {
    let hub = hub();
    let device = register(&hub, "devA");
    let module = register_module(&hub, "devA", "m1");
    let device_token = token(
        &hub,
        &device.primary_key,
        &ResourceUri::device("localhost", "devA"),
    );
    let module_token = token(
        &hub,
        &module.primary_key,
        &ResourceUri::module("localhost", "devA", "m1"),
    );
    let secondary = token(
        &hub,
        &module.secondary_key,
        &ResourceUri::module("localhost", "devA", "m1"),
    );
    assert!(hub.authorize_device(&device_token, "devA", None).is_ok());
    assert!(
        hub.authorize_device(&module_token, "devA", Some("m1"))
            .is_ok()
    );
    assert!(hub.authorize_device(&secondary, "devA", Some("m1")).is_ok());
    assert!(
        hub.authorize_device(&device_token, "devA", Some("m1"))
            .is_err()
    );
    assert!(hub.authorize_device(&module_token, "devA", None).is_err());
    assert!(
        hub.authorize_device(&device_token, "devA", Some("m2"))
            .is_err(),
        "unregistered"
    );
}

#[test]
fn modules_live_under_their_device_with_their_own_keys_and_etags() {
    let hub = hub();
    let device = register(&hub, "devA");
    let err = hub
        .put_module(
            ModuleSpec {
                device_id: "ghost".to_owned(),
                module_id: "m1".to_owned(),
                primary_key: None,
                secondary_key: None,
                managed_by: None,
            },
            None,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotFound);
    let m1 = register_module(&hub, "devA", "m1");
    let m2 = register_module(&hub, "devA", "m2");
    assert_ne!(m1.primary_key.to_base64(), device.primary_key.to_base64());
    assert_ne!(m1.primary_key.to_base64(), m2.primary_key.to_base64());
    assert_ne!(m1.etag, m2.etag);
    let again = hub.put_module(
        ModuleSpec {
            device_id: "devA".to_owned(),
            module_id: "m1".to_owned(),
            primary_key: None,
            secondary_key: None,
            managed_by: None,
        },
        None,
    );
    assert_eq!(again.unwrap_err().kind(), ErrorKind::ModuleAlreadyExists);
    let ids: Vec<String> = hub
        .list_modules("devA")
        .unwrap()
        .into_iter()
        .map(|m| m.module_id)
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_eq!(
        hub.delete_module("devA", "m1", Some("\"stale\""))
            .unwrap_err()
            .kind(),
        ErrorKind::PreconditionFailed
    );
    hub.delete_module("devA", "m1", Some(&format!("\"{}\"", m1.etag)))
        .unwrap();
    assert!(hub.get_module("devA", "m1").is_none());
    assert_eq!(
        hub.delete_module("devA", "m1", None).unwrap_err().kind(),
        ErrorKind::ModuleNotFound
    );
    hub.delete_device("devA", None).unwrap();
    assert!(
        hub.get_module("devA", "m2").is_none(),
        "deleted with its device"
    );
    assert_eq!(
        hub.list_modules("devA").unwrap_err().kind(),
        ErrorKind::DeviceNotFound
    );
}

#[tokio::test]
async fn a_module_session_neither_replaces_nor_is_replaced_by_its_devices() {
    let hub = hub();
    register(&hub, "devA");
    register_module(&hub, "devA", "m1");
    let device = Identity::device("devA");
    let module = Identity::module("devA", "m1");
    let device_session = hub.open_session(&device, true).unwrap();
    let mut module_session = hub.open_session(&module, true).unwrap();
    assert!(hub.identity_connected(&device));
    assert!(hub.identity_connected(&module));
    assert!(
        hub.get_module("devA", "m1").unwrap().connected,
        "the record shows the connection"
    );

    // Pushes reach the addressed identity only.
    let item = Outbound::Publish {
        topic: "$iothub/methods/POST/reboot/?$rid=1".to_owned(),
        payload: bytes::Bytes::from_static(b"{}"),
        qos: rumqttc::mqttbytes::QoS::AtMostOnce,
    };
    assert!(hub.push(&module, item.clone()));
    assert_eq!(module_session.outbox.recv().await, Some(item.clone()));
    assert!(!hub.push(&Identity::module("devA", "m2"), item));

    // The module never gets C2D, even when it claims the device's subscription.
    hub.set_c2d_subscribed("devA", module_session.id, true);
    hub.enqueue_c2d("devA", Message::new("for the device"))
        .unwrap();
    assert!(hub.next_c2d("devA", module_session.id).is_none());

    // A newer module connection replaces the older one only.
    let _newer = hub.open_session(&module, true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), module_session.kick.notified())
        .await
        .expect("the older module session is kicked");
    hub.close_session(&module, module_session.id, []);
    assert!(hub.identity_connected(&module));
    assert!(hub.identity_connected(&device));

    // Deleting the device closes both.
    hub.delete_device("devA", None).unwrap();
    tokio::time::timeout(Duration::from_secs(1), device_session.kick.notified())
        .await
        .expect("the device session is kicked");
    assert!(!hub.identity_connected(&module));
}
