//! Interop for X.509 device authentication with the official SDKs, against an in-process
//! [`LocalHub`]:
//! - azure-iot-device (Python 2.14.0): `X509(cert_file, key_file)` with
//!   `IoTHubDeviceClient.create_from_x509_certificate`, over MQTT/TLS and MQTT/WSS, self-signed
//!   and CA-signed, and the refusal of a certificate the hub does not know (`py_x509_device.py`);
//! - azure-iot-device (Node 1.18.4): `HostName=…;DeviceId=…;x509=true` and
//!   `setOptions({ cert, key })` (`node_x509_device.js`);
//! - azure-iothub (Node 1.16.6): `Registry.create` of `selfSigned` (with and without the type)
//!   and `certificateAuthority` devices (`node_x509_registry.js`), which then connect;
//! - azure-iot-hub (Python 2.7.0): `create_device_with_x509` and
//!   `create_device_with_certificate_authority` (`py_x509_registry.py`), which then connect.
//!
//! Needs `IOTHUB_PYTHON` and `IOTHUB_NODE_MODULES` (see `tests/interop/README.md`); without them
//! each test prints `skipped:` and passes, unless `IOTHUB_REQUIRE_INTEROP=1`.
#![cfg(all(feature = "local-hub", feature = "device"))]

#[cfg(feature = "cli")]
mod iothub_local_process;
#[path = "interop/peer.rs"]
mod peer;

use std::path::Path;

use iothub::device::ClientCertificate;
use iothub::local_hub::LocalHub;
use peer::{HUB_WAIT, PEER_DEADLINE_SECS, Peer, TempFile, node_modules, python};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use tokio::time::timeout;

/// A certificate and key written to temp files for a peer.
struct CertFiles {
    cert: TempFile,
    key: TempFile,
    sha1: String,
    sha256: String,
}

fn cert_files(cert_pem: &str, key_pem: &str) -> CertFiles {
    let prints = ClientCertificate::from_pem(cert_pem, key_pem)
        .unwrap()
        .thumbprints()
        .clone();
    CertFiles {
        cert: TempFile::new("device.pem", cert_pem),
        key: TempFile::new("device.key", key_pem),
        sha1: prints.sha1,
        sha256: prints.sha256,
    }
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn self_signed(cn: &str) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(cn).self_signed(&key).unwrap();
    cert_files(&cert.pem(), &key.serialize_pem())
}

struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn test_ca() -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "interop root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn ca_signed(ca: &TestCa, cn: &str) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(cn).signed_by(&key, &ca.issuer).unwrap();
    cert_files(&cert.pem(), &key.serialize_pem())
}

async fn hub_with_ca(ca: &TestCa) -> LocalHub {
    LocalHub::builder()
        .x509_ca_pem(ca.pem.clone())
        .start()
        .await
        .unwrap()
}

fn python_args(
    hub: &LocalHub,
    device_id: &str,
    files: &CertFiles,
    ca_file: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--hostname",
        hub.host_name(),
        "--device-id",
        device_id,
        "--cert-file",
        &files.cert.path().display().to_string(),
        "--key-file",
        &files.key.path().display().to_string(),
        "--ca-file",
        &ca_file.display().to_string(),
        "--mqtt-port",
        &hub.mqtt_addr().port().to_string(),
        "--wss-port",
        &hub.https_addr().port().to_string(),
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The Python SDK connects with a certificate and its telemetry reaches the hub.
async fn python_device_sends(
    hub: &LocalHub,
    python: &Path,
    device_id: &str,
    files: &CertFiles,
    websockets: bool,
) {
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut telemetry = hub.telemetry();
    let mut extra = vec!["--send-telemetry", "x509 from python"];
    if websockets {
        extra.push("--websockets");
    }
    let args = python_args(hub, device_id, files, ca.path(), &extra);
    let mut peer = Peer::spawn(python, "py_x509_device.py", &args, ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    let seen = timeout(HUB_WAIT, telemetry.recv()).await.unwrap().unwrap();
    assert_eq!(seen.device_id, device_id);
    assert_eq!(seen.message.body_str(), Some("x509 from python"));
    assert_eq!(seen.message.message_id(), Some("x509-1"));
    peer.expect_success().await;
}

#[tokio::test]
async fn python_self_signed_device_over_mqtt_and_websockets() {
    let Some(python) = python() else { return };
    let hub = peer::hub().await;
    for (device_id, websockets) in [("py-x509-tls", false), ("py-x509-wss", true)] {
        let device = hub.create_x509_device(device_id).unwrap();
        let files = cert_files(&device.certificate_pem, &device.private_key_pem);
        python_device_sends(&hub, &python, device_id, &files, websockets).await;
    }
}

#[tokio::test]
async fn python_ca_signed_device_connects_and_a_wrong_certificate_is_refused() {
    let Some(python) = python() else { return };
    let ca = test_ca();
    let hub = hub_with_ca(&ca).await;
    hub.create_ca_signed_device("py-ca").unwrap();
    python_device_sends(&hub, &python, "py-ca", &ca_signed(&ca, "py-ca"), false).await;

    // A self-signed device presenting a certificate other than the registered one: CONNACK 5,
    // which the SDK reports as an authorization failure.
    let registered = self_signed("py-wrong");
    hub.create_self_signed_device("py-wrong", &registered.sha1, None)
        .unwrap();
    let other = self_signed("py-wrong");
    let ca_file = TempFile::new("ca.pem", hub.ca_pem());
    let args = python_args(
        &hub,
        "py-wrong",
        &other,
        ca_file.path(),
        &["--expect-refused"],
    );
    let mut peer = Peer::spawn(&python, "py_x509_device.py", &args, ca_file.path());
    peer.expect_line("refused").await;
    peer.expect_success().await;
    assert!(!hub.is_connected("py-wrong"));
}

/// `HostName=localhost:PORT;DeviceId=…;x509=true`. azure-iot-device's `fromConnectionString`
/// keeps only `HostName` and `DeviceId` for an `x509=true` string (azure-iot-sdk-node
/// `device/core/src/device_client.ts`, `fromConnectionString`: `new X509AuthenticationProvider({
/// host: cn.HostName, deviceId: cn.DeviceId })`), so `GatewayHostName` is dropped and the port
/// goes in `HostName`; the hub accepts `localhost:PORT` in the MQTT user name.
fn node_x509_connection_string(hub: &LocalHub, device_id: &str) -> String {
    format!(
        "HostName=localhost:{};DeviceId={device_id};x509=true",
        hub.mqtt_addr().port()
    )
}

fn node_device_args(cs: &str, files: &CertFiles, ca_file: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--connection-string",
        cs,
        "--cert-file",
        &files.cert.path().display().to_string(),
        "--key-file",
        &files.key.path().display().to_string(),
        "--ca-file",
        &ca_file.display().to_string(),
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test]
async fn node_self_signed_device_sends_telemetry() {
    let Some(node_modules) = node_modules() else {
        return;
    };
    let hub = peer::hub().await;
    let device = hub.create_x509_device("node-x509").unwrap();
    let files = cert_files(&device.certificate_pem, &device.private_key_pem);
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut telemetry = hub.telemetry();
    assert!(device.connection_string.to_string().contains(";x509=true"));
    let cs = node_x509_connection_string(&hub, "node-x509");
    let args = node_device_args(
        &cs,
        &files,
        ca.path(),
        &["--send-telemetry", "x509 from node"],
    );
    let mut peer = Peer::spawn_node(&node_modules, "node_x509_device.js", &args, ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    let seen = timeout(HUB_WAIT, telemetry.recv()).await.unwrap().unwrap();
    assert_eq!(seen.device_id, "node-x509");
    assert_eq!(seen.message.body_str(), Some("x509 from node"));
    peer.expect_success().await;

    // The Node e2e negative test: another certificate is an UnauthorizedError.
    let other = self_signed("node-x509");
    let args = node_device_args(&cs, &other, ca.path(), &["--expect-refused", "true"]);
    let mut peer = Peer::spawn_node(&node_modules, "node_x509_device.js", &args, ca.path());
    peer.expect_line("refused").await;
    peer.expect_success().await;
}

/// The Node registry creates the three X.509 forms the official e2e tests use; the devices
/// then connect with their certificates (Node for the self-signed, Python for the CA-signed).
#[tokio::test]
async fn node_registry_creates_x509_devices_that_connect() {
    let (Some(node_modules), Some(python)) = (node_modules(), python()) else {
        return;
    };
    let ca = test_ca();
    let hub = hub_with_ca(&ca).await;
    let ca_file = TempFile::new("ca.pem", hub.ca_pem());
    let untyped = self_signed("anything");
    let typed = self_signed("anything-else");
    let typed_print = typed.sha256.to_lowercase();
    let args: Vec<String> = [
        "--connection-string".to_owned(),
        hub.service_connection_string().to_string(),
        "--https-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--self-signed".to_owned(),
        format!("node-self={}", untyped.sha1),
        "--typed".to_owned(),
        format!("node-typed={typed_print}"),
        "--ca-signed".to_owned(),
        "node-ca".to_owned(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ]
    .into();
    let mut registry = Peer::spawn_node(
        &node_modules,
        "node_x509_registry.js",
        &args,
        ca_file.path(),
    );
    assert_eq!(
        registry.json_line("node-self").await,
        json!({"deviceId": "node-self", "type": "selfSigned",
               "primaryThumbprint": untyped.sha1, "secondaryThumbprint": null})
    );
    assert_eq!(
        registry.json_line("node-typed").await,
        json!({"deviceId": "node-typed", "type": "selfSigned",
               "primaryThumbprint": typed_print, "secondaryThumbprint": null})
    );
    assert_eq!(
        registry.json_line("node-ca").await,
        json!({"deviceId": "node-ca", "type": "certificateAuthority",
               "primaryThumbprint": null, "secondaryThumbprint": null})
    );
    registry.expect_success().await;

    for (device_id, files) in [("node-self", &untyped), ("node-typed", &typed)] {
        let cs = node_x509_connection_string(&hub, device_id);
        let args = node_device_args(&cs, files, ca_file.path(), &[]);
        let mut peer =
            Peer::spawn_node(&node_modules, "node_x509_device.js", &args, ca_file.path());
        peer.expect_line("connected").await;
        peer.expect_success().await;
    }
    python_device_sends(&hub, &python, "node-ca", &ca_signed(&ca, "node-ca"), false).await;
}

/// The Python registry creates a `selfSigned` device (SHA-1 primary, SHA-256 secondary) and a
/// `certificateAuthority` device; both connect with the Python device SDK.
#[tokio::test]
async fn python_registry_creates_x509_devices_that_connect() {
    let Some(python) = python() else { return };
    let ca = test_ca();
    let hub = hub_with_ca(&ca).await;
    let ca_file = TempFile::new("ca.pem", hub.ca_pem());
    let registered = self_signed("whatever");
    let secondary = self_signed("whatever");
    let args: Vec<String> = [
        "--connection-string".to_owned(),
        hub.service_connection_string().to_string(),
        "--ca-file".to_owned(),
        ca_file.path().display().to_string(),
        "--https-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--self-signed".to_owned(),
        "py-self".to_owned(),
        registered.sha1.clone(),
        secondary.sha256.to_lowercase(),
        "--ca-signed".to_owned(),
        "py-ca-reg".to_owned(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ]
    .into();
    let mut registry = Peer::spawn(&python, "py_x509_registry.py", &args, ca_file.path());
    assert_eq!(
        registry.json_line("py-self").await,
        json!({"device_id": "py-self", "auth_type": "selfSigned",
               "primary_thumbprint": registered.sha1,
               "secondary_thumbprint": secondary.sha256.to_lowercase()})
    );
    assert_eq!(
        registry.json_line("py-ca-reg").await,
        json!({"device_id": "py-ca-reg", "auth_type": "certificateAuthority",
               "primary_thumbprint": null, "secondary_thumbprint": null})
    );
    registry.expect_success().await;
    python_device_sends(&hub, &python, "py-self", &secondary, false).await;
    python_device_sends(
        &hub,
        &python,
        "py-ca-reg",
        &ca_signed(&ca, "py-ca-reg"),
        true,
    )
    .await;
}

/// `iothub-local --device ID:x509` issues a certificate and key the official device SDKs
/// connect with (Python and Node, MQTT/TLS); `--x509-ca FILE` is accepted alongside.
#[cfg(feature = "cli")]
#[tokio::test]
async fn sdks_connect_with_the_certificate_iothub_local_issues() {
    let (Some(python), Some(node_modules)) = (python(), node_modules()) else {
        return;
    };
    let x509_ca = TempFile::new("x509-ca.pem", &test_ca().pem);
    let hub_ca = TempFile::new("hub-ca.pem", "");
    let mut args: Vec<&std::ffi::OsStr> = [
        "--mqtt-port",
        "0",
        "--https-port",
        "0",
        "--amqp-port",
        "0",
        "--device",
        "cli-x509:x509",
        "--x509-ca",
    ]
    .map(std::ffi::OsStr::new)
    .to_vec();
    args.extend([
        x509_ca.path().as_os_str(),
        "--ca-out".as_ref(),
        hub_ca.path().as_os_str(),
    ]);
    let (mut hub, printed) = iothub_local_process::start(args).await;
    let var = |name: &str| iothub_local_process::printed_var(&printed, name);
    let cs = var("IOTHUB_DEVICE_CONNECTION_STRING_CLI_X509");
    let cert_file = std::path::PathBuf::from(var("IOTHUB_DEVICE_CERT_FILE_CLI_X509"));
    let key_file = std::path::PathBuf::from(var("IOTHUB_DEVICE_KEY_FILE_CLI_X509"));
    let mqtt_port = cs
        .rsplit_once("GatewayHostName=localhost:")
        .and_then(|(_, port)| port.split(';').next())
        .expect("a gateway port")
        .to_owned();
    assert!(cs.contains("DeviceId=cli-x509;x509=true"), "{cs}");
    let files = CertFiles {
        cert: TempFile::new(
            "cli.pem",
            &std::fs::read_to_string(&cert_file).expect("the certificate file"),
        ),
        key: TempFile::new(
            "cli.key",
            &std::fs::read_to_string(&key_file).expect("the key file"),
        ),
        sha1: String::new(),
        sha256: String::new(),
    };
    let _ = std::fs::remove_file(&cert_file);
    let _ = std::fs::remove_file(&key_file);

    let py_args: Vec<String> = [
        "--hostname",
        "localhost",
        "--device-id",
        "cli-x509",
        "--cert-file",
        &files.cert.path().display().to_string(),
        "--key-file",
        &files.key.path().display().to_string(),
        "--ca-file",
        &hub_ca.path().display().to_string(),
        "--mqtt-port",
        &mqtt_port,
        "--send-telemetry",
        "from the CLI's certificate",
        "--timeout",
        &PEER_DEADLINE_SECS.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut peer = Peer::spawn(&python, "py_x509_device.py", &py_args, hub_ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    peer.expect_success().await;

    let node_cs = format!("HostName=localhost:{mqtt_port};DeviceId=cli-x509;x509=true");
    let args = node_device_args(
        &node_cs,
        &files,
        hub_ca.path(),
        &["--send-telemetry", "node"],
    );
    let mut peer = Peer::spawn_node(&node_modules, "node_x509_device.js", &args, hub_ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    peer.expect_success().await;
    hub.start_kill().expect("iothub-local stops");
}
