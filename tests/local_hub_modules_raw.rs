//! The local hub's module registry over raw HTTPS: statuses, `iothub-errorcode` headers and
//! bodies as the official SDKs read them (Python azure-iot-hub checks 201/200 on `PUT`, 204 on
//! `DELETE`; Node azure-iothub reads the legacy error body), for good and bad requests.
#![cfg(feature = "local-hub")]

mod common;

use common::{WAIT, tls_config};
use iothub::auth::TokenSource;
use iothub::local_hub::LocalHub;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
/// Raw HTTPS requests, to see statuses, headers and bodies.
struct Raw {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Raw {
    fn new(hub: &LocalHub, policy: &str) -> Self {
        let cs = hub.policy_connection_string(policy).unwrap();
        Raw {
            client: reqwest::Client::builder()
                .use_preconfigured_tls((*tls_config(hub.ca_pem())).clone())
                .timeout(WAIT)
                .build()
                .unwrap(),
            base: format!("https://localhost:{}", hub.https_addr().port()),
            auth: TokenSource::for_service(&cs)
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
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self
            .client
            .request(
                method,
                format!("{}{path}?api-version=2021-04-12", self.base),
            )
            .header("Authorization", &self.auth);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let code = response
            .headers()
            .get("iothub-errorcode")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, code, body)
    }
}

/// A request the hub must refuse: method, path, `If-Match`, body, then the status and the
/// error code expected.
type Refusal<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    Option<Value>,
    StatusCode,
    &'a str,
);

/// The code as Node's azure-iothub reads the legacy body (`Message` split on `;`:
/// azure-iot-sdk-node `common/transport/http/src/http.ts`, `Http.parseErrorBody`).
fn node_error_code(body: &Value) -> &str {
    let message = body["Message"].as_str().expect("a legacy error body");
    let (code, text) = message.split_once(';').expect("code;text");
    assert!(!text.is_empty());
    code.strip_prefix("ErrorCode:").expect("ErrorCode: prefix")
}

#[tokio::test]
async fn raw_statuses_and_bodies() {
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let raw = Raw::new(&hub, "iothubowner");
    let path = "/devices/dev1/modules/m1";

    // Node's addModule body: just the ids.
    let (status, _, created) = raw
        .send(
            Method::PUT,
            path,
            None,
            Some(json!({"deviceId":"dev1","moduleId":"m1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for field in [
        "moduleId",
        "deviceId",
        "managedBy",
        "generationId",
        "etag",
        "connectionState",
        "connectionStateUpdatedTime",
        "lastActivityTime",
        "cloudToDeviceMessageCount",
        "authentication",
    ] {
        assert!(created.get(field).is_some(), "{field} in {created}");
    }
    assert_eq!(created["connectionState"], "Disconnected");
    assert_eq!(created["authentication"]["type"], "sas");

    // Python's update_module_with_sas: managed_by, keys, If-Match "*" -> 200.
    let key = "cGFzc3dvcmQ=";
    let python_body = json!({"moduleId":"m1","managedBy":"me","deviceId":"dev1",
        "authentication":{"symmetricKey":{"primaryKey":key,"secondaryKey":key},"type":"sas"}});
    let (status, _, updated) = raw
        .send(Method::PUT, path, Some("\"*\""), Some(python_body))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["managedBy"], "me");
    assert_ne!(updated["etag"], created["etag"]);
    // Node's updateModule sends the object it read, read-only fields included, with its etag.
    let etag = format!("\"{}\"", updated["etag"].as_str().unwrap());
    let (status, _, again) = raw
        .send(Method::PUT, path, Some(&etag), Some(updated.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");

    let (status, _, read) = raw.send(Method::GET, path, None, None).await;
    assert_eq!((status, &read), (StatusCode::OK, &again));
    let (status, _, list) = raw
        .send(Method::GET, "/devices/dev1/modules", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([again]));

    // Refusals: status, iothub-errorcode and the body code Node reads agree.
    let cases: Vec<Refusal> = vec![
        (
            Method::PUT,
            path,
            None,
            Some(json!({})),
            StatusCode::CONFLICT,
            "ModuleAlreadyExistsOnDevice",
        ),
        (
            Method::PUT,
            path,
            Some(&etag),
            Some(json!({})),
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
        ),
        (
            Method::DELETE,
            path,
            Some(&etag),
            None,
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
        ),
        (
            Method::GET,
            "/devices/dev1/modules/m2",
            None,
            None,
            StatusCode::NOT_FOUND,
            "ModuleNotFound",
        ),
        (
            Method::DELETE,
            "/devices/dev1/modules/m2",
            Some("\"*\""),
            None,
            StatusCode::NOT_FOUND,
            "ModuleNotFound",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/m2",
            Some("\"*\""),
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "ModuleNotFound",
        ),
        (
            Method::GET,
            "/devices/nodev/modules/m1",
            None,
            None,
            StatusCode::NOT_FOUND,
            "DeviceNotFound",
        ),
        (
            Method::GET,
            "/devices/nodev/modules",
            None,
            None,
            StatusCode::NOT_FOUND,
            "DeviceNotFound",
        ),
        (
            Method::PUT,
            "/devices/nodev/modules/m1",
            None,
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "DeviceNotFound",
        ),
        (
            Method::DELETE,
            "/devices/nodev/modules/m1",
            Some("\"*\""),
            None,
            StatusCode::NOT_FOUND,
            "DeviceNotFound",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/a%20b",
            None,
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/%C3%BC",
            None,
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/m3",
            None,
            Some(json!({"moduleId":"m4"})),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/m3",
            None,
            Some(json!({"deviceId":"dev2"})),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/m3",
            None,
            Some(json!({"authentication":{"type":"selfSigned"}})),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::PUT,
            "/devices/dev1/modules/m3",
            None,
            Some(json!({"authentication":{"symmetricKey":{"primaryKey":"not base64!"}}})),
            StatusCode::BAD_REQUEST,
            "ArgumentInvalid",
        ),
        (
            Method::POST,
            path,
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
    ];
    for (method, at, if_match, body, status, code) in cases {
        let what = format!("{method} {at} If-Match {if_match:?}");
        let (got, header, body) = raw.send(method, at, if_match, body).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(header.as_deref(), Some(code), "{what}");
        assert_eq!(node_error_code(&body), code, "{what}");
        assert!(
            !body.to_string().contains(key),
            "{what}: no key in an error"
        );
    }
    let long = format!("/devices/dev1/modules/{}", "m".repeat(129));
    let (status, _, _) = raw.send(Method::PUT, &long, None, Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Registry permissions: registryRead may read, not write; no token, no access.
    let reader = Raw::new(&hub, "registryRead");
    assert_eq!(
        reader.send(Method::GET, path, None, None).await.0,
        StatusCode::OK
    );
    let (status, code, _) = reader.send(Method::DELETE, path, Some("\"*\""), None).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("IotHubUnauthorizedAccess"))
    );
    let device_only = Raw::new(&hub, "device");
    assert_eq!(
        device_only.send(Method::GET, path, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Nothing refused above changed the module.
    let (_, _, still) = raw.send(Method::GET, path, None, None).await;
    assert_eq!(still, again);
    let current = format!("\"{}\"", again["etag"].as_str().unwrap());
    let (status, _, body) = raw.send(Method::DELETE, path, Some(&current), None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(
        raw.send(Method::GET, path, None, None).await.0,
        StatusCode::NOT_FOUND
    );
}
