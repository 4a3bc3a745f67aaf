//! `SSL_CERT_FILE` naming a missing file is reported, not silently ignored: rustls-native-certs
//! reads only that file when the variable is set, so the client would trust no system root.
//!
//! The variable is process-wide and the trusted roots are loaded once per process, so this
//! binary holds this one test.
#![cfg(all(feature = "device", feature = "service", feature = "local-hub"))]

use iothub::ErrorKind;
use iothub::device::DeviceClient;
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;

#[tokio::test]
async fn a_missing_ssl_cert_file_is_reported_by_device_and_service_clients() {
    let missing =
        std::env::temp_dir().join(format!("iothub-no-such-bundle-{}.pem", std::process::id()));
    // SAFETY: the only test of this binary, before any thread reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", &missing) };
    let hub = LocalHub::builder().start().await.unwrap();
    let cs = hub.create_device("dev1").unwrap();

    let err = DeviceClient::builder(cs)
        .trust_ca_pem(hub.ca_pem())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("SSL_CERT_FILE={}", missing.display())),
        "{text}"
    );
    assert!(text.contains("unset it"), "says what to do: {text}");
    assert!(!text.contains("  "), "one space between words: {text}");

    let result = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .build();
    let err = match result {
        Err(e) => e,
        Ok(registry) => registry.get_device("dev1").await.unwrap_err(),
    };
    assert!(err.to_string().contains("SSL_CERT_FILE="), "{err}");
}
