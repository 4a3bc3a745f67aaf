//! Service calls against a peer that accepts TCP and never answers (issue 17): each gives a
//! result within its documented deadline. Tokio time is paused: it advances while every task
//! waits on the silent peer.
#![cfg(feature = "local-hub")]

use std::time::Duration;

use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use iothub::{ErrorKind, Message, RetryPolicy};
use tokio::time::{Instant, timeout};

/// A listener whose connections complete the TCP handshake (the kernel's backlog) and are
/// never read or answered.
fn silent_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

async fn silent_registry(
    listener: &std::net::TcpListener,
    amqp_over_websockets: bool,
) -> RegistryManager {
    // A hub only for a valid CA and connection string; its ports are not used.
    let hub = LocalHub::builder().start().await.unwrap();
    let port = listener.local_addr().unwrap().port();
    RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(port)
        .amqp_port(port)
        .amqp_over_websockets(amqp_over_websockets)
        .request_timeout(Duration::from_secs(5))
        .retry_policy(RetryPolicy::default().with_max_attempts(Some(1)))
        .build()
        .unwrap()
}

/// The C2D send ends within its request timeout and the feedback receiver within its open
/// deadline (30 s).
async fn amqp_calls_end(registry: &RegistryManager) {
    let started = Instant::now();
    let sent = timeout(
        Duration::from_secs(60),
        registry.send_c2d_message("dev1", Message::new("x")),
    )
    .await
    .expect("send_c2d_message gave a result");
    assert!(sent.is_err());
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let mut feedback = registry.feedback_receiver();
    let batch = timeout(Duration::from_secs(120), feedback.recv())
        .await
        .expect("the feedback receiver gave a result");
    let error = batch.expect("an item").expect_err("an error");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(
        started.elapsed() <= Duration::from_secs(31),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn every_service_call_ends_against_a_silent_peer() {
    let listener = silent_listener();
    let registry = silent_registry(&listener, false).await;

    let started = Instant::now();
    let got = timeout(Duration::from_secs(60), registry.get_device("dev1"))
        .await
        .expect("get_device gave a result");
    assert!(got.is_err());
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    amqp_calls_end(&registry).await;
}

/// AMQP over WebSockets has the same deadlines as AMQP over TLS: the TLS handshake and the
/// WebSocket upgrade to a silent peer count against the same open deadline.
#[tokio::test(start_paused = true)]
async fn amqp_over_websockets_ends_against_a_silent_peer() {
    let listener = silent_listener();
    let registry = silent_registry(&listener, true).await;
    amqp_calls_end(&registry).await;
}
