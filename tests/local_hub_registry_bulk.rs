//! The registry beyond single-device CRUD, with our `RegistryManager` and raw HTTPS: listing
//! with `top` and a trailing slash, bulk create/update/delete with IoT Hub's per-device
//! results, edge scopes, IoT Hub's id rules, statistics, and the TLS chain the hub serves.
#![cfg(all(feature = "local-hub", feature = "service"))]

mod common;

use common::{WAIT, tls_config, tls_stream};
use iothub::ErrorKind;
use iothub::auth::TokenSource;
use iothub::local_hub::LocalHub;
use iothub::protocol::{BulkDeviceOperation, Device, DeviceStatus, ImportMode};
use iothub::service::RegistryManager;
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

async fn setup() -> (LocalHub, RegistryManager) {
    let hub = LocalHub::builder().start().await.unwrap();
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap();
    (hub, registry)
}

/// A raw request to the REST API with the owner policy's token; the status and JSON body.
async fn raw(
    hub: &LocalHub,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls_config(hub.ca_pem())).clone())
        .timeout(WAIT)
        .build()
        .unwrap();
    let token = TokenSource::for_service(&hub.service_connection_string())
        .token()
        .unwrap()
        .token
        .to_string();
    let separator = if path.contains('?') { '&' } else { '?' };
    let url = format!(
        "https://localhost:{}{path}{separator}api-version=2021-04-12",
        hub.https_addr().port()
    );
    let mut request = client.request(method, url).header("Authorization", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array: {body}"))
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_trailing_slash_names_the_same_resource_and_top_limits_the_list() {
    let (hub, registry) = setup().await;
    for id in ["a1", "a2", "a3"] {
        hub.create_device(id).unwrap();
    }
    // Node's Registry.list asks `GET /devices/?api-version=…`.
    for path in ["/devices", "/devices/", "/devices//"] {
        let (status, body) = raw(&hub, reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(ids(&body), ["a1", "a2", "a3"], "{path}");
    }
    let (status, body) = raw(&hub, reqwest::Method::GET, "/devices/a2/", None).await;
    assert_eq!(
        (status, body["deviceId"].clone()),
        (StatusCode::OK, json!("a2"))
    );
    let (status, body) = raw(&hub, reqwest::Method::GET, "/statistics/devices/", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = raw(&hub, reqwest::Method::GET, "/devices/?top=2", None).await;
    assert_eq!((status, ids(&body).len()), (StatusCode::OK, 2));
    // Outside 1..=1000 counts as IoT Hub's limit of 1,000.
    let (status, body) = raw(&hub, reqwest::Method::GET, "/devices?top=0", None).await;
    assert_eq!((status, ids(&body).len()), (StatusCode::OK, 3));
    let (status, _) = raw(&hub, reqwest::Method::GET, "/devices?top=x", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(registry.list_devices_top(1).await.unwrap().len(), 1);
    assert_eq!(registry.list_devices_top(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn bulk_create_update_and_delete_answer_per_device() {
    let (hub, registry) = setup().await;
    let devices: Vec<Device> = ["b1", "b2", "b3"].into_iter().map(Device::new).collect();
    let result = registry.add_devices(&devices).await.unwrap();
    assert!(
        result.is_successful && result.errors.is_empty(),
        "{result:?}"
    );
    assert!(hub.device_connection_string("b3").is_some());

    // One taken id: that device fails, the other is created.
    let again = [Device::new("b1"), Device::new("b4")];
    let result = registry.add_devices(&again).await.unwrap();
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1, "{result:?}");
    assert_eq!(result.errors[0].device_id, "b1");
    assert_eq!(result.errors[0].error_code, "DeviceAlreadyExists");
    assert_eq!(result.errors[0].operation.as_deref(), Some("create"));
    assert!(hub.device_connection_string("b4").is_some());

    // Update with the etags read, then again with the same (now stale) etags.
    let read = registry.get_device("b1").await.unwrap();
    let disabled = vec![read.clone().with_status(DeviceStatus::Disabled)];
    let result = registry.update_devices(&disabled, false).await.unwrap();
    assert!(result.is_successful, "{result:?}");
    assert_eq!(
        registry.get_device("b1").await.unwrap().status,
        DeviceStatus::Disabled
    );
    let result = registry.update_devices(&disabled, false).await.unwrap();
    assert_eq!(
        result.errors[0].error_code, "PreconditionFailed",
        "{result:?}"
    );
    let result = registry
        .update_devices(&[Device::new("b1"), Device::new("nope")], true)
        .await
        .unwrap();
    assert_eq!(result.errors.len(), 1, "{result:?}");
    assert_eq!(
        (
            result.errors[0].device_id.as_str(),
            result.errors[0].error_code.as_str()
        ),
        ("nope", "DeviceNotFound")
    );
    assert_eq!(
        registry.get_device("b1").await.unwrap().status,
        DeviceStatus::Enabled
    );

    // Delete: a stale etag fails that device only; force deletes whatever the etag.
    let result = registry
        .remove_devices(std::slice::from_ref(&read), false)
        .await
        .unwrap();
    assert_eq!(
        result.errors[0].error_code, "PreconditionFailed",
        "{result:?}"
    );
    let all: Vec<Device> = ["b1", "b2", "b3", "b4"]
        .into_iter()
        .map(Device::new)
        .collect();
    let result = registry.remove_devices(&all, true).await.unwrap();
    assert!(result.is_successful, "{result:?}");
    assert!(registry.list_devices().await.unwrap().is_empty());

    // Mixed modes in one request.
    let mixed = [
        BulkDeviceOperation::new(Device::new("m1"), ImportMode::Create),
        BulkDeviceOperation::new(Device::new("m2"), ImportMode::CreateOrUpdate),
        BulkDeviceOperation::new(Device::new("m3"), ImportMode::Delete),
    ];
    let result = registry.bulk_registry_operation(&mixed).await.unwrap();
    assert_eq!(result.errors.len(), 1, "{result:?}");
    assert_eq!(result.errors[0].error_code, "DeviceNotFound");
    assert_eq!(result.errors[0].operation.as_deref(), Some("delete"));
}

#[tokio::test]
async fn bulk_requests_are_checked_as_a_whole() {
    let (hub, registry) = setup().await;
    // Checked before sending.
    let err = registry.add_devices(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{err}");
    let many: Vec<Device> = (0..101).map(|i| Device::new(format!("d{i}"))).collect();
    let err = registry.add_devices(&many).await.unwrap_err();
    assert!(err.to_string().contains("1 to 100"), "{err}");
    let err = registry
        .add_devices(&[Device::new("a b")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidIdentityId, "{err}");

    // Refused by the hub as a whole: a device named twice, a malformed body, no importMode.
    let twice = json!([{"id": "x", "importMode": "create"}, {"id": "x", "importMode": "delete"}]);
    for body in [twice, json!({"id": "x"}), json!([{"id": "x"}]), json!([])] {
        let (status, answer) =
            raw(&hub, reqwest::Method::POST, "/devices", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert!(
            answer["Message"]
                .as_str()
                .unwrap()
                .starts_with("ErrorCode:ArgumentInvalid")
        );
    }
    assert!(hub.device_connection_string("x").is_none());
    // Python's form: eTag and camelCase modes; a failure answers 400 with the result body.
    let body = json!([
        {"id": "p1", "importMode": "create", "status": "disabled"},
        {"id": "p2", "importMode": "updateIfMatchETag", "eTag": "nope"},
        {"id": "bad id", "importMode": "create"},
    ]);
    let (status, answer) = raw(&hub, reqwest::Method::POST, "/devices/", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["isSuccessful"], json!(false));
    let errors: Vec<(String, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["deviceId"].as_str().unwrap().to_owned(),
                e["errorCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("p2".to_owned(), "DeviceNotFound".to_owned()),
            ("bad id".to_owned(), "ArgumentInvalid".to_owned())
        ]
    );
    assert_eq!(answer["warnings"], json!([]));
    assert_eq!(
        registry.get_device("p1").await.unwrap().status,
        DeviceStatus::Disabled
    );
}

#[tokio::test]
async fn a_leaf_device_sits_under_its_edge_device() {
    let (_hub, registry) = setup().await;
    let edge = registry
        .add_device(&Device::new("edge1").with_iot_edge(true))
        .await
        .unwrap();
    let scope = edge
        .device_scope
        .clone()
        .expect("an edge device has a scope");
    assert!(scope.starts_with("ms-azure-iot-edge://edge1-"), "{scope}");
    assert!(edge.parent_scopes.is_empty());

    let leaf = registry
        .add_device(&Device::new("leaf1").with_parent(scope.clone()))
        .await
        .unwrap();
    assert_eq!(leaf.device_scope.as_deref(), Some(scope.as_str()));
    assert_eq!(leaf.parent_scopes, std::slice::from_ref(&scope));
    let read = registry.get_device("leaf1").await.unwrap();
    assert_eq!(
        (read.device_scope, read.parent_scopes),
        (Some(scope.clone()), vec![scope.clone()])
    );

    // Nested edge: an edge device under edge1.
    let child_edge = registry
        .add_device(
            &Device::new("edge2")
                .with_iot_edge(true)
                .with_parent(scope.clone()),
        )
        .await
        .unwrap();
    assert_eq!(child_edge.parent_scopes, std::slice::from_ref(&scope));
    assert_ne!(child_edge.device_scope.as_deref(), Some(scope.as_str()));

    // A scope that is no edge device's, and an edge device as its own parent.
    let err = registry
        .add_device(&Device::new("leaf2").with_parent("ms-azure-iot-edge://nobody-1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{err}");
    // The hub's text comes with the error: what is wrong and what to do.
    assert!(
        err.to_string()
            .contains("not the deviceScope of an edge device of this hub: read"),
        "{err}"
    );
    let own = registry.get_device("edge1").await.unwrap();
    let mut own_parent = own.clone();
    own_parent.parent_scopes = vec![scope.clone()];
    let err = registry.update_device(&own_parent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{err}");

    // A leaf device taken out from under its parent.
    let mut moved = registry.get_device("leaf1").await.unwrap();
    moved.device_scope = None;
    let moved = registry.update_device(&moved).await.unwrap();
    assert_eq!(
        (moved.device_scope, moved.parent_scopes),
        (None, Vec::new())
    );
}

#[tokio::test]
async fn ids_outside_iot_hubs_rules_are_refused_with_the_rule() {
    let (hub, registry) = setup().await;
    for bad in ["dev 1", "a/b", "ü", ""] {
        let err = hub.create_device(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidIdentityId, "{bad:?}");
        assert!(
            err.to_string()
                .contains("- . + % _ # * ? ! ( ) , : = @ $ '"),
            "{err}"
        );
        let err = registry.create_device(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidIdentityId, "{bad:?}: {err}");
    }
    assert!(hub.create_device("ok:id=1@x$").is_ok());
    hub.create_device("dev1").unwrap();
    let err = hub.create_module("dev1", "m 1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidIdentityId, "{err}");
    // Over raw HTTPS, the hub answers 400 ArgumentInvalid with the rule.
    let (status, body) = raw(
        &hub,
        reqwest::Method::PUT,
        "/devices/a%20b",
        Some(json!({"deviceId": "a b"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.starts_with("ErrorCode:ArgumentInvalid"),
        "{message}"
    );
    assert!(message.contains("' '"), "{message}");
}

#[tokio::test]
async fn statistics_count_enabled_and_disabled_devices() {
    let (hub, registry) = setup().await;
    for id in ["s1", "s2", "s3"] {
        hub.create_device(id).unwrap();
    }
    let s2 = registry.get_device("s2").await.unwrap();
    registry
        .update_device(&s2.with_status(DeviceStatus::Disabled))
        .await
        .unwrap();
    let stats = registry.statistics().await.unwrap();
    assert_eq!(
        (
            stats.total_device_count,
            stats.enabled_device_count,
            stats.disabled_device_count
        ),
        (3, 2, 1)
    );
}

#[tokio::test]
async fn the_served_chain_leaves_out_the_self_signed_root() {
    let hub = LocalHub::builder().start().await.unwrap();
    let ca = CertificateDer::from_pem_slice(hub.ca_pem().as_bytes()).unwrap();
    for port in [
        hub.mqtt_addr().port(),
        hub.https_addr().port(),
        hub.amqp_addr().port(),
    ] {
        let stream = tls_stream(&hub, port).await;
        let chain = stream.get_ref().1.peer_certificates().unwrap().to_vec();
        assert_eq!(
            chain.len(),
            1,
            "the server certificate alone on port {port}"
        );
        assert!(
            !chain.contains(&ca),
            "the root is not served on port {port}"
        );
    }
}
