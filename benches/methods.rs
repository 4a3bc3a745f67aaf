//! Benchmark of direct-method round trips through one in-process local hub: ours
//! (`RegistryManager::invoke_device_method` over HTTPS → the hub → our `DeviceClient` over
//! MQTT, answering with the request's payload) against the official Python pair (azure-iot-hub
//! 2.7.0 `invoke_device_method` → azure-iot-device 2.14.0) and the official Node pair
//! (azure-iothub 1.16.6 `Client.invokeDeviceMethod` → azure-iot-device 1.18.4 with
//! azure-iot-device-mqtt 1.16.4), in the same run.
//!
//! No criterion: one `main`, one run, one small table on stdout.
//!
//! Each caller makes `CALLS` calls of method `echo` with a small JSON payload, one at a time
//! (the official SDKs' service clients are request/response over HTTPS, and the Python one is
//! synchronous), after one untimed warm-up call; each pair has its own device. A round runs every
//! pair once; `ROUNDS` rounds, interleaved. Reported per pair: round trips per second (min,
//! median, max over rounds) and the p99 latency of all calls of the median round, and the
//! ratio ours / theirs of the medians (above 1: ours is faster).
//!
//! The peers (`tests/interop/py_methods_bench.py`, `tests/interop/node_methods_bench.js`) time
//! their own loop (process start-up, SDK import and connection are not counted). A peer whose
//! variable is unset is skipped with a line saying so.
//!
//! ```text
//! IOTHUB_PYTHON=VENV/bin/python IOTHUB_NODE_MODULES=DIR/node_modules \
//!   cargo bench -p iothub-benches --bench methods
//! ```
//!
//! Only loopback traffic; every wait is bounded by a timeout.
//!
//! One run (2026-12-01, 2 shared cores, release build), calls/s min / median / max, p99 of the
//! median round: ours 5,738 / 9,643 / 11,821, p99 0.19 ms; Python 19 / 19 / 20, p99 64 ms
//! (ours 497x); Node 574 / 834 / 898, p99 4.5 ms (ours 11.6x).

#[path = "../tests/interop/peer.rs"]
mod peer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use iothub::device::{DeviceClient, MethodRequests};
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use peer::{Peer, TempFile, python_device_connection_string};
use serde_json::json;
use tokio::time::timeout;

/// Calls per round and pair.
const CALLS: usize = 300;
/// Rounds; min, median and max are reported.
const ROUNDS: usize = 5;
/// Deadline of one round of one pair.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pair {
    Ours,
    Python,
    Node,
}

impl Pair {
    fn label(self) -> &'static str {
        match self {
            Pair::Ours => "ours: RegistryManager -> DeviceClient",
            Pair::Python => "python: azure-iot-hub -> azure-iot-device",
            Pair::Node => "node: azure-iothub -> azure-iot-device",
        }
    }

    fn device_id(self) -> &'static str {
        match self {
            Pair::Ours => "bench-ours",
            Pair::Python => "bench-python",
            Pair::Node => "bench-node",
        }
    }
}

/// One round of one pair: the time of the loop and each call's latency.
struct Round {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
        sorted[index.min(sorted.len() - 1)]
    }
}

struct Bench {
    hub: LocalHub,
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

/// Answers every `echo` with 200 and the request's payload.
fn echo(mut requests: MethodRequests) {
    tokio::spawn(async move {
        while let Ok(request) = requests.recv().await {
            let payload = request.payload().clone();
            let _ = request.respond(200, payload).await;
        }
    });
}

impl Bench {
    async fn call(&self, n: i64) {
        let payload = json!({ "n": n });
        let result = self
            .registry
            .invoke_device_method(
                Pair::Ours.device_id(),
                "echo",
                payload.clone(),
                Duration::from_secs(30),
                Duration::from_secs(10),
            )
            .await
            .expect("the method call succeeds");
        assert_eq!((result.status, &result.payload), (200, &payload));
    }

    async fn ours(&self) -> Round {
        self.call(-1).await;
        let mut latencies = Vec::with_capacity(CALLS);
        let start = Instant::now();
        timeout(RUN_DEADLINE, async {
            for n in 0..CALLS {
                let t0 = Instant::now();
                self.call(n as i64).await;
                latencies.push(t0.elapsed());
            }
        })
        .await
        .expect("the round finishes in time");
        Round {
            elapsed: start.elapsed(),
            latencies,
        }
    }

    async fn python(&self) -> Round {
        let python = self.python.as_ref().expect("checked");
        let device = self
            .hub
            .device_connection_string(Pair::Python.device_id())
            .expect("registered")
            .to_string();
        let args: Vec<String> = vec![
            "--device-connection-string".into(),
            python_device_connection_string(&device),
            "--service-connection-string".into(),
            self.hub.service_connection_string().to_string(),
            "--ca-file".into(),
            self.ca.path().display().to_string(),
            "--mqtt-port".into(),
            self.hub.mqtt_addr().port().to_string(),
            "--https-port".into(),
            self.hub.https_addr().port().to_string(),
            "--count".into(),
            CALLS.to_string(),
            "--timeout".into(),
            RUN_DEADLINE.as_secs().to_string(),
        ];
        let mut peer = Peer::spawn(python, "py_methods_bench.py", &args, self.ca.path());
        peer_round(&mut peer).await
    }

    async fn node(&self) -> Round {
        let node_modules = self.node_modules.as_ref().expect("checked");
        let device = self
            .hub
            .device_connection_string(Pair::Node.device_id())
            .expect("registered")
            .to_string();
        let args: Vec<String> = vec![
            "--device-connection-string".into(),
            device,
            "--service-connection-string".into(),
            self.hub.service_connection_string().to_string(),
            "--ca-file".into(),
            self.ca.path().display().to_string(),
            "--https-port".into(),
            self.hub.https_addr().port().to_string(),
            "--count".into(),
            CALLS.to_string(),
            "--timeout".into(),
            RUN_DEADLINE.as_secs().to_string(),
        ];
        let mut peer =
            Peer::spawn_node(node_modules, "node_methods_bench.js", &args, self.ca.path());
        peer_round(&mut peer).await
    }

    async fn run(&self, pair: Pair) -> Round {
        match pair {
            Pair::Ours => self.ours().await,
            Pair::Python => self.python().await,
            Pair::Node => self.node().await,
        }
    }
}

/// The peer's result line, then its clean exit.
async fn peer_round(peer: &mut Peer) -> Round {
    let result = peer.json_line("the result line").await;
    assert_eq!(result["count"], CALLS, "{result}");
    let elapsed = result["elapsed_s"].as_f64().expect("elapsed_s");
    let latencies = result["latencies_ms"]
        .as_array()
        .expect("latencies_ms")
        .iter()
        .map(|ms| Duration::from_secs_f64(ms.as_f64().expect("a number") / 1000.0))
        .collect();
    peer.expect_success().await;
    Round {
        elapsed: Duration::from_secs_f64(elapsed),
        latencies,
    }
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
    for pair in [Pair::Ours, Pair::Python, Pair::Node] {
        hub.create_device(pair.device_id())
            .expect("the device is created");
    }
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .expect("the registry manager builds");
    let device = DeviceClient::builder(
        hub.device_connection_string(Pair::Ours.device_id())
            .expect("registered"),
    )
    .trust_ca_pem(hub.ca_pem())
    .connect()
    .await
    .expect("our device connects");
    echo(device.method_requests().await.expect("subscribed"));
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let bench = Bench {
        hub,
        ca,
        registry,
        python: env_path("IOTHUB_PYTHON"),
        node_modules: env_path("IOTHUB_NODE_MODULES"),
    };

    println!(
        "Direct-method round trips through one in-process LocalHub (HTTPS {}, MQTT {}), {CALLS} \
         sequential calls per round, {ROUNDS} rounds",
        bench.hub.https_addr(),
        bench.hub.mqtt_addr()
    );
    let mut pairs = vec![Pair::Ours];
    match bench.python {
        Some(_) => pairs.push(Pair::Python),
        None => println!("skipped: python pair (set IOTHUB_PYTHON, see tests/interop/README.md)"),
    }
    match bench.node_modules {
        Some(_) => pairs.push(Pair::Node),
        None => {
            println!("skipped: node pair (set IOTHUB_NODE_MODULES, see tests/interop/README.md)")
        }
    }

    let mut rounds: Vec<Vec<Round>> = pairs.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (i, pair) in pairs.iter().enumerate() {
            let result = bench.run(*pair).await;
            eprintln!(
                "round {round}: {}: {:.0} calls/s, p99 {:.2?}",
                pair.label(),
                result.rate(),
                result.p99()
            );
            rounds[i].push(result);
        }
    }
    for pair_rounds in &mut rounds {
        pair_rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    }
    let median = |i: usize| &rounds[i][rounds[i].len() / 2];
    let ours = median(0).rate();

    println!();
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>10} {:>13}",
        "pair", "min/s", "median/s", "max/s", "p99", "ours / this"
    );
    for (i, pair) in pairs.iter().enumerate() {
        let all = &rounds[i];
        println!(
            "{:<44} {:>9.0} {:>9.0} {:>9.0} {:>10.2?} {:>12.2}x",
            pair.label(),
            all[0].rate(),
            median(i).rate(),
            all[all.len() - 1].rate(),
            median(i).p99(),
            ours / median(i).rate()
        );
    }
    drop(device);
    let Bench { hub, .. } = bench;
    hub.shutdown().await;
}
