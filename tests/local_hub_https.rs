//! The local hub's HTTPS port over real TLS: the registry REST API with reqwest, and MQTT over
//! WebSockets at `/$iothub/websocket`.
#![cfg(feature = "local-hub")]

mod common;

use std::time::Duration;

use common::{WAIT, connect_packet, password, tls_config, tls_stream, username};
use futures_util::{SinkExt, StreamExt};
use iothub::Message;
use iothub::auth::{ServiceConnectionString, TokenSource};
use iothub::local_hub::LocalHub;
use reqwest::StatusCode;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, PubAck, Subscribe};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

struct Registry {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Registry {
    fn new(hub: &LocalHub, cs: &ServiceConnectionString) -> Self {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls_config(hub.ca_pem())).clone())
            .timeout(WAIT)
            .build()
            .unwrap();
        Registry {
            client,
            base: format!("https://localhost:{}", hub.https_addr().port()),
            auth: TokenSource::for_service(cs)
                .token()
                .unwrap()
                .token
                .to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version=2021-04-12", self.base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("Authorization", &self.auth);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, body)
    }
}

/// Node's parse of the legacy error body: `Message` split on `;`, code after `ErrorCode:`
/// (`azure-iot-sdk-node`, `common/transport/http/src/http.ts`, `Http.parseErrorBody`).
fn node_error_code(body: &Value) -> String {
    let message = body["Message"].as_str().expect("a legacy error body");
    let (code, text) = message.split_once(';').expect("code;text");
    assert!(!text.is_empty());
    code.strip_prefix("ErrorCode:")
        .expect("ErrorCode: prefix")
        .to_owned()
}

#[tokio::test]
async fn registry_create_get_list_update_delete_over_tls() {
    let hub = LocalHub::builder().start().await.unwrap();
    let registry = Registry::new(&hub, &hub.service_connection_string());
    use reqwest::Method;

    // Node's create body: empty keys, which the hub fills in (`azure-iot-sdk-node`,
    // `service/src/registry.ts`, `_normalizeAuthentication`).
    let node_body = json!({"deviceId":"dev2","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}});
    let (status, headers, device) = registry
        .send(Method::PUT, "/devices/dev2", None, Some(node_body.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "create is 200, never 201");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(key.len(), 44);
    let etag = device["etag"].as_str().unwrap().to_owned();

    let (status, headers, body) = registry
        .send(Method::PUT, "/devices/dev2", None, Some(node_body))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers["iothub-errorcode"], "DeviceAlreadyExists");
    assert_eq!(node_error_code(&body), "DeviceAlreadyExists");

    let (status, _, got) = registry
        .send(Method::GET, "/devices/dev2", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["deviceId"], "dev2");
    assert_eq!(got["connectionState"], "Disconnected");
    assert_eq!(
        got["authentication"]["symmetricKey"]["primaryKey"],
        key.as_str()
    );

    hub.create_device("dev1").unwrap();
    let (status, _, list) = registry.send(Method::GET, "/devices", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dev1", "dev2"]);

    let update = json!({"deviceId":"dev2","status":"disabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":key,"secondaryKey":key}}});
    let (status, headers, body) = registry
        .send(
            Method::PUT,
            "/devices/dev2",
            Some("\"not-the-etag\""),
            Some(update.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(headers["iothub-errorcode"], "PreconditionFailed");
    assert_eq!(node_error_code(&body), "PreconditionFailed");
    let (status, _, updated) = registry
        .send(
            Method::PUT,
            "/devices/dev2",
            Some(&format!("\"{etag}\"")),
            Some(update),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["status"], "disabled");
    assert_ne!(updated["etag"], etag.as_str());

    let (status, _, _) = registry
        .send(
            Method::DELETE,
            "/devices/dev2",
            Some(&format!("\"{etag}\"")),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "the old etag no longer matches"
    );
    let (status, _, body) = registry
        .send(Method::DELETE, "/devices/dev2", Some("\"*\""), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, headers, body) = registry
        .send(Method::GET, "/devices/dev2", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["iothub-errorcode"], "DeviceNotFound");
    assert_eq!(node_error_code(&body), "DeviceNotFound");
    let (status, _, _) = registry
        .send(Method::DELETE, "/devices/dev1", None, None)
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "no If-Match deletes unconditionally"
    );
}

#[tokio::test]
async fn purge_statistics_and_twin_over_tls() {
    use reqwest::Method;
    let hub = LocalHub::builder().start().await.unwrap();
    let registry = Registry::new(&hub, &hub.service_connection_string());
    hub.create_device("dev1").unwrap();
    for _ in 0..2 {
        hub.enqueue_c2d("dev1", Message::new("x")).unwrap();
    }
    let (status, _, body) = registry
        .send(Method::DELETE, "/devices/dev1/commands", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"totalMessagesPurged": 2, "deviceId": "dev1", "moduleId": null})
    );
    let (status, _, body) = registry
        .send(Method::GET, "/statistics/devices", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalDeviceCount"], 1);
    let (status, _, twin) = registry.send(Method::GET, "/twins/dev1", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(twin["deviceId"], "dev1");
}

#[tokio::test]
async fn a_read_only_policy_cannot_write_and_a_bad_token_is_unauthorized() {
    use reqwest::Method;
    let hub = LocalHub::builder().start().await.unwrap();
    let reader = Registry::new(&hub, &hub.policy_connection_string("registryRead").unwrap());
    hub.create_device("dev1").unwrap();
    let (status, _, _) = reader.send(Method::GET, "/devices/dev1", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = reader
        .send(
            Method::PUT,
            "/devices/dev9",
            None,
            Some(json!({"deviceId":"dev9"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["iothub-errorcode"], "IotHubUnauthorizedAccess");
    assert_eq!(node_error_code(&body), "IotHubUnauthorizedAccess");
    let (status, _, _) = reader
        .send(Method::DELETE, "/devices/dev1", Some("\"*\""), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut forged = Registry::new(&hub, &hub.service_connection_string());
    forged.auth = forged.auth.replace("sig=", "sig=AAAA");
    let (status, _, body) = forged.send(Method::GET, "/devices/dev1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !body.to_string().contains(&forged.auth),
        "the token is never echoed"
    );
}

#[tokio::test]
async fn many_concurrent_https_connections_are_served() {
    // msrest (azure-iot-hub for Python) opens several connections at once; a hub serving one
    // at a time deadlocks.
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let registry = Registry::new(&hub, &hub.service_connection_string());
        tasks.push(tokio::spawn(async move {
            registry
                .send(reqwest::Method::GET, "/devices/dev1", None, None)
                .await
                .0
        }));
    }
    for task in tasks {
        assert_eq!(timeout(WAIT, task).await.unwrap().unwrap(), StatusCode::OK);
    }
}

/// An MQTT byte stream carried in WebSocket binary frames, for the raw client.
struct WsBytes<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    pending: bytes::Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsBytes<S> {
    async fn write_all(&mut self, data: &[u8]) {
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                data.to_vec().into(),
            ))
            .await
            .unwrap();
    }

    async fn read(&mut self) -> Option<bytes::Bytes> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        loop {
            match self.ws.next().await? {
                Ok(tokio_tungstenite::tungstenite::Message::Binary(data)) => return Some(data),
                Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

#[tokio::test]
async fn mqtt_over_websockets_connects_and_receives_c2d() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let hub = LocalHub::builder()
        .feedback_flush_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let mut feedback = hub.feedback();
    let cs = hub.create_device("dev1").unwrap();
    let tls = tls_stream(&hub, hub.https_addr().port()).await;
    let mut request = format!(
        "wss://localhost:{}/$iothub/websocket",
        hub.https_addr().port()
    )
    .into_client_request()
    .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
    let mut ws = WsBytes {
        ws,
        pending: bytes::Bytes::new(),
    };

    let mut buf = bytes::BytesMut::new();
    let send = async |ws: &mut WsBytes<_>, packet: Packet| {
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        ws.write_all(&out).await;
    };
    send(
        &mut ws,
        connect_packet("dev1", &username(&cs), &password(&cs), 60),
    )
    .await;
    let recv = async |ws: &mut WsBytes<_>, buf: &mut bytes::BytesMut| -> Packet {
        timeout(WAIT, async {
            loop {
                match Packet::read(buf, 1 << 20) {
                    Ok(p) => return p,
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                buf.extend_from_slice(&ws.read().await.expect("open"));
            }
        })
        .await
        .unwrap()
    };
    match recv(&mut ws, &mut buf).await {
        Packet::ConnAck(ack) => assert_eq!(ack.code, ConnectReturnCode::Success),
        other => panic!("{other:?}"),
    }
    send(
        &mut ws,
        Packet::Subscribe(Subscribe::new(
            "devices/dev1/messages/devicebound/#",
            QoS::AtLeastOnce,
        )),
    )
    .await;
    assert!(matches!(recv(&mut ws, &mut buf).await, Packet::SubAck(_)));
    hub.enqueue_c2d(
        "dev1",
        Message::new("over ws")
            .with_message_id("ws-1")
            .with_ack(iothub::Ack::Positive),
    )
    .unwrap();
    match recv(&mut ws, &mut buf).await {
        Packet::Publish(p) => {
            assert_eq!(&p.payload[..], b"over ws");
            assert!(
                p.topic
                    .starts_with("devices/dev1/messages/devicebound/%24.mid=ws-1&")
            );
            send(&mut ws, Packet::PubAck(PubAck::new(p.pkid))).await;
        }
        other => panic!("{other:?}"),
    }
    // The PUBACK carried over WebSockets completed the message.
    let batch = timeout(WAIT, feedback.recv()).await.unwrap().unwrap();
    assert_eq!(batch[0].original_message_id, "ws-1");
    assert_eq!(
        batch[0].status_code,
        iothub::protocol::FeedbackStatus::Success
    );
}
