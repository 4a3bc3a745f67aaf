//! `RegistryManagerBuilder`'s retry policy and request timeout against an in-process local hub
//! that is stopped, or reached through a relay that refuses the first connections.
#![cfg(all(feature = "service", feature = "local-hub"))]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iothub::local_hub::LocalHub;
use iothub::service::{RegistryManager, RegistryManagerBuilder};
use iothub::{ErrorKind, Message, RetryPolicy};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);
/// Far below the default request timeout (60 s), so a failure this fast did not wait for it.
const PROMPT: Duration = Duration::from_secs(5);

fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(100))
}

/// A builder for `hub`'s AMQP endpoint (or `amqp_port` instead).
fn builder(hub: &LocalHub, amqp_port: Option<u16>) -> RegistryManagerBuilder {
    RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(amqp_port.unwrap_or(hub.amqp_addr().port()))
}

/// A hub with device `dev1`, and a builder for it; the hub is then stopped, so that its AMQP
/// port refuses connections.
async fn stopped_hub() -> RegistryManagerBuilder {
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let builder = builder(&hub, None);
    hub.shutdown().await;
    builder
}

#[tokio::test]
async fn with_one_attempt_a_send_to_a_stopped_hub_fails_with_transport_at_once() {
    let registry = stopped_hub()
        .await
        .retry_policy(fast_retry().with_max_attempts(Some(1)))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = timeout(WAIT, registry.send_c2d_message("dev1", Message::new("x")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_request_timeout_ends_the_retries_of_a_send() {
    // No attempt limit: only the request timeout ends the retries.
    let registry = stopped_hub()
        .await
        .retry_policy(fast_retry())
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = timeout(WAIT, registry.send_c2d_message("dev1", Message::new("x")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_feedback_receiver_stops_after_max_attempts_failures_in_a_row() {
    let registry = stopped_hub()
        .await
        .retry_policy(fast_retry().with_max_attempts(Some(2)))
        .build()
        .unwrap();
    let mut feedback = registry.feedback_receiver();
    for _ in 0..2 {
        let item = timeout(WAIT, feedback.recv()).await.unwrap();
        let err = item.expect("an error item").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    }
    assert!(timeout(WAIT, feedback.recv()).await.unwrap().is_none());
}

/// A TCP relay to `target` that drops its first `refuse` connections at once (the TLS
/// handshake then fails, as with a hub that is not up yet) and forwards the rest. Each
/// accepted connection is reported on the returned channel.
async fn refusing_relay(target: SocketAddr, refuse: usize) -> (u16, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            count += 1;
            let _ = seen.send(());
            if count <= refuse {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_send_retries_the_connection_until_the_hub_answers() {
    let hub = LocalHub::builder().start().await.unwrap();
    hub.create_device("dev1").unwrap();
    let (port, mut accepted) = refusing_relay(hub.amqp_addr(), 2).await;
    let registry = builder(&hub, Some(port))
        .retry_policy(fast_retry())
        .build()
        .unwrap();
    timeout(WAIT, registry.send_c2d_message("dev1", Message::new("x")))
        .await
        .unwrap()
        .unwrap();
    let mut connections = 0;
    while accepted.try_recv().is_ok() {
        connections += 1;
    }
    assert_eq!(
        connections, 3,
        "two refused attempts, then one that went through"
    );
    assert_eq!(hub.c2d_queue_len("dev1"), Some(1));
}
