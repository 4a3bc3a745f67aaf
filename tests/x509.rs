//! X.509 device authentication against an in-process local hub: self-signed (thumbprint) and
//! CA-signed devices, over MQTT/TLS and MQTT over WebSockets, and every refusal IoT Hub makes.
#![cfg(all(feature = "device", feature = "local-hub"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RawClient, connect_packet, password, username};
use iothub::auth::{DeviceConnectionString, HostAndPort};
use iothub::device::{ClientCertificate, DeviceClient, RetryPolicy, Transport};
use iothub::local_hub::LocalHub;
use iothub::{ErrorKind, Message};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

/// A certificate and its key, PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn self_signed(params: CertificateParams) -> Issued {
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A CA able to sign device certificates.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn test_ca(name: &str) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
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

fn signed_by(ca: &TestCa, params: CertificateParams) -> Issued {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn x509_cs(hub: &LocalHub, device_id: &str) -> DeviceConnectionString {
    // The hub's own x509 strings carry the GatewayHostName its port needs: borrow one.
    let sas = hub
        .device_connection_string(device_id)
        .expect("the device is registered");
    let gateway = sas.gateway_host_name().expect("the hub is on a free port");
    format!(
        "HostName={};DeviceId={device_id};GatewayHostName={gateway};x509=true",
        hub.host_name()
    )
    .parse()
    .unwrap()
}

async fn connect(
    hub: &LocalHub,
    cs: DeviceConnectionString,
    issued: &Issued,
    transport: Transport,
) -> iothub::Result<DeviceClient> {
    // Over WebSockets the device dials the HTTPS port.
    let cs = match transport {
        Transport::WebSocket => cs.with_gateway(
            HostAndPort::parse(&format!("localhost:{}", hub.https_addr().port())).unwrap(),
        ),
        _ => cs,
    };
    timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .transport(transport)
            .retry_policy(RetryPolicy::default().with_max_attempts(Some(1)))
            .x509_pem(&issued.cert_pem, &issued.key_pem)?
            .connect(),
    )
    .await
    .expect("the connect attempt ends in time")
}

async fn assert_refused(hub: &LocalHub, cs: DeviceConnectionString, issued: &Issued) {
    let err = connect(hub, cs, issued, Transport::Mqtt)
        .await
        .expect_err("the hub refuses the certificate");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("thumbprint"),
        "says what to do: {err}"
    );
}

/// A self-signed device connects with the certificate the hub issued, sends telemetry and
/// receives a cloud-to-device message; a SAS device on the same port is unaffected.
#[tokio::test]
async fn self_signed_device_sends_and_receives() {
    let hub = LocalHub::builder().start().await.unwrap();
    let sas = hub.create_device("sas-dev").unwrap();
    let sas_client = timeout(
        WAIT,
        DeviceClient::builder(sas)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
    let device = hub.create_x509_device("x509-dev").unwrap();
    let mut telemetry = hub.telemetry();
    let issued = Issued {
        cert_pem: device.certificate_pem.clone(),
        key_pem: device.private_key_pem.clone(),
    };
    let client = connect(
        &hub,
        device.connection_string.clone(),
        &issued,
        Transport::Mqtt,
    )
    .await
    .unwrap();
    assert!(hub.is_connected("x509-dev"));
    client
        .send_message(Message::new("from x509"))
        .await
        .unwrap();
    let seen = timeout(WAIT, telemetry.recv()).await.unwrap().unwrap();
    assert_eq!(seen.device_id, "x509-dev");
    assert_eq!(seen.message.body_str(), Some("from x509"));
    hub.enqueue_c2d("x509-dev", Message::new("to x509"))
        .unwrap();
    let received = timeout(WAIT, client.receive_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.body_str(), Some("to x509"));
    sas_client
        .send_message(Message::new("still here"))
        .await
        .unwrap();
    assert!(hub.is_connected("sas-dev"));
}

/// Thumbprints are SHA-1 or SHA-256 hex in any case, primary or secondary.
#[tokio::test]
async fn thumbprints_match_in_either_hash_and_any_case() {
    let hub = LocalHub::builder().start().await.unwrap();
    let issued = self_signed(leaf_params("not-the-device-id"));
    let prints = ClientCertificate::from_pem(&issued.cert_pem, &issued.key_pem)
        .unwrap()
        .thumbprints()
        .clone();
    let cases = [
        ("sha256-lower", prints.sha256.to_lowercase(), None),
        ("sha1-secondary", "00".repeat(20), Some(prints.sha1.clone())),
    ];
    for (id, primary, secondary) in cases {
        let cs = hub
            .create_self_signed_device(id, &primary, secondary.as_deref())
            .unwrap();
        let client = connect(&hub, cs, &issued, Transport::Mqtt).await.unwrap();
        assert!(hub.is_connected(id), "{id}");
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn ca_signed_device_connects_over_mqtt_and_websockets() {
    let ca = test_ca("test root CA");
    let hub = LocalHub::builder()
        .x509_ca_pem(ca.pem.clone())
        .start()
        .await
        .unwrap();
    for (id, transport) in [("ca-dev", Transport::Mqtt), ("ca-ws", Transport::WebSocket)] {
        let cs = hub.create_ca_signed_device(id).unwrap();
        let issued = signed_by(&ca, leaf_params(id));
        let client = connect(&hub, cs, &issued, transport).await.unwrap();
        assert!(hub.is_connected(id), "{id}");
        client.send_message(Message::new("hi")).await.unwrap();
    }
}

#[tokio::test]
async fn self_signed_device_connects_over_websockets() {
    let hub = LocalHub::builder().start().await.unwrap();
    let device = hub.create_x509_device("ws-dev").unwrap();
    let issued = Issued {
        cert_pem: device.certificate_pem,
        key_pem: device.private_key_pem,
    };
    let client = connect(
        &hub,
        device.connection_string,
        &issued,
        Transport::WebSocket,
    )
    .await
    .unwrap();
    client.send_message(Message::new("over ws")).await.unwrap();
    assert!(hub.is_connected("ws-dev"));
    let wrong = self_signed(leaf_params("ws-dev"));
    let cs = hub
        .create_self_signed_device("ws-wrong", &"AB".repeat(20), None)
        .unwrap();
    let err = connect(&hub, cs, &wrong, Transport::WebSocket)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}

/// Wrong thumbprint, unknown CA, CN ≠ device id, a SAS device presenting a certificate: each
/// is CONNACK 5, reported as `Unauthorized`; other devices keep working.
#[tokio::test]
async fn wrong_certificates_are_refused() {
    let ca = test_ca("verified CA");
    let other_ca = test_ca("unknown CA");
    let hub = LocalHub::builder()
        .x509_ca_pem(ca.pem.clone())
        .start()
        .await
        .unwrap();
    let good = hub.create_x509_device("good").unwrap();
    let good_issued = Issued {
        cert_pem: good.certificate_pem.clone(),
        key_pem: good.private_key_pem.clone(),
    };
    let good_client = connect(
        &hub,
        good.connection_string.clone(),
        &good_issued,
        Transport::Mqtt,
    )
    .await
    .unwrap();

    // Wrong thumbprint: another certificate than the registered one.
    let cs = hub
        .create_self_signed_device("thumb", &good.thumbprints.sha1, None)
        .unwrap();
    assert_refused(&hub, cs, &self_signed(leaf_params("thumb"))).await;

    // A chain to a CA the hub has not verified.
    let cs = hub.create_ca_signed_device("unknown-ca").unwrap();
    assert_refused(&hub, cs, &signed_by(&other_ca, leaf_params("unknown-ca"))).await;

    // Signed by the verified CA, but CN is not the device id.
    let cs = hub.create_ca_signed_device("cn-dev").unwrap();
    assert_refused(&hub, cs, &signed_by(&ca, leaf_params("someone-else"))).await;

    // A SAS device presenting a (verified) certificate and no password.
    hub.create_device("sas-only").unwrap();
    assert_refused(
        &hub,
        x509_cs(&hub, "sas-only"),
        &signed_by(&ca, leaf_params("sas-only")),
    )
    .await;

    // The good device was never disturbed, and a SAS device still connects on the port.
    assert!(hub.is_connected("good"));
    good_client.send_message(Message::new("ok")).await.unwrap();
    let sas = hub.create_device("sas-after").unwrap();
    timeout(
        WAIT,
        DeviceClient::builder(sas)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
}

/// The client refuses to dial with an expired or not-yet-valid certificate and says why.
#[tokio::test]
async fn the_client_checks_the_validity_dates_first() {
    let hub = LocalHub::builder().start().await.unwrap();
    let mut expired = leaf_params("dates");
    expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let mut future = leaf_params("dates");
    future.not_before = rcgen::date_time_ymd(2999, 1, 1);
    future.not_after = rcgen::date_time_ymd(3000, 1, 1);
    let cs = hub
        .create_self_signed_device("dates", &"AB".repeat(20), None)
        .unwrap();
    for (params, says) in [(expired, "expired"), (future, "not valid before")] {
        let err = connect(&hub, cs.clone(), &self_signed(params), Transport::Mqtt)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCertificate, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[tokio::test]
async fn x509_strings_need_a_certificate_and_sas_strings_refuse_one() {
    let hub = LocalHub::builder().start().await.unwrap();
    let device = hub.create_x509_device("needs-cert").unwrap();
    let err = DeviceClient::builder(device.connection_string.clone())
        .trust_ca_pem(hub.ca_pem())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConnectionString);
    assert!(err.to_string().contains("x509_pem"), "{err}");
    let sas = hub.create_device("sas-dev").unwrap();
    let err = DeviceClient::builder(sas)
        .x509_pem(&device.certificate_pem, &device.private_key_pem)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConnectionString);
    let err = ClientCertificate::from_pem(&device.certificate_pem, "not a key").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCertificate);
}

// ---- the hub's own checks, with a raw MQTT client that presents any certificate ----------

fn raw_tls_config(hub: &LocalHub, issued: &Issued) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(hub.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// Connects with `issued` as the TLS client certificate and `password` (empty: none);
/// returns the CONNACK code.
async fn raw_connect(
    hub: &LocalHub,
    cs: &DeviceConnectionString,
    issued: &Issued,
    password: &str,
) -> ConnectReturnCode {
    let tcp = TcpStream::connect(hub.mqtt_addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(raw_tls_config(hub, issued))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut client = RawClient::over(tls);
    client
        .send(connect_packet(cs.device_id(), &username(cs), password, 60))
        .await;
    match client.recv().await {
        Packet::ConnAck(ack) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The hub checks the dates by its own clock, whatever the client checked.
#[tokio::test]
async fn the_hub_refuses_expired_and_not_yet_valid_certificates() {
    let hub = LocalHub::builder().start().await.unwrap();
    let mut expired = leaf_params("dated");
    expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let mut future = leaf_params("dated");
    future.not_before = rcgen::date_time_ymd(2999, 1, 1);
    future.not_after = rcgen::date_time_ymd(3000, 1, 1);
    for (n, params) in [expired, future].into_iter().enumerate() {
        let issued = self_signed(params);
        let prints = ClientCertificate::from_pem(&issued.cert_pem, &issued.key_pem)
            .unwrap()
            .thumbprints()
            .clone();
        let id = format!("dated-{n}");
        let cs = hub
            .create_self_signed_device(&id, &prints.sha1, None)
            .unwrap();
        let code = raw_connect(&hub, &cs, &issued, "").await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{id}");
    }
    // Registered and in date: accepted by the same path.
    let good = self_signed(leaf_params("dated-ok"));
    let prints = ClientCertificate::from_pem(&good.cert_pem, &good.key_pem)
        .unwrap()
        .thumbprints()
        .clone();
    let cs = hub
        .create_self_signed_device("dated-ok", &prints.sha256, None)
        .unwrap();
    assert_eq!(
        raw_connect(&hub, &cs, &good, "").await,
        ConnectReturnCode::Success
    );
}

/// A certificate device that sends a SAS token as its password is refused, even with its
/// registered certificate; a SAS device that also presents a certificate with a valid token
/// is accepted (the token authenticates it).
#[tokio::test]
async fn passwords_decide_between_sas_and_certificate() {
    let hub = LocalHub::builder().start().await.unwrap();
    let device = hub.create_x509_device("cert-dev").unwrap();
    let issued = Issued {
        cert_pem: device.certificate_pem,
        key_pem: device.private_key_pem,
    };
    let sas_cs = hub.create_device("sas-dev").unwrap();
    // A token signed for the certificate device with some key (it has none to sign with).
    let forged: DeviceConnectionString = format!(
        "HostName={};DeviceId=cert-dev;SharedAccessKey=cGFzc3dvcmQ=",
        hub.host_name()
    )
    .parse()
    .unwrap();
    assert_eq!(
        raw_connect(&hub, &device.connection_string, &issued, &password(&forged)).await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(
        raw_connect(&hub, &sas_cs, &issued, &password(&sas_cs)).await,
        ConnectReturnCode::Success
    );
    assert_eq!(
        raw_connect(&hub, &sas_cs, &issued, "").await,
        ConnectReturnCode::NotAuthorized
    );
}

/// Our own registry client registers both X.509 forms over HTTPS, reads them back, and the
/// devices connect.
#[cfg(feature = "service")]
#[tokio::test]
async fn the_service_client_registers_x509_devices() {
    use iothub::protocol::Device;
    use iothub::service::RegistryManager;

    let ca = test_ca("registry CA");
    let hub = LocalHub::builder()
        .x509_ca_pem(ca.pem.clone())
        .start()
        .await
        .unwrap();
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .unwrap();
    let issued = self_signed(leaf_params("reg-self"));
    let prints = ClientCertificate::from_pem(&issued.cert_pem, &issued.key_pem)
        .unwrap()
        .thumbprints()
        .clone();
    let created = registry
        .add_device(&Device::new("reg-self").with_x509_thumbprints(prints.sha1.clone(), None))
        .await
        .unwrap();
    assert_eq!(created.authentication.kind, "selfSigned");
    assert_eq!(
        created.authentication.x509_thumbprint.primary_thumbprint,
        Some(prints.sha1.clone())
    );
    registry
        .add_device(&Device::new("reg-ca").with_certificate_authority())
        .await
        .unwrap();
    let read = registry.get_device("reg-ca").await.unwrap();
    assert_eq!(read.authentication.kind, "certificateAuthority");

    let cs = |id: &str| -> DeviceConnectionString {
        format!(
            "HostName={};DeviceId={id};x509=true;GatewayHostName=localhost:{}",
            hub.host_name(),
            hub.mqtt_addr().port()
        )
        .parse()
        .unwrap()
    };
    let _self_signed = connect(&hub, cs("reg-self"), &issued, Transport::Mqtt)
        .await
        .unwrap();
    let _ca_signed = connect(
        &hub,
        cs("reg-ca"),
        &signed_by(&ca, leaf_params("reg-ca")),
        Transport::Mqtt,
    )
    .await
    .unwrap();
    assert!(hub.is_connected("reg-self") && hub.is_connected("reg-ca"));
}
