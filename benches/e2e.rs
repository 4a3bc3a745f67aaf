//! End-to-end benchmark: C2D (`RegistryManager` → hub → `DeviceClient`) and telemetry
//! (`DeviceClient` → hub → `LocalHub::telemetry()`) through one in-process local hub, as users
//! see them, at 8 and at 10,000 registered devices.
//!
//! No criterion: one `main`, one run, tables on stdout.
//!
//! **Where the CPU goes.** The hub, the senders and the receivers run in this one process, each
//! on its own Tokio runtime with named threads: the hub on `e2e-hub` (1 worker, as
//! `iothub-local` has by default; `IOTHUB_E2E_HUB_WORKERS=N` measures `--worker-threads N`;
//! the hub's tasks are spawned there because `LocalHub::builder().start()` runs there), the eight `DeviceClient`s on `e2e-dev` (1 worker;
//! each client's connection task is spawned where `connect()` runs), the `RegistryManager` and
//! the telemetry reader on `e2e-svc` (1 worker). Before and after each timed run the bench sums
//! each runtime's threads' CPU time from `/proc/self/task/<tid>/schedstat` (nanoseconds on
//! CPU; `stat`'s utime + stime in clock ticks where schedstat is missing) and divides by the
//! messages of the run: CPU µs per message for the hub, the sender (service side for C2D,
//! device side for telemetry) and the receiver. The orchestrating thread (`main`) is not
//! counted. *Hub runs* per message is how many times a hub thread was put on a CPU
//! (`schedstat`'s third field: each wake-up, and each return after preemption). On a VM where
//! waking a thread on another, idle CPU is costly, the hub's CPU per message follows it more
//! than it follows the hub's own work.
//!
//! **Scenarios**, each message a 16-byte body holding its sequence number and its send time
//! (ns since a common `Instant`); latency = receipt − send start, where receipt is
//! `DeviceClient::receive_message()` (C2D, `AckMode::Auto`) or the telemetry stream (telemetry)
//! returning it:
//! - *sequential*: one sender, each send awaited before the next (C2D: the hub accepted it;
//!   telemetry: PUBACK), 2,000 messages to one device; the receiver runs concurrently; rate =
//!   messages / (last receipt − first send);
//! - *paced 1,000/s*: the same, one send per tick of a 1 ms interval (a late tick is delayed, not
//!   bunched), 2,000 messages: the latency figures are the ones the issue's "p99 at 1,000
//!   msg/s" target reads;
//! - *concurrent*: 32 sending tasks, message n to connected device n mod 8, 8,000 messages.
//!
//! Registry sizes: 8 registered devices (all connected), then 9,992 more idle registered
//! devices (never connected) are created for the 10,000 case and deleted after it, so every
//! round measures both sizes with the same clients; each scenario runs at both sizes back to
//! back, 8 first in odd rounds and 10,000 first in even ones (unpinned, the first sequential run
//! of a pair often ran up to 1.5× faster than the second, whichever size it had, even after an
//! untimed run of its own; an even number of rounds gives each size that place equally often).
//! A `QueueFull` refusal (IoT Hub's 50-message
//! queue) makes the C2D sender retry after a yield and is counted. One untimed warm-up run of
//! every scenario comes first. 6 rounds; min / median / max of each figure over the rounds.
//!
//! **The official SDK pairs** (when `IOTHUB_PYTHON` / `IOTHUB_NODE_MODULES` are set, see
//! tests/interop/README.md), sequential C2D at 8 registered devices, every round: the Python pair
//! is `tests/interop/py_service_bench.py` (azure-iot-hub `send_c2d_message`, sequential)
//! sending 50 messages (IoT Hub's queue limit: the peers do not retry on `QueueFull`) to a
//! device that `tests/interop/py_device.py` (azure-iot-device) is receiving; the Node pair `node_service_bench.js --in-flight 1` with `node_device.js`. The
//! sender times its own loop (`elapsed_s`, start-up excluded); the pair's time runs from the
//! start of that loop (the instant its result line arrived minus `elapsed_s`) to the instant the
//! receiver printed its 50th message. Ratio = our sequential C2D rate / the pair's, ours
//! measured again (8 devices, 2,000 messages) right before each pair run so that both see the
//! same machine. Each peer device is registered only for its run; a failed peer run is reported
//! and skipped. Telemetry is not compared with the peers here.
//!
//! ```text
//! IOTHUB_PYTHON=VENV/bin/python IOTHUB_NODE_MODULES=DIR/node_modules \
//!   cargo bench -p iothub-benches --bench e2e
//! ```
//!
//! For a quicker look, `IOTHUB_E2E_ROUNDS=N` sets the rounds, `IOTHUB_E2E_FLOW=c2d|telemetry`
//! and `IOTHUB_E2E_MODE=sequential|paced|concurrent` pick scenarios.
//!
//! Sequential figures depend on where the scheduler puts the three runtimes' threads: on a
//! 2-CPU VM each cross-CPU wake-up is costly, and sequential C2D runs in a fast mode (about
//! 21 µs of hub CPU per message) or a slow one (about 40 µs) from one run to the next. Under
//! `taskset -c 0` (peers included) every thread shares one CPU and the hub's figures hold
//! still; the peers lose a CPU there too, so read the pair ratios from an unpinned run.
//!
//! Linux only (`/proc`); only loopback traffic; every wait is bounded by a timeout.

#[path = "e2e/cpu.rs"]
mod cpu;
#[path = "e2e/flows.rs"]
mod flows;
#[path = "e2e/pairs.rs"]
mod pairs;
#[path = "../tests/interop/peer.rs"]
mod peer;
mod support;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpu::CpuSample;
use flows::{read_telemetry, receive_c2d, send_c2d, send_telemetry};
use iothub::device::{AckMode, DeviceClient};
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use pairs::{Pair, Peers, env_path, pair_rate};
use peer::TempFile;
use support::{BoxError, Result};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Connected devices: C2D receivers and telemetry senders.
const DEVICES: usize = 8;
/// The large registry: `DEVICES` connected plus idle ones.
const LARGE_REGISTRY: usize = 10_000;
const ROUNDS: usize = 6;
const SEQUENTIAL_MESSAGES: usize = 2_000;
const PACED_MESSAGES: usize = 2_000;
const PACE: Duration = Duration::from_millis(1);
const CONCURRENT_MESSAGES: usize = 8_000;
const CONCURRENT_TASKS: usize = 32;
/// Messages of every scenario in the warm-up.
const WARMUP_MESSAGES: usize = 200;
/// The longest one run may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

const HUB_THREADS: &str = "e2e-hub";
const DEVICE_THREADS: &str = "e2e-dev";
const SERVICE_THREADS: &str = "e2e-svc";

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    C2d,
    Telemetry,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Sequential,
    Paced,
    Concurrent,
}

impl Mode {
    /// The tasks sending at once.
    fn sending_tasks(self) -> usize {
        if self == Mode::Concurrent {
            CONCURRENT_TASKS
        } else {
            1
        }
    }

    fn messages(self) -> usize {
        match self {
            Mode::Sequential => SEQUENTIAL_MESSAGES,
            Mode::Paced => PACED_MESSAGES,
            Mode::Concurrent => CONCURRENT_MESSAGES,
        }
    }
}

const SCENARIOS: [(Flow, Mode); 6] = [
    (Flow::C2d, Mode::Sequential),
    (Flow::C2d, Mode::Paced),
    (Flow::C2d, Mode::Concurrent),
    (Flow::Telemetry, Mode::Sequential),
    (Flow::Telemetry, Mode::Paced),
    (Flow::Telemetry, Mode::Concurrent),
];

fn scenario_label(flow: Flow, mode: Mode) -> String {
    let flow = match flow {
        Flow::C2d => "c2d",
        Flow::Telemetry => "telemetry",
    };
    let mode = match mode {
        Mode::Sequential => "sequential".to_owned(),
        Mode::Paced => "paced 1000/s".to_owned(),
        Mode::Concurrent => format!("{CONCURRENT_TASKS} in flight"),
    };
    format!("{flow} {mode}")
}

/// One timed run's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    hub_us: f64,
    /// Times a hub thread was put on a CPU, per message: its wake-ups.
    hub_runs: f64,
    sender_us: f64,
    receiver_us: f64,
    retries: usize,
}

struct Bench {
    hub: Arc<LocalHub>,
    device_rt: Handle,
    service_rt: Handle,
    devices: Vec<DeviceClient>,
    ids: Arc<Vec<String>>,
    registry: RegistryManager,
    epoch: Instant,
}

/// Runs `future` on `runtime` and waits for it, bounded by `RUN_LIMIT`.
async fn on<T: Send + 'static>(
    runtime: &Handle,
    what: &str,
    future: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match timeout(RUN_LIMIT, runtime.spawn(future)).await {
        Ok(joined) => joined.map_err(|e| format!("{what}: {e}"))?,
        Err(_) => Err(format!("{what}: not done in {} s", RUN_LIMIT.as_secs()).into()),
    }
}

impl Bench {
    async fn run(&self, flow: Flow, mode: Mode, messages: usize) -> Result<Figures> {
        let epoch = self.epoch;
        let (per_device, single) = match mode {
            Mode::Sequential | Mode::Paced => (vec![messages], true),
            Mode::Concurrent => (
                (0..DEVICES)
                    .map(|i| messages / DEVICES + usize::from(i < messages % DEVICES))
                    .collect(),
                false,
            ),
        };
        let before = CpuSample::now()?;
        let start = Instant::now();
        // Receivers first, so that nothing sent can be missed.
        let receiver: JoinHandle<Result<(Vec<u64>, Instant)>> = match flow {
            Flow::C2d => {
                let clients: Vec<DeviceClient> = self.devices[..per_device.len()].to_vec();
                self.device_rt
                    .spawn(receive_c2d(clients, per_device.clone(), epoch))
            }
            Flow::Telemetry => {
                let hub = self.hub.clone();
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let handle = self
                    .service_rt
                    .spawn(read_telemetry(hub, messages, epoch, ready_tx));
                ready_rx
                    .await
                    .map_err(|_| "the telemetry reader did not start")?;
                handle
            }
        };
        let retries = match flow {
            Flow::C2d => {
                let registry = self.registry.clone();
                let ids = self.ids.clone();
                on(
                    &self.service_rt,
                    "C2D sends",
                    send_c2d(registry, ids, mode, messages, single, epoch),
                )
                .await?
            }
            Flow::Telemetry => {
                let clients = self.devices.clone();
                on(
                    &self.device_rt,
                    "telemetry sends",
                    send_telemetry(clients, mode, messages, epoch),
                )
                .await?;
                0
            }
        };
        let (mut latencies, last) = match timeout(RUN_LIMIT, receiver).await {
            Ok(joined) => joined??,
            Err(_) => return Err(format!("{flow:?} {mode:?}: the receivers timed out").into()),
        };
        let after = CpuSample::now()?;
        latencies.sort_unstable();
        let elapsed = last.saturating_duration_since(start).as_secs_f64();
        let n = messages as f64;
        let (sender_ns, receiver_ns) = match flow {
            Flow::C2d => (after.service - before.service, after.device - before.device),
            Flow::Telemetry => (after.device - before.device, after.service - before.service),
        };
        Ok(Figures {
            rate: n / elapsed,
            p50_ms: percentile_ms(&latencies, 0.50),
            p99_ms: percentile_ms(&latencies, 0.99),
            p999_ms: percentile_ms(&latencies, 0.999),
            hub_us: (after.hub - before.hub) as f64 / 1e3 / n,
            hub_runs: (after.hub_runs - before.hub_runs) as f64 / n,
            sender_us: sender_ns as f64 / 1e3 / n,
            receiver_us: receiver_ns as f64 / 1e3 / n,
            retries,
        })
    }

    /// Grows or shrinks the idle part of the registry so that it holds `size` devices.
    fn set_registry_size(&self, size: usize) -> Result<()> {
        let idle = size.saturating_sub(DEVICES);
        for i in 0..LARGE_REGISTRY - DEVICES {
            let id = format!("idle-{i:05}");
            let exists = self.hub.device_connection_string(&id).is_some();
            if i < idle && !exists {
                self.hub.create_device(&id)?;
            } else if i >= idle && exists {
                self.hub.delete_device(&id)?;
            }
        }
        Ok(())
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in ms.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// Report.

/// `min / median / max` of one figure over the rounds.
fn spread(values: &[f64], decimals: usize) -> String {
    let mut sorted = values.to_vec();
    if sorted.is_empty() {
        return "no figure".to_owned();
    }
    sorted.sort_by(f64::total_cmp);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let median = crate::support::median(&mut sorted);
    format!("{min:.decimals$} / {median:.decimals$} / {max:.decimals$}")
}

fn runtime(name: &'static str, workers: usize) -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// The hub runtime's workers: `IOTHUB_E2E_HUB_WORKERS`, 1 (`iothub-local`'s default) when
/// unset.
fn hub_workers() -> usize {
    std::env::var("IOTHUB_E2E_HUB_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// The rounds: `IOTHUB_E2E_ROUNDS`, [`ROUNDS`] when unset.
fn rounds() -> usize {
    std::env::var("IOTHUB_E2E_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

/// Whether to run a scenario: `IOTHUB_E2E_FLOW` (`c2d` or `telemetry`) and `IOTHUB_E2E_MODE`
/// (`sequential`, `paced` or `concurrent`) each pick one; all when unset.
fn wanted(flow: Flow, mode: Mode) -> bool {
    let flow_wanted = match std::env::var("IOTHUB_E2E_FLOW").as_deref() {
        Ok("c2d") => flow == Flow::C2d,
        Ok("telemetry") => flow == Flow::Telemetry,
        _ => true,
    };
    let mode_wanted = match std::env::var("IOTHUB_E2E_MODE").as_deref() {
        Ok("sequential") => mode == Mode::Sequential,
        Ok("paced") => mode == Mode::Paced,
        Ok("concurrent") => mode == Mode::Concurrent,
        _ => true,
    };
    flow_wanted && mode_wanted
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there are no options to parse.
    let main_rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("e2e bench: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtimes = (|| {
        Ok::<_, BoxError>((
            runtime(HUB_THREADS, hub_workers())?,
            runtime(DEVICE_THREADS, 1)?,
            runtime(SERVICE_THREADS, 1)?,
        ))
    })();
    let (hub_rt, device_rt, service_rt) = match runtimes {
        Ok(runtimes) => runtimes,
        Err(e) => {
            eprintln!("e2e bench: cannot start the Tokio runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = main_rt.block_on(bench(
        hub_rt.handle().clone(),
        device_rt.handle().clone(),
        service_rt.handle().clone(),
    ));
    for rt in [hub_rt, device_rt, service_rt] {
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(hub_rt: Handle, device_rt: Handle, service_rt: Handle) -> Result<()> {
    let hub = Arc::new(
        on(&hub_rt, "hub start", async {
            Ok(LocalHub::builder().start().await?)
        })
        .await?,
    );
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("e2e-{i}")).collect();
    let mut devices = Vec::with_capacity(DEVICES);
    for id in &ids {
        let cs = hub.create_device(id)?;
        let ca = hub.ca_pem().to_owned();
        devices.push(
            on(&device_rt, "device connect", async move {
                Ok(DeviceClient::builder(cs)
                    .trust_ca_pem(ca)
                    .ack_mode(AckMode::Auto)
                    .connect()
                    .await?)
            })
            .await?,
        );
    }
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()?;
    let peers = Arc::new(Peers {
        python: env_path("IOTHUB_PYTHON"),
        node_modules: env_path("IOTHUB_NODE_MODULES"),
        ca: TempFile::new("e2e-ca.pem", hub.ca_pem()),
    });
    let bench = Bench {
        hub,
        device_rt,
        service_rt,
        devices,
        ids: Arc::new(ids),
        registry,
        epoch: Instant::now(),
    };
    println!(
        "iothub end-to-end bench: {} CPU(s); hub runtime {} workers, device and service runtimes 1 \
         each; {DEVICES} connected devices; {} rounds",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        hub_workers(),
        rounds()
    );
    for (flow, mode) in SCENARIOS
        .into_iter()
        .filter(|(flow, mode)| wanted(*flow, *mode))
    {
        bench.run(flow, mode, WARMUP_MESSAGES).await?;
    }
    let pairs: Vec<Pair> = [
        (Pair::Python, peers.python.is_some()),
        (Pair::Node, peers.node_modules.is_some()),
    ]
    .into_iter()
    .filter_map(|(pair, there)| there.then_some(pair))
    .collect();
    if peers.python.is_none() {
        println!("skipped: the official Python pair (set IOTHUB_PYTHON)");
    }
    if peers.node_modules.is_none() {
        println!("skipped: the official Node pair (set IOTHUB_NODE_MODULES)");
    }

    let sizes = [DEVICES, LARGE_REGISTRY];
    // figures[size][scenario][round]
    let mut figures = vec![vec![Vec::<Figures>::new(); SCENARIOS.len()]; sizes.len()];
    let mut pair_ratios: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    let mut pair_rates: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    println!(
        "{:<5} {:>8} {:<24} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "round",
        "devices",
        "scenario",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "hub µs",
        "hub runs",
        "send µs",
        "recv µs",
        "retries"
    );
    for round in 1..=rounds() {
        // Each scenario at both sizes back to back, so that the two figures of a ratio are
        // measured as close together in time as they can be (this machine's speed drifts
        // between rounds by more than the 10 % the ratio is held to).
        for (i, (flow, mode)) in SCENARIOS.iter().enumerate() {
            if !wanted(*flow, *mode) {
                continue;
            }
            // Odd rounds measure 8 first, even rounds 10,000 first: whatever the first run
            // after a scenario change or a registry resize pays, both sizes pay it equally.
            let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            for s in order {
                let size = &sizes[s];
                bench.set_registry_size(*size)?;
                let f = bench.run(*flow, *mode, mode.messages()).await?;
                println!(
                    "{round:<5} {size:>8} {:<24} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.1} {:>8.2} \
                     {:>8.1} {:>8.1} {:>7}",
                    scenario_label(*flow, *mode),
                    f.rate,
                    f.p50_ms,
                    f.p99_ms,
                    f.p999_ms,
                    f.hub_us,
                    f.hub_runs,
                    f.sender_us,
                    f.receiver_us,
                    f.retries
                );
                figures[s][i].push(f);
            }
        }
        bench.set_registry_size(DEVICES)?;
        for (p, pair) in pairs.iter().enumerate() {
            // Ours is measured again right before each pair, so that both see the same machine.
            let ours = bench
                .run(Flow::C2d, Mode::Sequential, SEQUENTIAL_MESSAGES)
                .await?
                .rate;
            let name = if *pair == Pair::Python {
                "python"
            } else {
                "node"
            };
            // A peer failure (the peer helpers panic) costs this figure, not the run.
            let (hub, peers_ref, pair_copy) = (bench.hub.clone(), peers.clone(), *pair);
            let run = tokio::spawn(async move { pair_rate(&hub, &peers_ref, pair_copy).await });
            let rate = match run.await {
                Ok(Ok(rate)) => rate,
                Ok(Err(e)) => {
                    println!("{round:<5} {DEVICES:>8} c2d sequential, {name} pair: failed: {e}");
                    continue;
                }
                Err(e) => {
                    println!("{round:<5} {DEVICES:>8} c2d sequential, {name} pair: failed: {e}");
                    continue;
                }
            };
            println!(
                "{round:<5} {DEVICES:>8} {:<24} {rate:>9.0}   ours {ours:.0}, ours/pair {:.2}x",
                format!("c2d sequential, {name} pair"),
                ours / rate
            );
            pair_rates[p].push(rate);
            pair_ratios[p].push(ours / rate);
        }
    }

    println!();
    println!("== summary: min / median / max over {} rounds ==", rounds());
    for (s, size) in sizes.iter().enumerate() {
        for (i, (flow, mode)) in SCENARIOS.iter().enumerate() {
            let runs = &figures[s][i];
            if runs.is_empty() {
                continue;
            }
            let pick = |f: fn(&Figures) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
            let mut line = format!("{size:>6} devices, {:<24}", scenario_label(*flow, *mode));
            let _ = write!(
                line,
                " msgs/s {} | p50 ms {} | p99 ms {} | p99.9 ms {} | CPU µs/msg hub {} sender {} \
                 receiver {} | hub runs/msg {}",
                spread(&pick(|f| f.rate), 0),
                spread(&pick(|f| f.p50_ms), 3),
                spread(&pick(|f| f.p99_ms), 3),
                spread(&pick(|f| f.p999_ms), 3),
                spread(&pick(|f| f.hub_us), 1),
                spread(&pick(|f| f.sender_us), 1),
                spread(&pick(|f| f.receiver_us), 1),
                spread(&pick(|f| f.hub_runs), 2),
            );
            println!("{line}");
        }
    }
    for (i, (flow, mode)) in SCENARIOS.iter().enumerate() {
        if figures[0][i].is_empty() {
            continue;
        }
        let ratios: Vec<f64> = figures[1][i]
            .iter()
            .zip(&figures[0][i])
            .map(|(large, small)| large.hub_us / small.hub_us)
            .collect();
        let rates: Vec<f64> = figures[1][i]
            .iter()
            .zip(&figures[0][i])
            .map(|(large, small)| large.rate / small.rate)
            .collect();
        println!(
            "10,000 vs 8 devices, {:<24} hub CPU/msg ratio {} | msgs/s ratio {}",
            scenario_label(*flow, *mode),
            spread(&ratios, 2),
            spread(&rates, 2)
        );
    }
    for (p, pair) in pairs.iter().enumerate() {
        let name = if *pair == Pair::Python {
            "python"
        } else {
            "node"
        };
        println!(
            "c2d sequential, official {name} pair: msgs/s {} | ours/pair {}",
            spread(&pair_rates[p], 0),
            spread(&pair_ratios[p], 2)
        );
    }
    let Bench { hub, .. } = bench;
    if let Ok(hub) = Arc::try_unwrap(hub) {
        let _ = timeout(Duration::from_secs(10), hub.shutdown()).await;
    }
    Ok(())
}
