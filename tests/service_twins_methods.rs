//! Twins and direct methods from the back end: our `RegistryManager` and raw HTTPS requests
//! against the local hub, with a raw MQTT device (rumqttc's codec over TLS) on the other end.
#![cfg(all(feature = "local-hub", feature = "service"))]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, WAIT, connect_packet, password, tls_config, username};
use iothub::ErrorKind;
use iothub::auth::TokenSource;
use iothub::local_hub::LocalHub;
use iothub::service::{RegistryManager, Twin, TwinPatch};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

type Device = RawClient<TlsStream<TcpStream>>;

async fn setup() -> (LocalHub, RegistryManager) {
    let hub = LocalHub::builder().start().await.unwrap();
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .request_timeout(WAIT)
        .build()
        .unwrap();
    (hub, registry)
}

async fn connect(hub: &LocalHub, device: &str, subscriptions: &[&str]) -> Device {
    let cs = hub
        .device_connection_string(device)
        .unwrap_or_else(|| hub.create_device(device).unwrap());
    let (mut client, _) = RawClient::connect(hub, &cs).await;
    subscribe(&mut client, subscriptions).await;
    client
}

async fn subscribe(client: &mut Device, subscriptions: &[&str]) {
    for filter in subscriptions {
        client
            .send(Packet::Subscribe(Subscribe::new(*filter, QoS::AtLeastOnce)))
            .await;
        loop {
            match client.recv().await {
                Packet::SubAck(_) => break,
                Packet::PingResp => {}
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }
}

async fn next_publish(client: &mut Device) -> Publish {
    loop {
        match client.recv().await {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    client
                        .send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
                        .await;
                }
                return p;
            }
            Packet::PingResp | Packet::PubAck(_) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

async fn publish(client: &mut Device, topic: &str, body: &[u8]) {
    let publish = Publish::new(topic, QoS::AtMostOnce, Bytes::copy_from_slice(body));
    client.send(Packet::Publish(publish)).await;
}

/// Nothing arrives before a PINGREQ round trip.
async fn expect_nothing(client: &mut Device) {
    client.send(Packet::PingReq).await;
    loop {
        match client.recv().await {
            Packet::PingResp => return,
            Packet::Publish(p) => panic!("unexpected PUBLISH {}", p.topic),
            _ => {}
        }
    }
}

/// The request id of a method request topic, after checking the name.
fn method_rid(publish: &Publish, name: &str) -> String {
    let rest = publish
        .topic
        .strip_prefix("$iothub/methods/POST/")
        .expect("a method request");
    let (got, rid) = rest.split_once("/?$rid=").expect("the '/' before ?$rid=");
    assert_eq!(got, name);
    rid.to_owned()
}

const DESIRED: &str = "$iothub/twin/PATCH/properties/desired/#";
const METHODS: &str = "$iothub/methods/POST/#";

#[tokio::test]
async fn a_new_twin_has_the_documented_shape() {
    let (hub, registry) = setup().await;
    hub.create_device("dev1").unwrap();
    let twin = registry.get_twin("dev1").await.unwrap();
    assert_eq!(twin.device_id, "dev1");
    assert_eq!(twin.etag.as_deref(), Some("AAAAAAAAAAE="));
    assert_eq!(twin.version, Some(2));
    assert_eq!(twin.properties.desired_version(), Some(1));
    assert_eq!(twin.properties.reported_version(), Some(1));
    assert!(twin.properties.desired["$metadata"]["$lastUpdated"].is_string());
    let err = registry.get_twin("ghost").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotFound);
}

#[tokio::test]
async fn a_desired_update_reaches_the_subscribed_device_only() {
    let (hub, registry) = setup().await;
    let mut listening = connect(&hub, "dev1", &[DESIRED]).await;
    let mut deaf = connect(&hub, "dev2", &[]).await;

    let patch = TwinPatch::new()
        .tags(json!({"site": "north"}))
        .desired(json!({"rate": 5, "mode": {"fast": true}}));
    let twin = registry.update_twin("dev1", &patch, None).await.unwrap();
    assert_eq!(twin.properties.desired_version(), Some(2));
    assert_eq!(twin.version, Some(3));
    assert_eq!(twin.tags["site"], "north");
    assert_eq!(
        twin.properties.desired["$metadata"]["mode"]["fast"]["$lastUpdatedVersion"],
        2
    );
    let pushed = timeout(WAIT, next_publish(&mut listening)).await.unwrap();
    assert_eq!(
        pushed.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    let body: Value = serde_json::from_slice(&pushed.payload).unwrap();
    assert_eq!(
        body,
        json!({"rate": 5, "mode": {"fast": true}, "$version": 2})
    );

    registry
        .update_twin("dev2", &TwinPatch::new().desired(json!({"x": 1})), None)
        .await
        .unwrap();
    expect_nothing(&mut deaf).await;

    // Null deletes a member; a null `desired` clears them all.
    let twin = registry
        .update_twin(
            "dev1",
            &TwinPatch::new().desired(json!({"rate": null})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(twin.properties.desired_version(), Some(3));
    assert!(!twin.properties.desired.contains_key("rate"));
    let twin = registry
        .update_twin("dev1", &TwinPatch::new().desired(Value::Null), None)
        .await
        .unwrap();
    assert!(twin.properties.desired.keys().all(|k| k.starts_with('$')));
    for version in [3, 4] {
        let pushed = timeout(WAIT, next_publish(&mut listening)).await.unwrap();
        assert_eq!(
            pushed.topic,
            format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
        );
    }
}

#[tokio::test]
async fn reported_properties_are_read_back_and_etags_guard_writes() {
    let (hub, registry) = setup().await;
    let mut device = connect(&hub, "dev1", &["$iothub/twin/res/#"]).await;
    publish(
        &mut device,
        "$iothub/twin/PATCH/properties/reported/?$rid=1",
        br#"{"temp": 20.5}"#,
    )
    .await;
    let answer = next_publish(&mut device).await;
    assert_eq!(answer.topic, "$iothub/twin/res/204/?$rid=1&$version=2");
    let twin = registry.get_twin("dev1").await.unwrap();
    assert_eq!(twin.properties.reported["temp"], 20.5);
    assert_eq!(twin.properties.reported_version(), Some(2));
    assert_eq!(twin.version, Some(3));
    assert!(twin.properties.reported["$metadata"]["temp"]["$lastUpdated"].is_string());

    let etag = twin.etag.clone().unwrap();
    let patch = TwinPatch::new().tags(json!({"a": 1}));
    let updated = registry
        .update_twin("dev1", &patch, Some(&etag))
        .await
        .unwrap();
    assert_ne!(updated.etag.as_deref(), Some(etag.as_str()));
    let err = registry
        .update_twin("dev1", &patch, Some(&etag))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let err = registry
        .replace_twin("dev1", &Twin::new("dev1"), Some(&etag))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
}

#[tokio::test]
async fn a_replacement_deletes_what_it_leaves_out_and_tells_the_device() {
    let (hub, registry) = setup().await;
    let mut device = connect(&hub, "dev1", &[DESIRED]).await;
    let first = Twin::new("dev1")
        .with_tags(json!({"t": 1}).as_object().cloned().unwrap())
        .with_desired(json!({"a": 1, "b": 2}).as_object().cloned().unwrap());
    registry.replace_twin("dev1", &first, None).await.unwrap();
    let _ = next_publish(&mut device).await;
    let second = Twin::new("dev1").with_desired(json!({"b": 3}).as_object().cloned().unwrap());
    let twin = registry.replace_twin("dev1", &second, None).await.unwrap();
    assert!(twin.tags.is_empty());
    assert_eq!(twin.properties.desired["b"], 3);
    assert!(!twin.properties.desired.contains_key("a"));
    let pushed = next_publish(&mut device).await;
    let body: Value = serde_json::from_slice(&pushed.payload).unwrap();
    assert_eq!(body, json!({"a": null, "b": 3, "$version": 3}));
}

#[tokio::test]
async fn a_method_round_trips_through_the_registry_manager() {
    let (hub, registry) = setup().await;
    let mut device = connect(&hub, "dev1", &[METHODS]).await;
    let call = registry.invoke_device_method(
        "dev1",
        "reboot",
        json!({"in": 5}),
        Duration::from_secs(30),
        Duration::ZERO,
    );
    let device_side = async {
        let request = next_publish(&mut device).await;
        let rid = method_rid(&request, "reboot");
        let payload: Value = serde_json::from_slice(&request.payload).unwrap();
        assert_eq!(payload, json!({"in": 5}));
        let topic = format!("$iothub/methods/res/200/?$rid={rid}");
        publish(&mut device, &topic, br#"{"rebooting": true}"#).await;
    };
    let (result, ()) = timeout(WAIT, async { tokio::join!(call, device_side) })
        .await
        .unwrap();
    let result = result.unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(result.payload, json!({"rebooting": true}));
}

#[tokio::test]
async fn a_device_that_connects_within_the_connect_timeout_gets_the_call() {
    let (hub, registry) = setup().await;
    hub.create_device("dev1").unwrap();
    let call = registry.invoke_device_method(
        "dev1",
        "ping",
        Value::Null,
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let device_side = async {
        let mut device = connect(&hub, "dev1", &[METHODS]).await;
        let request = next_publish(&mut device).await;
        assert_eq!(&request.payload[..], b"null");
        let rid = method_rid(&request, "ping");
        publish(
            &mut device,
            &format!("$iothub/methods/res/201/?$rid={rid}"),
            b"",
        )
        .await;
        device
    };
    let (result, _device) = timeout(WAIT, async { tokio::join!(call, device_side) })
        .await
        .unwrap();
    let result = result.unwrap();
    assert_eq!((result.status, result.payload), (201, Value::Null));
}

#[tokio::test]
async fn not_online_and_timeouts_are_typed_errors_with_iot_hubs_bodies() {
    let (hub, registry) = setup().await;
    hub.create_device("dev1").unwrap();
    let err = registry
        .invoke_device_method("dev1", "m", Value::Null, WAIT, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeviceNotOnline);

    let raw = Raw::new(&hub);
    let (status, headers, body) = raw
        .send(
            Method::POST,
            "/twins/dev1/methods",
            None,
            br#"{"methodName":"m","payload":null,"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["iothub-errorcode"], "DeviceNotOnline");
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 404_103);
    assert_eq!(inner["message"], "Timed out waiting for device to connect.");
    assert_eq!(inner["info"], json!({"timeout": "00:00:00"}));

    // Connected and subscribed, but silent: 504101 after the response timeout; the late
    // answer is ignored and the session goes on.
    let mut device = connect(&hub, "dev1", &[METHODS]).await;
    let call = raw.send(
        Method::POST,
        "/twins/dev1/methods",
        None,
        br#"{"methodName":"slow","payload":{},"responseTimeoutInSeconds":1}"#,
    );
    let device_side = async {
        let request = next_publish(&mut device).await;
        method_rid(&request, "slow")
    };
    let ((status, headers, body), rid) = timeout(WAIT, async { tokio::join!(call, device_side) })
        .await
        .unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["iothub-errorcode"], "GatewayTimeout");
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 504_101);
    assert_eq!(
        inner["message"],
        "Timed out waiting for the response from device."
    );
    publish(
        &mut device,
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        b"{}",
    )
    .await;
    expect_nothing(&mut device).await;
    assert!(hub.is_connected("dev1"));

    let err = registry
        .invoke_device_method(
            "dev1",
            "slow",
            Value::Null,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[tokio::test]
async fn module_twins_and_methods() {
    let (hub, registry) = setup().await;
    hub.create_device("dev1").unwrap();
    let cs = hub.create_module("dev1", "m1").unwrap();
    let mut module = RawClient::open(&hub).await;
    module
        .send(connect_packet(
            "dev1/m1",
            &username(&cs),
            &password(&cs),
            60,
        ))
        .await;
    assert!(matches!(module.recv().await, Packet::ConnAck(_)));
    subscribe(&mut module, &[DESIRED, METHODS]).await;

    let twin = registry.get_module_twin("dev1", "m1").await.unwrap();
    assert_eq!(twin.module_id.as_deref(), Some("m1"));
    assert_eq!(twin.properties.desired_version(), Some(1));
    let twin = registry
        .update_module_twin(
            "dev1",
            "m1",
            &TwinPatch::new().desired(json!({"k": 1})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(twin.properties.desired_version(), Some(2));
    let pushed = next_publish(&mut module).await;
    assert_eq!(
        pushed.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    // The device's own twin is another twin.
    assert_eq!(
        registry
            .get_twin("dev1")
            .await
            .unwrap()
            .properties
            .desired_version(),
        Some(1)
    );
    let replaced = registry
        .replace_module_twin("dev1", "m1", &Twin::for_module("dev1", "m1"), None)
        .await
        .unwrap();
    assert_eq!(replaced.properties.desired_version(), Some(3));
    let _ = next_publish(&mut module).await;

    let call = registry.invoke_module_method(
        "dev1",
        "m1",
        "hello",
        json!("hi"),
        Duration::from_secs(30),
        Duration::ZERO,
    );
    let module_side = async {
        let request = next_publish(&mut module).await;
        let rid = method_rid(&request, "hello");
        publish(
            &mut module,
            &format!("$iothub/methods/res/202/?$rid={rid}"),
            b"\"ho\"",
        )
        .await;
    };
    let (result, ()) = timeout(WAIT, async { tokio::join!(call, module_side) })
        .await
        .unwrap();
    assert_eq!(result.unwrap().payload, json!("ho"));

    let err = registry.get_module_twin("dev1", "ghost").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleNotFound);
    // Deleting the module deletes its twin: a new module of that name starts afresh.
    hub.delete_module("dev1", "m1").unwrap();
    hub.create_module("dev1", "m1").unwrap();
    let twin = registry.get_module_twin("dev1", "m1").await.unwrap();
    assert_eq!(twin.properties.desired_version(), Some(1));
}

/// Method, path, If-Match, body; the expected status and `iothub-errorcode`.
type BadCase<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn bad_input_gets_iot_hubs_errors() {
    let (hub, registry) = setup().await;
    hub.create_device("dev1").unwrap();
    let raw = Raw::new(&hub);
    let big = format!(
        r#"{{"properties":{{"desired":{{"a":"{}","b":"{}","c":"{}","d":"{}","e":"{}","f":"{}","g":"{}","h":"{}","i":"{}"}}}}}}"#,
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000)
    );
    let big_tags = format!(
        r#"{{"tags":{{"a":"{}","b":"{}","c":"{}"}}}}"#,
        "x".repeat(4000),
        "x".repeat(4000),
        "x".repeat(4000)
    );
    let cases: Vec<BadCase> = vec![
        (
            Method::PATCH,
            "/twins/dev1",
            None,
            b"{nope".to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PATCH,
            "/twins/dev1",
            None,
            b"[1]".to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PATCH,
            "/twins/dev1",
            None,
            br#"{"tags":{"$x":1}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PATCH,
            "/twins/dev1",
            None,
            br#"{"properties":{"desired":{"a.b":1}}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PATCH,
            "/twins/dev1",
            None,
            br#"{"properties":{"desired":5}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PATCH,
            "/twins/dev1",
            None,
            big.into_bytes(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PUT,
            "/twins/dev1",
            None,
            big_tags.into_bytes(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PATCH,
            "/twins/dev1",
            Some("\"AAAAAAAAAAk=\""),
            b"{}".to_vec(),
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
        ),
        (
            Method::PATCH,
            "/twins/ghost",
            None,
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
            "DeviceNotFound",
        ),
        (
            Method::GET,
            "/twins/dev1/modules/ghost",
            None,
            Vec::new(),
            StatusCode::NOT_FOUND,
            "ModuleNotFound",
        ),
        (
            Method::POST,
            "/twins/dev1/methods",
            None,
            br#"{"methodName":"a/b"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::POST,
            "/twins/dev1/methods",
            None,
            br#"{"methodName":""}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::POST,
            "/twins/dev1/methods",
            None,
            br#"{"payload":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::POST,
            "/twins/dev1/methods",
            None,
            br#"{"methodName":"m","responseTimeoutInSeconds":301}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::POST,
            "/twins/dev1/methods",
            None,
            br#"{"methodName":"m","connectTimeoutInSeconds":301}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::POST,
            "/twins/ghost/methods",
            None,
            br#"{"methodName":"m"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "DeviceNotFound",
        ),
    ];
    for (method, path, if_match, body, status, code) in cases {
        let (got, headers, _) = raw.send(method.clone(), path, if_match, &body).await;
        assert_eq!(
            got,
            status,
            "{method} {path} {}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        assert_eq!(headers["iothub-errorcode"], code, "{method} {path}");
    }
    // Nothing was written.
    let twin = registry.get_twin("dev1").await.unwrap();
    assert_eq!(twin.etag.as_deref(), Some("AAAAAAAAAAE="));
    assert!(twin.tags.is_empty());

    // Our client refuses what the hub would refuse, before sending.
    let err = registry
        .invoke_device_method("dev1", "a/b", Value::Null, WAIT, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);
    let err = registry
        .update_twin("dev1", &TwinPatch::new().desired(json!({"$bad": 1})), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);
}

/// Raw requests with a service token.
struct Raw {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Raw {
    fn new(hub: &LocalHub) -> Self {
        Raw {
            client: reqwest::Client::builder()
                .use_preconfigured_tls((*tls_config(hub.ca_pem())).clone())
                .timeout(WAIT)
                .build()
                .unwrap(),
            base: format!("https://localhost:{}", hub.https_addr().port()),
            auth: TokenSource::for_service(&hub.service_connection_string())
                .token()
                .unwrap()
                .token
                .to_string(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .client
            .request(
                method,
                format!("{}{path}?api-version=2021-04-12", self.base),
            )
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json; charset=utf-8");
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        let response = request.body(body.to_vec()).send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}
