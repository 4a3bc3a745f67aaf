//! Benchmark of `RegistryManager::send_c2d_message` (the service client's C2D send over AMQP)
//! against the official SDKs, through one in-process local hub, in one run.
//!
//! No criterion: one `main`, one run, one small table on stdout.
//!
//! An in-process `LocalHub` on loopback (every port 0) with 100 registered devices, none
//! connected, so every message stays queued. IoT Hub keeps at most 50 messages per device, so a
//! run sends 5,000 messages round-robin (exactly 50 per device: the limit is reached, never
//! exceeded) and every queue is purged (`LocalHub::purge_c2d`) before each run; after each run
//! the bench checks that the hub holds all 5,000. Each sender first makes one untimed warm-up send to a 21st device (connection,
//! CBS put-token, link attach), so the figures are steady-state sends per second. Messages
//! have a 20-byte JSON body and a message id, no ack.
//!
//! Senders, each run 5 times (rounds interleaved), median reported:
//! - ours, sequential: one `RegistryManager`, each send awaited before the next;
//! - ours, 100 in flight: 100 tasks, each with a clone of the manager, taking the next index
//!   from a shared counter;
//! - Python `IoTHubRegistryManager.send_c2d_message` (azure-iot-hub 2.7.0, uamqp; synchronous,
//!   so sequential only) — `tests/interop/py_service_bench.py`, with `IOTHUB_PYTHON`;
//! - Node `Client.send` (azure-iothub 1.16.6, rhea), awaited one by one and with 100 promises
//!   outstanding — `tests/interop/node_service_bench.js`, with `IOTHUB_NODE_MODULES` (and
//!   `IOTHUB_NODE`, default `node`).
//!
//! The peers time their own loop (process start-up and SDK import are not counted). A peer
//! whose variable is unset is skipped with a line saying so. The last column is our rate
//! divided by the peer's, at the same number in flight (above 1: ours is faster).
//!
//! ```text
//! tests/interop/setup-python.sh VENV; tests/interop/setup-node.sh DIR
//! IOTHUB_PYTHON=VENV/bin/python IOTHUB_NODE_MODULES=DIR/node_modules \
//!   cargo bench -p iothub-benches --bench service
//! ```
//!
//! Only loopback traffic; every wait is bounded by a timeout.

#[path = "../tests/interop/peer.rs"]
mod peer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iothub::Message;
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use peer::{Peer, TempFile};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Registered devices the messages are spread over.
const DEVICES: usize = 100;
/// IoT Hub's C2D queue limit: a device never holds more than this.
const QUEUE_LIMIT: usize = 50;
/// Messages per run: every device's queue filled to the limit, never beyond.
const PER_RUN: usize = DEVICES * QUEUE_LIMIT;
/// Runs per sender; the median is reported.
const ROUNDS: usize = 5;
/// Concurrent sends of the "in flight" rows.
const IN_FLIGHT: usize = 100;
/// Deadline of one run (ours) or of one peer process (`--timeout`).
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const BODY: &str = r#"{"bench":true,"n":0}"#;
const WARMUP_DEVICE: &str = "bench-warmup";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    OursSequential,
    OursInFlight,
    Python,
    NodeSequential,
    NodeInFlight,
}

impl Sender {
    const ALL: [Sender; 5] = [
        Sender::OursSequential,
        Sender::OursInFlight,
        Sender::Python,
        Sender::NodeSequential,
        Sender::NodeInFlight,
    ];

    fn label(self) -> &'static str {
        match self {
            Sender::OursSequential | Sender::OursInFlight => {
                "ours: RegistryManager::send_c2d_message"
            }
            Sender::Python => "python: azure-iot-hub send_c2d_message",
            Sender::NodeSequential | Sender::NodeInFlight => "node: azure-iothub Client.send",
        }
    }

    fn in_flight(self) -> usize {
        match self {
            Sender::OursSequential | Sender::Python | Sender::NodeSequential => 1,
            Sender::OursInFlight | Sender::NodeInFlight => IN_FLIGHT,
        }
    }

    /// Our sender at the same concurrency.
    fn ours(self) -> Sender {
        if self.in_flight() == 1 {
            Sender::OursSequential
        } else {
            Sender::OursInFlight
        }
    }
}

struct Bench {
    hub: LocalHub,
    devices: Vec<String>,
    ca: TempFile,
    registry: RegistryManager,
    python: Option<PathBuf>,
    node_modules: Option<PathBuf>,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Bench {
    fn purge(&self) {
        for id in self
            .devices
            .iter()
            .map(String::as_str)
            .chain([WARMUP_DEVICE])
        {
            self.hub.purge_c2d(id).expect("the device exists");
        }
    }

    fn queued(&self) -> usize {
        self.devices
            .iter()
            .map(|id| self.hub.c2d_queue_len(id).expect("the device exists"))
            .sum()
    }

    fn available(&self, sender: Sender) -> bool {
        match sender {
            Sender::OursSequential | Sender::OursInFlight => true,
            Sender::Python => self.python.is_some(),
            Sender::NodeSequential | Sender::NodeInFlight => self.node_modules.is_some(),
        }
    }

    /// One timed run of `PER_RUN` sends; the elapsed time of the sends alone.
    async fn run(&self, sender: Sender) -> Duration {
        self.purge();
        let elapsed = match sender {
            Sender::OursSequential => self.ours_sequential().await,
            Sender::OursInFlight => self.ours_in_flight().await,
            Sender::Python => self.python().await,
            Sender::NodeSequential | Sender::NodeInFlight => self.node(sender.in_flight()).await,
        };
        let queued = self.queued();
        assert_eq!(
            queued,
            PER_RUN,
            "{} ({} in flight): the hub holds {queued} messages, not {PER_RUN}",
            sender.label(),
            sender.in_flight()
        );
        elapsed
    }

    async fn ours_sequential(&self) -> Duration {
        self.registry
            .send_c2d_message(WARMUP_DEVICE, Message::new(BODY))
            .await
            .expect("the warm-up send");
        let start = Instant::now();
        timeout(RUN_DEADLINE, async {
            for i in 0..PER_RUN {
                let message = Message::new(BODY).with_message_id(format!("bench-{i}"));
                self.registry
                    .send_c2d_message(&self.devices[i % DEVICES], message)
                    .await
                    .expect("the hub accepts the message");
            }
        })
        .await
        .expect("the sequential run finishes in time");
        start.elapsed()
    }

    async fn ours_in_flight(&self) -> Duration {
        self.registry
            .send_c2d_message(WARMUP_DEVICE, Message::new(BODY))
            .await
            .expect("the warm-up send");
        let next = Arc::new(AtomicUsize::new(0));
        let devices = Arc::new(self.devices.clone());
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let registry = self.registry.clone();
            let next = next.clone();
            let devices = devices.clone();
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= PER_RUN {
                        break;
                    }
                    let message = Message::new(BODY).with_message_id(format!("bench-{i}"));
                    registry
                        .send_c2d_message(&devices[i % DEVICES], message)
                        .await
                        .expect("the hub accepts the message");
                }
            });
        }
        timeout(RUN_DEADLINE, async {
            while let Some(done) = tasks.join_next().await {
                done.expect("a sender task");
            }
        })
        .await
        .expect("the concurrent run finishes in time");
        start.elapsed()
    }

    fn device_ids_json(&self) -> String {
        serde_json::to_string(&self.devices).unwrap()
    }

    async fn python(&self) -> Duration {
        let python = self.python.as_ref().expect("checked by available()");
        let args: Vec<String> = vec![
            "--connection-string".into(),
            self.hub.service_connection_string().to_string(),
            "--ca-file".into(),
            self.ca.path().display().to_string(),
            "--amqp-port".into(),
            self.hub.amqp_addr().port().to_string(),
            "--device-ids".into(),
            self.device_ids_json(),
            "--warmup-device".into(),
            WARMUP_DEVICE.into(),
            "--count".into(),
            PER_RUN.to_string(),
            "--timeout".into(),
            RUN_DEADLINE.as_secs().to_string(),
        ];
        let mut peer = Peer::spawn(python, "py_service_bench.py", &args, self.ca.path());
        peer_elapsed(&mut peer).await
    }

    async fn node(&self, in_flight: usize) -> Duration {
        let node_modules = self.node_modules.as_ref().expect("checked by available()");
        let args: Vec<String> = vec![
            "--connection-string".into(),
            self.hub.amqp_connection_string().to_string(),
            "--device-ids".into(),
            self.device_ids_json(),
            "--warmup-device".into(),
            WARMUP_DEVICE.into(),
            "--count".into(),
            PER_RUN.to_string(),
            "--in-flight".into(),
            in_flight.to_string(),
            "--timeout".into(),
            RUN_DEADLINE.as_secs().to_string(),
        ];
        let mut peer =
            Peer::spawn_node(node_modules, "node_service_bench.js", &args, self.ca.path());
        peer_elapsed(&mut peer).await
    }
}

/// The peer's one result line, then its clean exit.
async fn peer_elapsed(peer: &mut Peer) -> Duration {
    let result = peer.json_line("the result line").await;
    assert_eq!(result["count"], PER_RUN, "{result}");
    let seconds = result["elapsed_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no elapsed_s in {result}"));
    peer.expect_success().await;
    Duration::from_secs_f64(seconds)
}

fn rate(elapsed: Duration) -> f64 {
    PER_RUN as f64 / elapsed.as_secs_f64()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

#[tokio::main]
async fn main() {
    let hub = LocalHub::builder()
        .mqtt_port(0)
        .https_port(0)
        .amqp_port(0)
        .start()
        .await
        .expect("the local hub starts");
    let devices: Vec<String> = (0..DEVICES).map(|i| format!("bench-{i:02}")).collect();
    for id in devices.iter().map(String::as_str).chain([WARMUP_DEVICE]) {
        hub.create_device(id).expect("the device is created");
    }
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .expect("the registry manager builds");
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let bench = Bench {
        hub,
        devices,
        ca,
        registry,
        python: env_path("IOTHUB_PYTHON"),
        node_modules: env_path("IOTHUB_NODE_MODULES"),
    };

    println!(
        "C2D sends through one in-process LocalHub (AMQP/TLS on {}), {PER_RUN} messages per run \
         over {DEVICES} devices (queues purged between runs), median of {ROUNDS} runs",
        bench.hub.amqp_addr()
    );
    if bench.python.is_none() {
        println!(
            "skipped: python azure-iot-hub (set IOTHUB_PYTHON=VENV/bin/python, see tests/interop/README.md)"
        );
    }
    if bench.node_modules.is_none() {
        println!(
            "skipped: node azure-iothub (set IOTHUB_NODE_MODULES=DIR/node_modules, see tests/interop/README.md)"
        );
    }

    let senders: Vec<Sender> = Sender::ALL
        .into_iter()
        .filter(|s| bench.available(*s))
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); senders.len()];
    for round in 1..=ROUNDS {
        for (i, sender) in senders.iter().enumerate() {
            let elapsed = bench.run(*sender).await;
            eprintln!(
                "round {round}: {} ({} in flight): {PER_RUN} in {elapsed:.3?} = {:.0} msgs/s",
                sender.label(),
                sender.in_flight(),
                rate(elapsed)
            );
            rates[i].push(rate(elapsed));
        }
    }
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    let ours = |s: Sender| {
        senders
            .iter()
            .position(|x| *x == s.ours())
            .map(|i| medians[i])
            .expect("ours always runs")
    };

    println!();
    println!(
        "{:<42} {:>9} {:>10} {:>22}",
        "sender", "in flight", "msgs/s", "ours / this (same K)"
    );
    for (sender, median) in senders.iter().zip(&medians) {
        println!(
            "{:<42} {:>9} {:>10.0} {:>21.2}x",
            sender.label(),
            sender.in_flight(),
            median,
            ours(*sender) / median
        );
    }
    let speedup = ours(Sender::OursInFlight) / ours(Sender::OursSequential);
    println!("ours: {IN_FLIGHT} in flight vs sequential: {speedup:.2}x");
    let Bench { hub, .. } = bench;
    hub.shutdown().await;
}
