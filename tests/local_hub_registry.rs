//! The local hub's identity registry over its real HTTPS listener: the bodies the official
//! SDKs send, the statuses they insist on, IoT Hub's error bodies and policy authorization.
//!
//! Requests go through reqwest trusting the hub's CA, authenticated with policy SAS tokens.
//! Errors are parsed as Node's azure-iothub parses them (`azure-iot-sdk-node`,
//! `common/transport/http/src/http.ts`, `Http.parseErrorBody`: `Message` split on `;`, the
//! code after `ErrorCode:`).
#![cfg(feature = "local-hub")]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{WAIT, tls_config};
use iothub::Message;
use iothub::auth::{DeviceCredential, ResourceUri, SasKey, TokenSource};
use iothub::local_hub::LocalHub;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const JSON_UTF8: &str = "application/json; charset=utf-8";
const OWNER_KEY: &[u8] = b"the owner policy key of this test hub";

struct Hub {
    hub: LocalHub,
    client: reqwest::Client,
    base: String,
    /// An `iothubowner` token.
    owner: String,
    /// A `registryRead` token.
    reader: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn policy_token(key: &SasKey, policy: &str, expiry: u64) -> String {
    key.token(&ResourceUri::service("localhost"), Some(policy), expiry)
        .to_string()
}

async fn hub() -> Hub {
    let hub = LocalHub::builder()
        .policy_key(SasKey::from_bytes(OWNER_KEY))
        .start()
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls_config(hub.ca_pem())).clone())
        .timeout(WAIT)
        .build()
        .unwrap();
    let reader_cs = hub.policy_connection_string("registryRead").unwrap();
    Hub {
        base: format!("https://localhost:{}", hub.https_addr().port()),
        owner: policy_token(
            &SasKey::from_bytes(OWNER_KEY),
            "iothubowner",
            now_secs() + 3600,
        ),
        reader: TokenSource::for_service(&reader_cs)
            .token()
            .unwrap()
            .token
            .to_string(),
        client,
        hub,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        let content_type = self.headers.get("content-type").unwrap();
        assert_eq!(content_type, JSON_UTF8);
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The error code and text as Node reads them; checks the header agrees and the body has
    /// IoT Hub's `ExceptionMessage`.
    fn error_code(&self) -> (String, String) {
        let body = self.json();
        let message = body["Message"].as_str().unwrap();
        let parts: Vec<&str> = message.split(';').collect();
        assert_eq!(parts.len(), 2, "{message}");
        let code_parts: Vec<&str> = parts[0].split(':').collect();
        assert_eq!(code_parts[0], "ErrorCode");
        assert!(!code_parts[1].is_empty() && !parts[1].is_empty());
        let exception = body["ExceptionMessage"].as_str().unwrap();
        assert!(exception.starts_with("Tracking ID:"), "{exception}");
        assert!(exception.contains("-TimeStamp:"), "{exception}");
        assert_eq!(self.headers.get("iothub-errorcode").unwrap(), code_parts[1]);
        (code_parts[1].to_owned(), parts[1].to_owned())
    }
}

async fn call(
    hub: &Hub,
    method: Method,
    uri: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut request = hub.client.request(method, format!("{}{uri}", hub.base));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", JSON_UTF8)
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// The primary key the hub stored for a device.
fn stored_primary_key(hub: &Hub, device_id: &str) -> Option<String> {
    let cs = hub.hub.device_connection_string(device_id)?;
    match cs.credential() {
        DeviceCredential::SharedAccessKey { key, .. } => Some(key.to_base64().to_owned()),
        other => panic!("a key credential, not {other:?}"),
    }
}

async fn device_count(hub: &Hub) -> u64 {
    let reply = call(
        hub,
        Method::GET,
        "/statistics/devices",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    reply.json()["totalDeviceCount"].as_u64().unwrap()
}

/// Node's create body (`Registry.create({deviceId, status})`): empty keys, which the hub
/// fills in (`azure-iot-sdk-node`, `service/src/registry.ts`, `_normalizeAuthentication`).
const NODE_CREATE_DEV2: &str = r#"{"deviceId":"dev2","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#;

/// Python's create body (`IoTHubRegistryManager.create_device_with_sas`, via msrest).
fn python_create_body(id: &str, primary: &str, secondary: &str) -> String {
    format!(
        r#"{{"deviceId": "{id}", "status": "enabled", "authentication": {{"symmetricKey": {{"primaryKey": "{primary}", "secondaryKey": "{secondary}"}}, "type": "sas"}}, "capabilities": {{"iotEdge": false}}}}"#
    )
}

async fn create(hub: &Hub, id: &str) -> Value {
    let body = format!(
        r#"{{"deviceId":"{id}","authentication":{{"type":"sas","symmetricKey":{{"primaryKey":"","secondaryKey":""}}}}}}"#
    );
    let uri = format!("/devices/{id}?api-version=2021-04-12");
    let reply = call(hub, Method::PUT, &uri, Some(&hub.owner), &[], Some(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

#[tokio::test]
async fn node_create_with_empty_keys_gets_generated_keys() {
    let hub = hub().await;
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev2?api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        Some(NODE_CREATE_DEV2),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let device = reply.json();
    assert_eq!(device["deviceId"], "dev2");
    assert_eq!(device["status"], "enabled");
    assert_eq!(device["connectionState"], "Disconnected");
    assert_eq!(device["cloudToDeviceMessageCount"], 0);
    assert_eq!(device["authentication"]["type"], "sas");
    assert_eq!(
        device["authentication"]["x509Thumbprint"],
        json!({"primaryThumbprint": null, "secondaryThumbprint": null})
    );
    assert_eq!(device["capabilities"]["iotEdge"], false);
    assert!(device["statusReason"].is_null());
    assert!(!device["etag"].as_str().unwrap().is_empty());
    assert!(!device["generationId"].as_str().unwrap().is_empty());
    assert!(device["lastActivityTime"].as_str().unwrap().ends_with('Z'));
    let primary = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let secondary = device["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(primary.len(), 44);
    assert_eq!(secondary.len(), 44);
    assert_ne!(primary, secondary);
    assert_eq!(stored_primary_key(&hub, "dev2").as_deref(), Some(primary));
}

#[tokio::test]
async fn create_with_absent_keys_and_no_authentication_gets_generated_keys() {
    let hub = hub().await;
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/bare",
        Some(&hub.owner),
        &[],
        Some(r#"{"deviceId":"bare"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let device = reply.json();
    assert_eq!(device["status"], "enabled");
    let key = &device["authentication"]["symmetricKey"];
    assert_eq!(key["primaryKey"].as_str().unwrap().len(), 44);
    assert_eq!(key["secondaryKey"].as_str().unwrap().len(), 44);
}

#[tokio::test]
async fn python_create_keeps_the_given_keys() {
    let hub = hub().await;
    let primary = SasKey::from_bytes(&[1u8; 32]).to_base64().to_owned();
    let secondary = SasKey::from_bytes(&[2u8; 32]).to_base64().to_owned();
    let body = python_create_body("dev1", &primary, &secondary);
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1?api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        Some(&body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let device = reply.json();
    assert_eq!(
        device["authentication"]["symmetricKey"]["primaryKey"],
        primary
    );
    assert_eq!(
        device["authentication"]["symmetricKey"]["secondaryKey"],
        secondary
    );
    assert_eq!(device["capabilities"]["iotEdge"], false);
    assert!(device["deviceScope"].is_null());
}

#[tokio::test]
async fn a_body_copied_from_a_get_is_a_valid_update() {
    let hub = hub().await;
    let created = create(&hub, "dev1").await;
    let mut body = created.clone();
    body["status"] = json!("disabled");
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1",
        Some(&hub.owner),
        &[("If-Match", "\"*\"")],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let updated = reply.json();
    assert_eq!(updated["status"], "disabled");
    // The keys written back are kept; the read-only fields are the hub's.
    assert_eq!(
        updated["authentication"]["symmetricKey"],
        created["authentication"]["symmetricKey"]
    );
    assert_ne!(updated["etag"], created["etag"]);
}

#[tokio::test]
async fn create_twice_is_device_already_exists() {
    let hub = hub().await;
    create(&hub, "dev1").await;
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        Some(NODE_CREATE_DEV2.replace("dev2", "dev1").as_str()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let (code, text) = reply.error_code();
    assert_eq!(code, "DeviceAlreadyExists");
    assert!(text.contains("dev1"));
}

#[tokio::test]
async fn get_and_list_return_devices() {
    let hub = hub().await;
    let created = create(&hub, "dev1").await;
    create(&hub, "dev2").await;
    let reply = call(
        &hub,
        Method::GET,
        "/devices/dev1?api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), created);

    let reply = call(
        &hub,
        Method::GET,
        "/devices?api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let ids: Vec<Value> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("dev1"), json!("dev2")]);

    let reply = call(
        &hub,
        Method::GET,
        "/devices?top=1&api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.json().as_array().unwrap().len(), 1);

    let reply = call(
        &hub,
        Method::GET,
        "/devices?top=-1",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code().0, "ArgumentInvalid");
}

#[tokio::test]
async fn update_checks_the_etag() {
    let hub = hub().await;
    let created = create(&hub, "dev1").await;
    let etag = created["etag"].as_str().unwrap().to_owned();
    let update = r#"{"deviceId":"dev1","status":"disabled","statusReason":"maintenance"}"#;

    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1",
        Some(&hub.owner),
        &[("If-Match", "\"bm90LXRoZS1ldGFn\"")],
        Some(update),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(reply.error_code().0, "PreconditionFailed");

    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1",
        Some(&hub.owner),
        &[("If-Match", "\"*\"")],
        Some(update),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let updated = reply.json();
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["statusReason"], "maintenance");
    assert_eq!(updated["generationId"], created["generationId"]);
    let new_etag = updated["etag"].as_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);

    // The old etag no longer matches; the new one does, quoted and weak.
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1",
        Some(&hub.owner),
        &[("If-Match", &format!("\"{etag}\""))],
        Some(update),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev1",
        Some(&hub.owner),
        &[("If-Match", &format!("W/\"{new_etag}\""))],
        Some(r#"{"deviceId":"dev1"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "enabled");
}

#[tokio::test]
async fn update_of_an_unknown_device_is_device_not_found() {
    let hub = hub().await;
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/ghost",
        Some(&hub.owner),
        &[("If-Match", "\"*\"")],
        Some(r#"{"deviceId":"ghost"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code().0, "DeviceNotFound");
}

#[tokio::test]
async fn delete_then_get_is_device_not_found() {
    let hub = hub().await;
    let created = create(&hub, "dev1").await;
    let reply = call(
        &hub,
        Method::DELETE,
        "/devices/dev1",
        Some(&hub.owner),
        &[("If-Match", "\"bm90LXRoZS1ldGFn\"")],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(reply.error_code().0, "PreconditionFailed");
    // The refused delete left the device as it was.
    let still = call(
        &hub,
        Method::GET,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(still.json()["etag"], created["etag"]);

    let reply = call(
        &hub,
        Method::DELETE,
        "/devices/dev1?api-version=2021-04-12",
        Some(&hub.owner),
        &[("If-Match", "\"*\"")],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());

    let reply = call(
        &hub,
        Method::GET,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let (code, text) = reply.error_code();
    assert_eq!(code, "DeviceNotFound");
    assert!(text.contains("dev1"));

    let reply = call(
        &hub,
        Method::DELETE,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code().0, "DeviceNotFound");
}

#[tokio::test]
async fn delete_without_if_match_is_unconditional() {
    let hub = hub().await;
    create(&hub, "dev1").await;
    let reply = call(
        &hub,
        Method::DELETE,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(hub.hub.device_connection_string("dev1").is_none());
}

#[tokio::test]
async fn purge_reports_the_queued_messages() {
    let hub = hub().await;
    create(&hub, "dev1").await;
    hub.hub.enqueue_c2d("dev1", Message::new("x")).unwrap();
    hub.hub.enqueue_c2d("dev1", Message::new("x")).unwrap();
    let device = call(
        &hub,
        Method::GET,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(device["cloudToDeviceMessageCount"], 2);

    let reply = call(
        &hub,
        Method::DELETE,
        "/devices/dev1/commands?api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"totalMessagesPurged": 2, "deviceId": "dev1", "moduleId": null})
    );
    assert_eq!(hub.hub.c2d_queue_len("dev1"), Some(0));

    let reply = call(
        &hub,
        Method::DELETE,
        "/devices/ghost/commands",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code().0, "DeviceNotFound");
}

#[tokio::test]
async fn statistics_count_enabled_and_disabled_devices() {
    let hub = hub().await;
    create(&hub, "dev1").await;
    create(&hub, "dev2").await;
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev3",
        Some(&hub.owner),
        &[],
        Some(r#"{"deviceId":"dev3","status":"disabled"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = call(
        &hub,
        Method::GET,
        "/statistics/devices?api-version=2021-04-12",
        Some(&hub.reader),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1})
    );
}

#[tokio::test]
async fn twin_of_a_new_device() {
    let hub = hub().await;
    create(&hub, "dev1").await;
    let reply = call(
        &hub,
        Method::GET,
        "/twins/dev1?api-version=2021-04-12",
        Some(&hub.reader),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let twin = reply.json();
    assert_eq!(twin["deviceId"], "dev1");
    assert_eq!(twin["etag"], "AAAAAAAAAAE=");
    assert_eq!(twin["version"], 2);
    assert_eq!(twin["status"], "enabled");
    assert_eq!(twin["connectionState"], "Disconnected");
    assert_eq!(twin["authenticationType"], "sas");
    assert_eq!(twin["cloudToDeviceMessageCount"], 0);
    for side in ["desired", "reported"] {
        let properties = &twin["properties"][side];
        assert_eq!(properties["$version"], 1);
        assert!(properties["$metadata"]["$lastUpdated"].is_string());
    }

    let reply = call(
        &hub,
        Method::GET,
        "/twins/ghost",
        Some(&hub.reader),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code().0, "DeviceNotFound");
}

#[tokio::test]
async fn registry_read_policy_can_read_but_not_write() {
    let hub = hub().await;
    create(&hub, "dev1").await;
    for uri in [
        "/devices/dev1",
        "/devices",
        "/statistics/devices",
        "/twins/dev1",
    ] {
        let reply = call(&hub, Method::GET, uri, Some(&hub.reader), &[], None).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
    }
    let writes = [
        (Method::PUT, "/devices/dev9", Some(NODE_CREATE_DEV2)),
        (Method::DELETE, "/devices/dev1", None),
        (Method::DELETE, "/devices/dev1/commands", None),
    ];
    for (method, uri, body) in writes {
        let reply = call(&hub, method, uri, Some(&hub.reader), &[], body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(reply.error_code().0, "IotHubUnauthorizedAccess");
    }
    assert!(hub.hub.device_connection_string("dev1").is_some());
    assert!(hub.hub.device_connection_string("dev9").is_none());
}

#[tokio::test]
async fn missing_or_malformed_token_is_unauthorized() {
    let hub = hub().await;
    for auth in [
        None,
        Some("Bearer abc"),
        Some("SharedAccessSignature sr=localhost"),
    ] {
        let reply = call(&hub, Method::GET, "/devices", auth, &[], None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error_code().0, "IotHubUnauthorizedAccess");
    }
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/dev2",
        None,
        &[],
        Some(NODE_CREATE_DEV2),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(hub.hub.device_connection_string("dev2").is_none());
}

#[tokio::test]
async fn expired_or_forged_token_is_unauthorized_and_not_echoed() {
    let hub = hub().await;
    let expired = policy_token(
        &SasKey::from_bytes(OWNER_KEY),
        "iothubowner",
        now_secs() - 60,
    );
    let forged = policy_token(
        &SasKey::from_bytes(b"not the owner key"),
        "iothubowner",
        now_secs() + 3600,
    );
    for token in [&expired, &forged] {
        let reply = call(&hub, Method::GET, "/devices", Some(token), &[], None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error_code().0, "IotHubUnauthorizedAccess");
        let body = String::from_utf8(reply.body.clone()).unwrap();
        let sig = token
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(!body.contains(sig));
    }
}

#[tokio::test]
async fn bad_bodies_are_argument_invalid() {
    let hub = hub().await;
    let secret = "not base64 at all!";
    let bodies = [
        python_create_body("dev1", secret, ""),
        python_create_body("other", "", ""),
        r#"{"deviceId":"dev1","status":"sleeping"}"#.to_owned(),
        r#"{"deviceId":"dev1","authentication":{"type":"selfSigned"}}"#.to_owned(),
        r#"{"deviceId":"dev1","capabilities":{"iotEdge":"yes"}}"#.to_owned(),
        "not json".to_owned(),
        String::new(),
    ];
    for body in &bodies {
        let reply = call(
            &hub,
            Method::PUT,
            "/devices/dev1",
            Some(&hub.owner),
            &[],
            Some(body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let (code, text) = reply.error_code();
        assert_eq!(code, "ArgumentInvalid");
        assert!(!text.contains(secret));
    }
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/bad%2Fid",
        Some(&hub.owner),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(device_count(&hub).await, 0);
}

#[tokio::test]
async fn edge_device_gets_a_scope() {
    let hub = hub().await;
    let reply = call(
        &hub,
        Method::PUT,
        "/devices/edge1",
        Some(&hub.owner),
        &[],
        Some(r#"{"deviceId":"edge1","capabilities":{"iotEdge":true}}"#),
    )
    .await;
    let device = reply.json();
    assert_eq!(device["capabilities"]["iotEdge"], true);
    let scope = format!(
        "ms-azure-iot-edge://edge1-{}",
        device["generationId"].as_str().unwrap()
    );
    assert_eq!(device["deviceScope"], scope.as_str());
}

#[tokio::test]
async fn unknown_routes_get_a_legacy_error() {
    let hub = hub().await;
    let reply = call(
        &hub,
        Method::GET,
        "/nothing/here?api-version=2021-04-12",
        Some(&hub.owner),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code().0, "NotFound");

    let reply = call(
        &hub,
        Method::POST,
        "/devices/dev1",
        Some(&hub.owner),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error_code().0, "MethodNotAllowed");
}
