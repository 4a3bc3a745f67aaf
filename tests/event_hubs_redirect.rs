//! A consumer that dials the hub's own AMQP port (the service endpoint) and attaches a
//! receiver on `/messages/events/…` is redirected to the Event Hubs-compatible endpoint with
//! `amqp:link:redirect`, as IoT Hub does (MicrosoftDocs `iot-hub-amqp-support.md`; the az CLI
//! `monitor-events` and the SDK samples follow it). Driven by fe2o3-amqp with SASL PLAIN.
#![cfg(feature = "local-hub")]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{WAIT, tls_stream};
use fe2o3_amqp::link::{LinkStateError, ReceiverAttachError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{Error as AmqpErrorInfo, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Session};
use iothub::auth::{ResourceUri, SasKey};
use iothub::local_hub::LocalHub;
use tokio::time::timeout;

const POLICY_KEY: &[u8] = b"the iothubowner key of the redirect tests";

async fn with_timeout<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"))
}

/// The error a refused receiver attach ends with (attach, then an immediate detach).
async fn refusal(result: Result<Receiver, ReceiverAttachError>) -> AmqpErrorInfo {
    match result {
        Err(ReceiverAttachError::RemoteClosedWithError(error)) => error,
        Err(other) => panic!("refused without an AMQP error: {other:?}"),
        Ok(mut receiver) => {
            match with_timeout("the DETACH", receiver.recv::<Body<Value>>()).await {
                Err(RecvError::LinkStateError(LinkStateError::RemoteClosedWithError(e)))
                | Err(RecvError::LinkStateError(LinkStateError::RemoteDetachedWithError(e))) => e,
                other => panic!("the link ends with an error, got {other:?}"),
            }
        }
    }
}

fn info_text(error: &AmqpErrorInfo, key: &str) -> Value {
    error
        .info
        .as_ref()
        .and_then(|info| info.get(&Symbol::from(key)))
        .cloned()
        .unwrap_or_else(|| panic!("{key} in the redirect info"))
}

#[tokio::test]
async fn event_receivers_on_the_hub_host_are_redirected_to_the_event_hubs_endpoint() {
    let hub = LocalHub::builder()
        .policy_key(SasKey::from_bytes(POLICY_KEY))
        .start()
        .await
        .unwrap();
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    // The CLI's form: SASL PLAIN `{policy}@sas.root.{hub}` with an IoT Hub token on the host.
    let token = SasKey::from_bytes(POLICY_KEY)
        .token(
            &ResourceUri::service("localhost"),
            Some("iothubowner"),
            expiry,
        )
        .to_string();
    let mut connection = with_timeout(
        "OPEN with PLAIN",
        Connection::builder()
            .container_id("monitor-events")
            .hostname("localhost")
            .scheme("amqp")
            .sasl_profile(SaslProfile::Plain {
                username: "iothubowner@sas.root.localhost".into(),
                password: token,
            })
            .open_with_stream(tls_stream(&hub, hub.amqp_addr().port()).await),
    )
    .await
    .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let port = hub.event_hubs_addr().port();
    let eh = hub.event_hub_name().to_owned();
    for (i, (source, suffix)) in [
        (
            "amqps://localhost/messages/events/ConsumerGroups/$Default/Partitions/0",
            "/ConsumerGroups/$Default/Partitions/0",
        ),
        ("/messages/events/$management", "/$management"),
    ]
    .into_iter()
    .enumerate()
    {
        let attach = Receiver::builder()
            .name(format!("events-{i}"))
            .source(source)
            .target(format!("receiver-{i}"))
            .attach(&mut session);
        let error = refusal(with_timeout("the answering ATTACH", attach).await).await;
        assert_eq!(
            error.condition,
            ErrorCondition::LinkError(LinkError::Redirect),
            "{source}: {error:?}"
        );
        assert_eq!(
            info_text(&error, "hostname"),
            Value::String("localhost".into())
        );
        assert_eq!(
            info_text(&error, "network-host"),
            Value::String("localhost".into())
        );
        assert_eq!(info_text(&error, "port"), Value::Int(i32::from(port)));
        assert_eq!(
            info_text(&error, "address"),
            Value::String(format!("amqps://localhost:{port}/{eh}{suffix}"))
        );
    }
    // The connection's other links still work: a C2D sender attaches.
    let sender = fe2o3_amqp::Sender::builder()
        .name("c2d")
        .source("tests")
        .target("/messages/devicebound")
        .attach(&mut session);
    with_timeout("the C2D sender attaches", sender)
        .await
        .expect("the session survives the redirects");
}
