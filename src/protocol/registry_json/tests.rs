use super::*;

/// An edge device as `az iot hub device-identity show` prints it (schema: the swagger
/// `Device` of `azure-iot-sdk-node`, `service/src/service.json`).
const DOCUMENTED: &str = r#"{"deviceId":"sensor-th-0067","generationId":"637093398936580016","etag":"OTg0MjI1NzE1","connectionState":"Disconnected","status":"enabled","statusReason":null,"connectionStateUpdatedTime":"0001-01-01T00:00:00","statusUpdatedTime":"0001-01-01T00:00:00","lastActivityTime":"0001-01-01T00:00:00","cloudToDeviceMessageCount":0,"authentication":{"symmetricKey":{"primaryKey":"jftBfeefPsXgrd87UcotVKJ88kBl5Zjk1oWmMwwxlME=","secondaryKey":"vbegAag/mTJReQjNvuEM9HEe1zpGPnGI2j6DJ7nECxo="},"type":"sas","x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null}},"capabilities":{"iotEdge":true},"deviceScope":"ms-azure-iot-edge://sensor-th-0067-637093398936580016","parentScopes":[]}"#;

#[test]
fn reads_the_documented_device() {
    let device: Device = serde_json::from_str(DOCUMENTED).unwrap();
    assert_eq!(device.device_id, "sensor-th-0067");
    assert_eq!(device.status, DeviceStatus::Enabled);
    assert!(device.capabilities.iot_edge);
    assert_eq!(device.authentication.symmetric_key.primary_key.len(), 44);
    assert_eq!(
        device.device_scope.as_deref(),
        Some("ms-azure-iot-edge://sensor-th-0067-637093398936580016")
    );
    assert!(!format!("{device:?}").contains("jftB"));
    // Read-only fields are not written back in a request.
    let written = serde_json::to_string(&device).unwrap();
    assert!(!written.contains("connectionState") && written.contains("\"type\":\"sas\""));
    assert!(!written.contains("x509Thumbprint") && !written.contains("cloudToDevice"));
}

#[cfg(feature = "local-hub")]
#[test]
fn the_hub_reply_is_the_documented_shape_byte_for_byte() {
    let device: Device = serde_json::from_str(DOCUMENTED).unwrap();
    let written = serde_json::to_string(&device.hub_reply()).unwrap();
    assert_eq!(written, DOCUMENTED);
}

#[test]
fn a_new_device_request_is_what_python_sends() {
    // azure-iot-hub-python `IoTHubRegistryManager.create_device_with_sas`, via msrest.
    let device = Device::new("dev1").with_symmetric_keys("", "");
    assert_eq!(
        serde_json::to_string(&device).unwrap(),
        r#"{"deviceId":"dev1","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"type":"sas"},"capabilities":{"iotEdge":false}}"#
    );
}

#[test]
fn requests_are_read_leniently() {
    // Node's create: no capabilities; nulls and odd case where a GET body was edited;
    // malformed read-only fields are the hub's to overwrite.
    let body = r#"{"deviceId":"d","status":"Disabled","etag":null,"statusReason":null,
        "connectionState":5,"cloudToDeviceMessageCount":"x","generationId":null,
        "authentication":{"type":null,"symmetricKey":{"primaryKey":null}},"capabilities":null,"extra":1}"#;
    let device: Device = serde_json::from_str(body).unwrap();
    assert_eq!(device.status, DeviceStatus::Disabled);
    assert_eq!(device.authentication.kind, "sas");
    assert_eq!(device.authentication.symmetric_key.primary_key, "");
    assert_eq!(device.connection_state, DeviceConnectionState::Disconnected);
    let empty: Device = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, Device::default());
    // Writable fields still have to make sense.
    for bad in [
        r#"{"status":"sleeping"}"#,
        r#"{"capabilities":{"iotEdge":"yes"}}"#,
        r#"{"deviceId":7}"#,
    ] {
        assert!(serde_json::from_str::<Device>(bad).is_err(), "{bad}");
    }
}

#[test]
fn error_codes_from_header_and_both_body_forms() {
    // The legacy form (Azure/azure-iot-sdks#711) and the newer JSON-in-Message form.
    assert_eq!(
        error_code(Some("DeviceNotFound"), b"").as_deref(),
        Some("DeviceNotFound")
    );
    let legacy = br#"{"Message":"ErrorCode:DeviceAlreadyExists;Conflict","ExceptionMessage":"Tracking ID:e4cb"}"#;
    assert_eq!(
        error_code(None, legacy).as_deref(),
        Some("DeviceAlreadyExists")
    );
    let newer = br#"{"Message":"{\"errorCode\":404001,\"trackingId\":\"x\",\"message\":\"m\",\"info\":{},\"timestampUtc\":\"t\"}","ExceptionMessage":""}"#;
    assert_eq!(error_code(None, newer).as_deref(), Some("404001"));
    assert_eq!(error_code(None, b"not json"), None);
}

#[test]
fn x509_requests_are_what_python_sends() {
    // azure-iot-hub-python `create_device_with_x509` / `create_device_with_certificate_authority`.
    let body = serde_json::to_value(
        Device::new("d").with_x509_thumbprints("AB12", Some("cd34".to_owned())),
    )
    .unwrap();
    assert_eq!(body["authentication"]["type"], "selfSigned");
    assert_eq!(
        body["authentication"]["x509Thumbprint"],
        serde_json::json!({"primaryThumbprint": "AB12", "secondaryThumbprint": "cd34"})
    );
    let body = serde_json::to_value(Device::new("d").with_certificate_authority()).unwrap();
    assert_eq!(body["authentication"]["type"], "certificateAuthority");
    assert!(body["authentication"].get("x509Thumbprint").is_none());
}

#[test]
fn a_leaf_device_under_an_edge_device_carries_its_parent_scope() {
    let edge_scope = "ms-azure-iot-edge://edge1-637093398936580016";
    let leaf = Device::new("leaf1").with_parent(edge_scope);
    let written = serde_json::to_string(&leaf).unwrap();
    assert!(
        written.ends_with(r#""deviceScope":"ms-azure-iot-edge://edge1-637093398936580016"}"#),
        "{written}"
    );
    let nested = Device::new("edge2")
        .with_iot_edge(true)
        .with_parent(edge_scope);
    assert_eq!(nested.device_scope, None);
    let written = serde_json::to_string(&nested).unwrap();
    assert!(
        written.ends_with(r#""parentScopes":["ms-azure-iot-edge://edge1-637093398936580016"]}"#),
        "{written}"
    );
    let back: Device = serde_json::from_str(&written).unwrap();
    assert_eq!(back.parent_scopes, vec![edge_scope.to_owned()]);
    // A null parentScopes reads as none.
    let device: Device = serde_json::from_str(r#"{"parentScopes":null}"#).unwrap();
    assert!(device.parent_scopes.is_empty());
}

#[test]
fn error_messages_from_both_body_forms() {
    let legacy = br#"{"Message":"ErrorCode:ArgumentInvalid;the scope 'x' is not an edge device's","ExceptionMessage":"Tracking ID:1"}"#;
    assert_eq!(
        error_message(legacy).as_deref(),
        Some("the scope 'x' is not an edge device's")
    );
    let newer = br#"{"Message":"{\"errorCode\":404103,\"message\":\"Timed out waiting for device to connect.\"}","ExceptionMessage":""}"#;
    assert_eq!(
        error_message(newer).as_deref(),
        Some("Timed out waiting for device to connect.")
    );
    assert_eq!(error_message(b"not json"), None);
    assert_eq!(error_message(br#"{"Message":"ErrorCode:X;"}"#), None);
}
