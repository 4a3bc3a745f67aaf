//! Errors that say what to do: the texts and kinds a user sees when the hub's CA is not
//! trusted, the credentials are refused, the retry policy gives up, the client was closed, and
//! the back end's policy token is refused; and what the hub logs about a refused device.
#![cfg(all(feature = "device", feature = "service", feature = "local-hub"))]

use std::time::Duration;

use iothub::RetryPolicy;
use iothub::device::{CloseReason, ConnectionState, DeviceClient};
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use iothub::{ErrorKind, Message};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

/// The `host:port` a device of `hub` dials (its connection strings' `GatewayHostName`).
fn endpoint(hub: &LocalHub) -> String {
    format!("localhost:{}", hub.mqtt_addr().port())
}

/// A CA certificate (PEM) named unlike the hub's, which signed nothing the hub serves.
fn unrelated_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn an_untrusted_hub_certificate_names_the_ca_to_trust_and_the_endpoint() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    // A CA that signed nothing here: UnknownIssuer.
    let err = timeout(
        WAIT,
        DeviceClient::builder(cs.clone())
            .trust_ca_pem(unrelated_ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let text = err.to_string();
    assert!(text.contains(&endpoint(&hub)), "names host:port: {text}");
    assert!(
        text.contains("IOTHUB_CA_FILE") && text.contains("SSL_CERT_FILE"),
        "{text}"
    );
    assert!(!text.contains("  "), "one space between words: {text}");

    // The CA of an earlier hub with the same name (a restart without --state-dir): the
    // signature does not verify.
    let earlier = LocalHub::builder().start().await.unwrap();
    let err = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(earlier.ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&endpoint(&hub)), "{text}");
    assert!(
        text.contains("--state-dir") || text.contains("IOTHUB_CA_FILE"),
        "says to read the hub's CA again: {text}"
    );
    assert!(!text.contains("  "), "one space between words: {text}");

    // The back end's registry calls say the same.
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(unrelated_ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap();
    let err = registry.get_device("dev1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.to_string().contains("IOTHUB_CA_FILE"), "{err}");
}

#[tokio::test]
async fn a_refused_device_hears_the_possible_causes() {
    let hub = LocalHub::builder().start().await.unwrap();
    let real = hub.create_device("dev1").unwrap().to_string();
    let unknown = real.replace("DeviceId=dev1", "DeviceId=nobody");
    let wrong_key = {
        let key_start = real.find("SharedAccessKey=").unwrap() + "SharedAccessKey=".len();
        let key_end = real[key_start..]
            .find(';')
            .map_or(real.len(), |i| key_start + i);
        format!(
            "{}{}{}",
            &real[..key_start],
            "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgISE=",
            &real[key_end..]
        )
    };
    for cs in [unknown, wrong_key] {
        let err = timeout(
            WAIT,
            DeviceClient::from_connection_string(&cs)
                .unwrap()
                .trust_ca_pem(hub.ca_pem())
                .connect(),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
        let text = err.to_string();
        assert!(text.contains(&endpoint(&hub)), "{text}");
        for cause in ["not registered", "disabled", "wrong or expired"] {
            assert!(text.contains(cause), "names '{cause}': {text}");
        }
        assert!(!text.contains("d3Jvbmcga2V5"), "no key in the text");
    }
}

#[tokio::test]
async fn a_retry_policy_that_gives_up_is_its_own_state_and_error() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    let endpoint = endpoint(&hub);
    let client = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .retry_policy(
                RetryPolicy::new()
                    .with_initial_delay(Duration::from_millis(10))
                    .with_max_delay(Duration::from_millis(20))
                    .with_max_attempts(Some(2)),
            )
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
    let mut state = client.connection_state();
    hub.shutdown().await;
    let closed = timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Closed(_))),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    match closed {
        ConnectionState::Closed(CloseReason::RetriesExhausted {
            attempts,
            last_error,
        }) => {
            assert_eq!(attempts, 2);
            assert!(last_error.contains(&endpoint), "{last_error}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    let err = client.send_message(Message::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
    let err = client.receive_message().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
    // The twin and method calls say the same, not a bare `Closed`.
    let err = client.get_twin().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
    let err = client
        .update_reported_properties(serde_json::json!({"a": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
    let err = client.method_requests().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
    let err = client.desired_property_updates().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RetriesExhausted, "{err}");
}

#[tokio::test]
async fn receive_after_close_is_closed_even_with_a_message_buffered() {
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();
    for i in 0..3 {
        hub.enqueue_c2d("dev1", Message::new(format!("m{i}")))
            .unwrap();
    }
    let client = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
    let first = timeout(WAIT, client.receive_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.body_str(), Some("m0"));
    client.close().await.unwrap();
    let err = client.receive_message().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    let err = client.send_message(Message::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    // Not handed over, so not acknowledged: the hub still holds them (and m0 until its
    // PUBACK is processed).
    assert!(hub.c2d_queue_len("dev1").unwrap() >= 2);
}

#[tokio::test]
async fn a_refused_policy_token_carries_the_hubs_description() {
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let good = hub.service_connection_string().to_string();
    let key_start = good.find("SharedAccessKey=").unwrap() + "SharedAccessKey=".len();
    let bad = format!(
        "{}d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgISE=",
        &good[..key_start]
    );
    let registry = RegistryManager::from_connection_string(&bad)
        .unwrap()
        .trust_ca_pem(hub.ca_pem())
        .amqp_port(hub.amqp_addr().port())
        .https_port(hub.https_addr().port())
        .retry_policy(RetryPolicy::new().with_max_attempts(Some(0)))
        .build()
        .unwrap();
    let err = timeout(WAIT, registry.send_c2d_message("dev1", Message::new("x")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(text.contains("status 401"), "{text}");
    assert!(text.contains("signature"), "the hub's description: {text}");
    assert!(text.contains("SharedAccessKey"), "what to check: {text}");
    assert!(!text.contains("d3Jvbmcga2V5"), "no key in the text");
}

/// The hub logs at info which of the causes it was (MQTT 3.1.1 cannot tell the device).
#[cfg(feature = "cli")]
#[tokio::test]
async fn the_hub_logs_which_cause_refused_a_device() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    // A current-thread runtime: the hub's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap().to_string();
    hub.create_device("off").unwrap();
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build()
        .unwrap();
    let off = registry.get_device("off").await.unwrap();
    registry
        .update_device(&off.with_status(iothub::service::DeviceStatus::Disabled))
        .await
        .unwrap();
    let off_cs = hub.device_connection_string("off").unwrap().to_string();
    let key_start = cs.find("SharedAccessKey=").unwrap() + "SharedAccessKey=".len();
    let key_end = cs[key_start..]
        .find(';')
        .map_or(cs.len(), |i| key_start + i);
    let wrong_key = format!(
        "{}d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgISE={}",
        &cs[..key_start],
        &cs[key_end..]
    );
    let unknown = cs.replace("DeviceId=dev1", "DeviceId=nobody");
    for cs in [&unknown, &off_cs, &wrong_key] {
        let result = timeout(
            WAIT,
            DeviceClient::from_connection_string(cs)
                .unwrap()
                .trust_ca_pem(hub.ca_pem())
                .connect(),
        )
        .await
        .unwrap();
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unauthorized);
    }
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    for cause in [
        "device 'nobody' is not registered",
        "device 'off' is disabled",
        "wrong key",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(" INFO ") && l.contains(cause)),
            "the hub logs '{cause}' at info: {log}"
        );
    }
}

/// `iothub-local --device "dev 1"` stops with IoT Hub's id rule instead of registering an id
/// that IoT Hub would refuse.
#[cfg(feature = "cli")]
#[tokio::test]
async fn iothub_local_refuses_a_device_id_outside_the_rules() {
    let output = timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_iothub-local"))
            .args(["--mqtt-port", "0", "--https-port", "0", "--amqp-port", "0"])
            .args(["--device", "dev 1"])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("device dev 1"), "{stderr}");
    assert!(stderr.contains("contains ' '"), "{stderr}");
    assert!(
        stderr.contains("- . + % _ # * ? ! ( ) , : = @ $ '"),
        "{stderr}"
    );
}

/// The back-end example, when no device takes its messages, says the device is not connected
/// instead of a bare timeout.
#[cfg(feature = "cli")]
#[tokio::test]
async fn the_back_end_example_says_when_the_device_never_connected() {
    let hub_binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_iothub-local"));
    let sender = hub_binary.parent().unwrap().join("examples").join(format!(
        "send_cloud_to_device_message{}",
        std::env::consts::EXE_SUFFIX
    ));
    if !sender.is_file() {
        assert!(
            std::env::var_os("IOTHUB_REQUIRE_EXAMPLES").is_none_or(|v| v != "1"),
            "{} is not built",
            sender.display()
        );
        eprintln!(
            "skipped: {} is not built; `cargo test --all-features` builds the examples",
            sender.display()
        );
        return;
    }
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let ca_file =
        std::env::temp_dir().join(format!("iothub-error-hints-{}-ca.pem", std::process::id()));
    std::fs::write(&ca_file, hub.ca_pem()).unwrap();
    let output = timeout(
        WAIT,
        tokio::process::Command::new(&sender)
            .args(["--timeout", "1"])
            .env(
                "IOTHUB_CONNECTION_STRING",
                hub.service_connection_string().to_string(),
            )
            .env("IOTHUB_DEVICE_ID", "dev1")
            .env("IOTHUB_CA_FILE", &ca_file)
            .env("IOTHUB_AMQP_PORT", hub.amqp_addr().port().to_string())
            .env("IOTHUB_HTTPS_PORT", hub.https_addr().port().to_string())
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let _ = std::fs::remove_file(&ca_file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out after 1 s"), "{stderr}");
    assert!(
        stderr.contains("device 'dev1' is not connected and never took the messages"),
        "{stderr}"
    );
    assert!(stderr.contains("2 still queued"), "{stderr}");
}
