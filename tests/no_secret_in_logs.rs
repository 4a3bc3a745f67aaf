//! No token or key reaches a log over WebSockets (issue 17 item 7): a trace-level capture of
//! an MQTT-over-WSS device and an AMQP-over-WSS back end talking to an in-process hub, with
//! the filter `iothub-local` uses (`iothub::log_targets`), holds no SAS token.
#![cfg(all(feature = "cli", feature = "device", feature = "service"))]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub::Message;
use iothub::auth::HostAndPort;
use iothub::device::{DeviceClient, Transport};
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use tokio::time::timeout;
use tracing_subscriber::prelude::*;

const WAIT: Duration = Duration::from_secs(30);

/// A log sink shared between the subscriber and the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The secret-bearing strings, plain and as tungstenite prints payloads (hex).
fn leaks(log: &str) -> Vec<String> {
    ["sig=", "SharedAccessKey=", "SharedAccessSignature"]
        .iter()
        .flat_map(|needle| [needle.to_string(), hex(needle)])
        .filter(|needle| log.contains(needle.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_leave_no_token_in_a_trace_log() {
    let everything = Captured::default();
    let kept = Captured::default();
    let hide_frames = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE
            && iothub::log_targets::websocket_frame_target(meta.target()))
    });
    let (all_sink, kept_sink) = (everything.clone(), kept.clone());
    // `try_init` also installs the `log` bridge, as `iothub-local` does: tungstenite logs
    // through the `log` facade.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || all_sink.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || kept_sink.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE)
                .with_filter(hide_frames),
        )
        .try_init()
        .unwrap();

    let hub = LocalHub::builder().start().await.unwrap();
    // A device over MQTT-over-WebSockets: its CONNECT carries the SAS token.
    let cs = hub.create_device("dev1").unwrap().with_gateway(
        HostAndPort::parse(&format!("localhost:{}", hub.https_addr().port())).unwrap(),
    );
    let device = timeout(
        WAIT,
        DeviceClient::builder(cs)
            .trust_ca_pem(hub.ca_pem())
            .transport(Transport::WebSocket)
            .connect(),
    )
    .await
    .unwrap()
    .unwrap();
    // A back end over AMQP-over-WebSockets: its CBS put-token carries the SAS token.
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_over_websockets(true)
        .build()
        .unwrap();
    timeout(
        WAIT,
        registry.send_c2d_message("dev1", Message::new("over wss").with_message_id("w1")),
    )
    .await
    .unwrap()
    .unwrap();
    let received = timeout(WAIT, device.receive_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.body_str(), Some("over wss"));
    device.close().await.unwrap();

    let everything = everything.text();
    // The capture works: unfiltered, tungstenite's frame lines do carry the token.
    assert!(
        !leaks(&everything).is_empty(),
        "the unfiltered trace log shows no frame payload: is the `log` bridge installed?"
    );
    let kept = kept.text();
    assert!(kept.contains("TRACE"), "the filtered log is at trace level");
    assert_eq!(
        leaks(&kept),
        Vec::<String>::new(),
        "a secret reached the log"
    );
}
