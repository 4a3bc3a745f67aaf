//! Bad input on the local hub's Event Hubs-compatible endpoint, driven by fe2o3-amqp's client
//! over plain TCP (the emulator listener) with SASL ANONYMOUS and a CBS put-token, as the
//! Event Hubs SDKs do. Each refusal must leave the connection's other links working. Every
//! wait is bounded.
#![cfg(feature = "local-hub")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::WAIT;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{LinkStateError, ReceiverAttachError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message as AmqpMessage, MessageId, Outcome, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub::Message;
use iothub::auth::{ResourceUri, SasKey};
use iothub::device::DeviceClient;
use iothub::local_hub::{LocalHub, TelemetryRetention};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use tokio::time::timeout;

/// Waits for 10,000 sends on a loaded machine.
const BULK_WAIT: Duration = Duration::from_secs(300);
const SELECTOR: &str = "apache.org:selector-filter:string";

async fn with_timeout<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"))
}

async fn hub() -> LocalHub {
    LocalHub::builder()
        .consumer_group("readers")
        .start()
        .await
        .expect("the local hub starts")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A value of `key=` in a `;`-separated connection string.
fn field<'a>(cs: &'a str, key: &str) -> &'a str {
    cs.split(';')
        .find_map(|part| part.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} in the connection string"))
}

/// An Event Hubs SAS token as Python and Node write it: `sr` the percent-encoded entity URL,
/// signed with the key text's bytes.
fn event_hubs_token(hub: &LocalHub, policy: &str) -> String {
    let cs = hub
        .event_hubs_emulator_connection_string_for(policy)
        .expect("the policy exists");
    let key = field(&cs, "SharedAccessKey");
    let sr = format!(
        "sb://localhost:{}/{}",
        hub.event_hubs_emulator_addr().port(),
        hub.event_hub_name()
    )
    .replace(':', "%3A")
    .replace('/', "%2F");
    SasKey::from_bytes(key.as_bytes())
        .token(
            &ResourceUri::from_encoded(sr),
            Some(policy),
            now_secs() + 3600,
        )
        .to_string()
}

/// A session on an ANONYMOUS connection to the emulator listener.
async fn session(hub: &LocalHub) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(hub.event_hubs_emulator_addr())
        .await
        .unwrap();
    let mut connection = with_timeout(
        "OPEN",
        Connection::builder()
            .container_id("bad-input-tests")
            .hostname("localhost")
            .scheme("amqp")
            .sasl_profile(SaslProfile::Anonymous)
            .open_with_stream(tcp),
    )
    .await
    .expect("the endpoint opens the connection");
    let session = with_timeout("BEGIN", Session::begin(&mut connection))
        .await
        .unwrap();
    (connection, session)
}

/// The `$cbs` link pair of a session (one per connection, as Python and Node keep it).
struct Cbs {
    requests: Sender,
    responses: Receiver,
}

async fn cbs(session: &mut SessionHandle<()>) -> Cbs {
    let requests = Sender::builder()
        .name("cbs-sender")
        .source("cbs")
        .target("$cbs")
        .attach(session)
        .await
        .unwrap();
    let responses = Receiver::builder()
        .name("cbs-receiver")
        .source("$cbs")
        .target("cbs")
        .attach(session)
        .await
        .unwrap();
    Cbs {
        requests,
        responses,
    }
}

/// A put-token of `token` for audience `name`; returns the status code.
async fn put_token(cbs: &mut Cbs, name: &str, token: &str) -> SimpleValue {
    let Cbs {
        requests,
        responses,
    } = cbs;
    let request = AmqpMessage::builder()
        .properties(Properties {
            message_id: Some(MessageId::String(name.into())),
            reply_to: Some("cbs".into()),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", SimpleValue::String("put-token".into()))
                .insert(
                    "type",
                    SimpleValue::String("servicebus.windows.net:sastoken".into()),
                )
                .insert("name", SimpleValue::String(name.into()))
                .build(),
        )
        .value(token.to_owned())
        .build();
    let outcome = with_timeout("the put-token disposition", requests.send(request))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let delivery = with_timeout("the put-token response", responses.recv::<Body<Value>>())
        .await
        .unwrap();
    responses.accept(&delivery).await.unwrap();
    let app = delivery.into_message().application_properties.unwrap().0;
    app.get("status-code").cloned().unwrap()
}

/// An ANONYMOUS session authorized with the `iothubowner` token.
async fn authorized(hub: &LocalHub) -> (ConnectionHandle<()>, SessionHandle<()>, Cbs) {
    let (connection, mut session) = session(hub).await;
    let mut cbs = cbs(&mut session).await;
    let audience = format!("sb://localhost/{}", hub.event_hub_name());
    let status = put_token(&mut cbs, &audience, &event_hubs_token(hub, "iothubowner")).await;
    assert_eq!(status, SimpleValue::Int(202));
    (connection, session, cbs)
}

fn address(hub: &LocalHub, group: &str, partition: &str) -> String {
    format!(
        "{}/ConsumerGroups/{group}/Partitions/{partition}",
        hub.event_hub_name()
    )
}

/// A selector filter as Python writes it (symbol descriptor, string value).
fn selector(expression: Value) -> OrderedMap<Symbol, Value> {
    let mut filters = OrderedMap::new();
    filters.insert(
        Symbol::from(SELECTOR),
        Value::Described(Box::new(Described {
            descriptor: Descriptor::Name(Symbol::from(SELECTOR)),
            value: expression,
        })),
    );
    filters
}

/// Attaches a receiver; `epoch` goes in `com.microsoft:epoch`, `filter` in the source.
async fn attach(
    session: &mut SessionHandle<()>,
    name: &str,
    address: &str,
    filter: Option<OrderedMap<Symbol, Value>>,
    epoch: Option<i64>,
) -> Result<Receiver, ReceiverAttachError> {
    let mut source = Source::builder().address(address.to_owned());
    if let Some(filter) = filter {
        source = source.filter(filter);
    }
    let mut builder = Receiver::builder()
        .name(name)
        .source(source.build())
        .target(format!("receiver-link-{name}"));
    if let Some(epoch) = epoch {
        let mut properties = OrderedMap::new();
        properties.insert(Symbol::from("com.microsoft:epoch"), Value::Long(epoch));
        builder = builder.properties(properties);
    }
    with_timeout("the answering ATTACH", builder.attach(session)).await
}

/// The condition a refused attach carries: the endpoint answers the ATTACH, then detaches at
/// once with the error (as Event Hubs does), which fe2o3 reports either way.
async fn refusal(result: Result<Receiver, ReceiverAttachError>) -> ErrorCondition {
    match result {
        Err(ReceiverAttachError::RemoteClosedWithError(error)) => error.condition,
        Err(other) => panic!("refused without an AMQP error: {other:?}"),
        Ok(mut receiver) => ended_with(&mut receiver).await,
    }
}

/// A working link on the same session still delivers: attaches partition 0 from the start
/// and expects the first event's body.
async fn still_reads(session: &mut SessionHandle<()>, hub: &LocalHub, name: &str, body: &[u8]) {
    let mut receiver = attach(
        session,
        name,
        &address(hub, "$Default", &PARTITION_OF_DEVICE.to_string()),
        Some(selector(Value::String(
            "amqp.annotation.x-opt-offset > '-1'".into(),
        ))),
        None,
    )
    .await
    .expect("a good receiver attaches after a refusal");
    let delivery = with_timeout("an event", receiver.recv::<Body<Value>>())
        .await
        .expect("the event arrives");
    assert_eq!(data_body(delivery.body()), body);
    receiver.close().await.unwrap();
}

/// The bytes of a Data body.
fn data_body(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(data) => data.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("a Data body, got {other:?}"),
    }
}

/// `device1` hashes to partition 2 of 4.
const DEVICE: &str = "device1";
const PARTITION_OF_DEVICE: u32 = 2;

async fn device(hub: &LocalHub, id: &str) -> DeviceClient {
    let cs = hub.create_device(id).unwrap();
    with_timeout(
        "the device connects",
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .expect("connects")
}

/// Sends one event from `device1` and waits until the hub logged it.
async fn one_event(hub: &LocalHub) -> DeviceClient {
    let mut logged = hub.telemetry();
    let client = device(hub, DEVICE).await;
    client.send_message(Message::new("first")).await.unwrap();
    let event = with_timeout("the event is logged", logged.recv())
        .await
        .unwrap();
    assert_eq!(event.partition, PARTITION_OF_DEVICE);
    client
}

#[tokio::test]
async fn unknown_partition_group_and_node_are_not_found() {
    let hub = hub().await;
    let _device = one_event(&hub).await;
    let (_connection, mut session, _cbs) = authorized(&hub).await;
    for (name, address) in [
        ("partition-4", address(&hub, "$Default", "4")),
        ("partition-x", address(&hub, "$Default", "x")),
        ("group", address(&hub, "nobody", "0")),
        (
            "hub",
            "another-hub/ConsumerGroups/$Default/Partitions/0".into(),
        ),
    ] {
        let condition = refusal(attach(&mut session, name, &address, None, None).await).await;
        assert_eq!(
            condition,
            ErrorCondition::AmqpError(AmqpError::NotFound),
            "{address}"
        );
        still_reads(&mut session, &hub, &format!("after-{name}"), b"first").await;
    }
}

#[tokio::test]
async fn malformed_filters_are_refused_as_argument_errors() {
    let hub = hub().await;
    let _device = one_event(&hub).await;
    let (_connection, mut session, _cbs) = authorized(&hub).await;
    let argument_error = ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error"));
    for (i, expression) in [
        Value::String("amqp.annotation.x-opt-offset < '5'".into()),
        Value::String("amqp.annotation.x-opt-colour > 'red'".into()),
        Value::String("amqp.annotation.x-opt-sequence-number > 'many'".into()),
        Value::Long(5),
    ]
    .into_iter()
    .enumerate()
    {
        let condition = refusal(
            attach(
                &mut session,
                &format!("bad-filter-{i}"),
                &address(&hub, "$Default", "2"),
                Some(selector(expression.clone())),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(condition, argument_error, "{expression:?}");
        still_reads(&mut session, &hub, &format!("after-filter-{i}"), b"first").await;
    }
}

#[tokio::test]
async fn tokens_without_service_connect_are_refused_then_links_too() {
    let hub = hub().await;
    let _device = one_event(&hub).await;
    let device_key = field(
        &hub.device_connection_string(DEVICE).unwrap().to_string(),
        "SharedAccessKey",
    )
    .to_owned();
    let device_token = SasKey::from_base64(&device_key)
        .unwrap()
        .token(
            &ResourceUri::device("localhost", DEVICE),
            None,
            now_secs() + 3600,
        )
        .to_string();
    for (name, token) in [
        ("registryRead", event_hubs_token(&hub, "registryRead")),
        ("device", device_token),
    ] {
        let (_connection, mut session) = session(&hub).await;
        let mut cbs = cbs(&mut session).await;
        let audience = format!("sb://localhost/{}", hub.event_hub_name());
        let status = put_token(&mut cbs, &audience, &token).await;
        assert_eq!(status, SimpleValue::Int(401), "{name}");
        let condition = refusal(
            attach(
                &mut session,
                &format!("reader-{name}"),
                &address(&hub, "$Default", "2"),
                None,
                None,
            )
            .await,
        )
        .await;
        assert_eq!(
            condition,
            ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
            "{name}"
        );
        // The same session recovers with a good token.
        let status = put_token(
            &mut cbs,
            &format!("{audience}/ConsumerGroups/$Default"),
            &event_hubs_token(&hub, "service"),
        )
        .await;
        assert_eq!(status, SimpleValue::Int(202));
        still_reads(&mut session, &hub, &format!("after-{name}"), b"first").await;
    }
}

/// The condition a receiver's link ends with.
async fn ended_with(receiver: &mut Receiver) -> ErrorCondition {
    match with_timeout("the DETACH", receiver.recv::<Body<Value>>()).await {
        Err(RecvError::LinkStateError(LinkStateError::RemoteClosedWithError(e)))
        | Err(RecvError::LinkStateError(LinkStateError::RemoteDetachedWithError(e))) => e.condition,
        other => panic!("the link ends with an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_higher_epoch_steals_the_link_and_a_lower_one_is_refused() {
    let hub = hub().await;
    let _device = one_event(&hub).await;
    let stolen = ErrorCondition::LinkError(LinkError::Stolen);
    let (_c1, mut first_session, _cbs1) = authorized(&hub).await;
    let (_c2, mut second_session, _cbs2) = authorized(&hub).await;
    let partition = address(&hub, "$Default", "2");
    let mut first = attach(&mut first_session, "epoch-1", &partition, None, Some(1))
        .await
        .unwrap();
    first.recv::<Body<Value>>().await.unwrap();
    let mut second = attach(&mut second_session, "epoch-5", &partition, None, Some(5))
        .await
        .unwrap();
    assert_eq!(ended_with(&mut first).await, stolen);
    let lower = attach(&mut first_session, "epoch-3", &partition, None, Some(3)).await;
    assert_eq!(refusal(lower).await, stolen);
    // The owner keeps reading; the refused session still works on another group.
    let delivery = with_timeout("the owner's event", second.recv::<Body<Value>>())
        .await
        .unwrap();
    second.accept(&delivery).await.unwrap();
    let mut other_group = attach(
        &mut first_session,
        "readers-group",
        &address(&hub, "readers", "2"),
        None,
        Some(3),
    )
    .await
    .expect("another consumer group is not owned");
    with_timeout(
        "an event on the other group",
        other_group.recv::<Body<Value>>(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reader_without_credit_does_not_stall_the_hub() {
    let retention = TelemetryRetention {
        max_events: 1_000,
        ..TelemetryRetention::default()
    };
    let hub = LocalHub::builder()
        .telemetry_retention(retention)
        .start()
        .await
        .unwrap();
    let (_c1, mut stalled_session, _cbs1) = authorized(&hub).await;
    let stalled = Receiver::builder()
        .name("no-credit")
        .source(address(&hub, "$Default", "2"))
        .target("no-credit")
        .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
        .attach(&mut stalled_session);
    let stalled = with_timeout("the stalled reader attaches", stalled)
        .await
        .unwrap();

    let busy = device(&hub, DEVICE).await;
    let sends = async {
        for chunk in 0..100 {
            let batch = (0..100).map(|i| busy.send_message(Message::new(format!("{chunk}-{i}"))));
            for result in futures_util::future::join_all(batch).await {
                result.expect("the hub takes the event");
            }
        }
    };
    timeout(BULK_WAIT, sends)
        .await
        .expect("10,000 sends within the bulk wait");
    // 10,000 appended, the newest 1,000 kept.
    assert_eq!(
        hub.telemetry_retained(PARTITION_OF_DEVICE),
        retention.max_events
    );

    // Another reader on another partition gets a new event promptly.
    let mut logged = hub.telemetry();
    let quiet = device(&hub, "myDevice").await;
    quiet.send_message(Message::new("elsewhere")).await.unwrap();
    let partition = with_timeout("the event is logged", logged.recv())
        .await
        .unwrap()
        .partition;
    assert_ne!(partition, PARTITION_OF_DEVICE);
    let (_c2, mut session, _cbs2) = authorized(&hub).await;
    let mut reader = attach(
        &mut session,
        "other-partition",
        &address(&hub, "$Default", &partition.to_string()),
        None,
        None,
    )
    .await
    .unwrap();
    let delivery = with_timeout("the other partition's event", reader.recv::<Body<Value>>())
        .await
        .unwrap();
    assert_eq!(data_body(delivery.body()), b"elsewhere");
    drop(stalled);
}
