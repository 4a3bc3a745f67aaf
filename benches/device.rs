//! Benchmarks for the device client (`iothub::device::DeviceClient`): C2D receive throughput
//! and latency into one client, each against a raw MQTT client in the same run, and the memory
//! one connected client costs.
//!
//! No criterion: one `main`, one run, one small table on stdout.
//!
//! The raw baseline is rumqttc's MQTT 3.1.1 packet codec over tokio-rustls, in one task: it
//! reads what the socket has, PUBACKs every PUBLISH of that read in one write, and does nothing
//! else (no topic or property decoding, no channels, no event loop). The `DeviceClient` is used
//! as an application would: `DeviceClient::builder(cs).trust_ca_pem(ca).connect()`,
//! [`AckMode::Auto`], default options, and one task calling `receive_message()` in a loop.
//! Between the two, the *floor* client (`benches/device/floor.rs`) is the raw client plus what
//! no client that keeps its connection in a task and returns `Message`s can skip: decoding
//! each topic into a `Message` with the functions the `DeviceClient` uses, and handing it to
//! the application's task through a bounded channel, one message per call. Its rate over the
//! raw client's, in the same round, is the most that design can reach in this bench.
//! Every C2D body is 16 bytes, a sequence number and an enqueue timestamp (nanoseconds since a
//! common `Instant`); every message has a message id. All receivers check that the sequence
//! numbers arrive in order, without gaps or duplicates.
//!
//! 1. **C2D receive throughput, one client.** An in-process `LocalHub` (port 0) with three
//!    devices, one per client (`DeviceClient`, raw, floor), all connected throughout.
//!    A feeder keeps the measured device's queue full through `LocalHub::enqueue_c2d`
//!    (IoT Hub's 50-message queue; `QueueFull` means "come back later": the feeder waits until
//!    the receiver has taken another 16 messages, or 1 ms) until N = 20,000 messages were
//!    enqueued. Time runs from the first enqueue until the receiver has the N-th message. A
//!    1,000-message warm-up per client first, then 6 rounds, each running raw, floor and
//!    `DeviceClient` one after another, in an order that turns every round (each client is
//!    first, second and third twice); every round is printed with this process's CPU time per message
//!    (hub, feeder and client together, from `/proc/self/task/*/schedstat`) in each client's
//!    part, context switches per message (`…/status`) in the raw and `DeviceClient` parts, then
//!    min, median and max of each column. The hub's and the feeder's share is the same for
//!    every client, so the difference of two CPU columns is what one client costs over the
//!    other per message.
//!
//!    On a VM with few CPUs, cross-CPU wake-ups move these figures from round to round; running
//!    the bench under `taskset -c 0` puts every thread on one CPU, where the rates measure CPU
//!    cost per message alone.
//!
//! 2. **C2D latency at 1,000 msg/s.** Same hub and clients: one message enqueued per tick of
//!    a 1 ms Tokio interval, 5,000 messages to the raw client, then 5,000 to the
//!    `DeviceClient`, each carrying its enqueue time; latency = receipt (`receive_message()` returned; for the raw client, the read
//!    holding the PUBLISH completed) − enqueue. Reported: p50, p99 (nearest rank) and max.
//!
//! 3. **RSS per connected `DeviceClient`, 999 clients in one process.** The hub runs as a
//!    separate process — the `iothub-local` binary next to this bench executable
//!    (`target/release/iothub-local`) — so that only the clients' memory is in this process.
//!    It is started with `--mqtt-port 0 --https-port 0 --amqp-port 0`, `RUST_LOG=warn`,
//!    connection bounds that admit every client from 127.0.0.1 and one `--device=d{i}:{key}`
//!    per device (deterministic keys); the bench reads the CA file and
//!    the port from the hub's `IOTHUB_CA_FILE=` and `IOTHUB_DEVICE_CONNECTION_STRING_*=` lines
//!    (the port is in `GatewayHostName`). One extra warm-up client is connected first (one-time
//!    costs: TLS provider, lazy statics, runtime threads), then this process's `VmRSS` is read
//!    from `/proc/self/status` (the baseline); 999 `DeviceClient`s are connected (with the
//!    warm-up client, 1,000 connections, the hub's default bound from one address), at most
//!    100 at a time; after 1 s `VmRSS` is read again: per client = (after − baseline) / 999. All
//!    clients stay alive until then, and are closed (`close()`) afterwards. This part runs
//!    first, before 1 and 2 have allocated and freed memory that the clients could reuse.
//!
//!    Both processes hold one end of every connection, so each needs an open-file limit of at
//!    least 1,000 + 200; the bench reads its soft limit (which the hub inherits) from
//!    `/proc/self/limits` and skips this part, saying so, when it does not fit.
//!
//! Run (Linux only, for `/proc`):
//!
//! ```text
//! cargo build --release --features cli --bin iothub-local
//! cargo bench -p iothub-benches --bench device
//! ```
//!
//! Only loopback (127.0.0.1) traffic; every wait is bounded by a timeout and every loop by a
//! count.

#[path = "device/floor.rs"]
mod floor;
#[path = "device/memory.rs"]
mod memory;
#[path = "device/raw.rs"]
mod raw;
mod support;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    Result, context_switches, cpu_ns, median, min_max, thousands, tls_connector, within,
};

use bytes::Bytes;
use floor::FloorClient;
use iothub::device::{AckMode, DeviceClient};
use iothub::local_hub::LocalHub;
use iothub::{ErrorKind, Message};
use memory::{MemoryOutcome, client_memory};
use support::raw_mqtt::RawMqtt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};

/// Keep-alive of the raw and floor clients.
const RAW_KEEP_ALIVE: u16 = 600;
/// The most bytes one read of the raw and floor clients takes.
const RAW_READ: usize = 16 * 1024;
/// C2D messages per timed throughput round.
const THROUGHPUT_MESSAGES: usize = 20_000;
/// C2D messages per client in the untimed warm-up.
const WARMUP_MESSAGES: usize = 1_000;
/// Timed throughput rounds (raw, floor and `DeviceClient` in each, in turning order): a
/// multiple of 3.
const ROUNDS: usize = 6;
/// C2D messages per client in the latency measurement.
const LATENCY_MESSAGES: usize = 5_000;
/// One enqueue per period: 1,000 msg/s.
const LATENCY_PERIOD: Duration = Duration::from_millis(1);
/// Body bytes: sequence number and enqueue timestamp, both `u64` little-endian.
const BODY_LEN: usize = 16;
/// Longest wait of the feeder for a sign of progress before trying to enqueue again.
const FEEDER_POLL: Duration = Duration::from_millis(1);
/// The receiver wakes the feeder once per this many messages (a third of the hub's 50-message
/// queue), whatever the client's batches: waking the feeder's thread for every message cost
/// more than a client's own work per message, and more for the client that returns one message
/// per call than for the one that reads batches.
const FEEDER_WAKE_EVERY: u64 = 16;

/// The longest one timed phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there are no options to parse.
    support::run_bench("device bench", |hub_exe| async move { run(&hub_exe).await })
}

async fn run(hub_exe: &Path) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "iothub device client bench: {cpus} CPU(s), hub binary {}",
        hub_exe.display()
    );
    println!();

    // Memory first: nothing allocated and freed yet that the clients could reuse.
    let memory = client_memory(hub_exe).await?;
    let (throughput, latency) = c2d_receive().await?;

    println!();
    println!("== summary ==");
    println!(
        "{:<40}  {:>12}  {:>10}  {:>16}",
        "", "DeviceClient", "raw MQTT", "DeviceClient/raw"
    );
    println!(
        "{:<40}  {:>12.0}  {:>10.0}  {:>16.2}",
        "1. C2D receive, msgs/s (one client)",
        throughput.device,
        throughput.raw,
        throughput.device / throughput.raw
    );
    println!(
        "{:<40}  {:>12.0}  {:>10.0}  {:>16.2}",
        "   floor client (decode + hand-over)",
        throughput.floor,
        throughput.raw,
        throughput.floor / throughput.raw
    );
    for (label, device, raw) in [
        (
            "2. latency p50 at 1,000 msg/s, ms",
            latency.device.p50,
            latency.raw.p50,
        ),
        ("   latency p99, ms", latency.device.p99, latency.raw.p99),
        ("   latency max, ms", latency.device.max, latency.raw.max),
    ] {
        println!(
            "{label:<40}  {:>12.3}  {:>10.3}  {:>16.2}",
            ms(device),
            ms(raw),
            ms(device) / ms(raw)
        );
    }
    match &memory {
        MemoryOutcome::Measured(m) => println!(
            "{:<40}  {:>12.1}  {:>10}  {:>16}",
            format!(
                "3. RSS per connected client, KiB ({})",
                thousands(m.clients)
            ),
            m.per_client_kib(),
            "-",
            "-"
        ),
        MemoryOutcome::Skipped(why) => println!("3. RSS per connected client: skipped ({why})"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The receivers (the raw client is benches/support/raw_mqtt.rs with device/raw.rs, the floor
// client device/floor.rs).

/// What receives the C2D messages of one device.
enum Receiver {
    Device(DeviceClient),
    Raw(Box<RawMqtt>),
    Floor(FloorClient),
}

impl Receiver {
    /// Waits for at least one message; appends the bodies of those available to `out`.
    async fn next_batch(&mut self, out: &mut Vec<Bytes>) -> Result<()> {
        match self {
            Receiver::Device(client) => {
                let message = client.receive_message().await?;
                out.push(message.body().clone());
                Ok(())
            }
            Receiver::Raw(client) => client.receive_publishes(out).await,
            Receiver::Floor(client) => {
                let message = client.next().await?;
                out.push(message.body().clone());
                Ok(())
            }
        }
    }
}

/// Sees every received message, in order: `seq` and `stamp_ns` from the body, `at` the
/// receipt.
trait OnMessage: Send + 'static {
    fn on_message(&mut self, seq: u64, stamp_ns: u64, at: Instant) -> Result<()>;
}

/// Checks that sequence numbers run 0, 1, 2, … with no gap or duplicate.
struct Sequence(u64);

impl Sequence {
    fn check(&mut self, seq: u64) -> Result<()> {
        if seq != self.0 {
            return Err(format!("received message {seq} where {} was next", self.0).into());
        }
        self.0 += 1;
        Ok(())
    }
}

fn body(seq: u64, stamp_ns: u64) -> Bytes {
    let mut body = [0u8; BODY_LEN];
    body[..8].copy_from_slice(&seq.to_le_bytes());
    body[8..].copy_from_slice(&stamp_ns.to_le_bytes());
    Bytes::copy_from_slice(&body)
}

fn parse_body(body: &[u8]) -> Result<(u64, u64)> {
    let (seq, stamp) = body
        .split_first_chunk::<8>()
        .ok_or("a C2D body shorter than 16 bytes")?;
    let stamp: &[u8; 8] = stamp
        .try_into()
        .map_err(|_| format!("a C2D body of {} bytes, not {BODY_LEN}", body.len()))?;
    Ok((u64::from_le_bytes(*seq), u64::from_le_bytes(*stamp)))
}

/// Receives `count` messages, handing each to `handler`; returns the receiver, the handler and
/// the instant the last message arrived.
async fn receive<H: OnMessage>(
    mut receiver: Receiver,
    count: usize,
    mut handler: H,
) -> Result<(Receiver, H, Instant)> {
    let mut got = 0;
    let mut last = Instant::now();
    let mut batch = Vec::with_capacity(64);
    // Each pass takes at least one message.
    while got < count {
        batch.clear();
        receiver.next_batch(&mut batch).await?;
        let at = Instant::now();
        for body in &batch {
            let (seq, stamp) = parse_body(body)?;
            handler.on_message(seq, stamp, at)?;
        }
        got += batch.len();
        last = at;
    }
    if got > count {
        return Err(format!("{got} messages received where {count} were enqueued").into());
    }
    Ok((receiver, handler, last))
}

/// Waits for a receiving task, at most until `deadline`.
async fn join_receiver<H>(
    task: JoinHandle<Result<(Receiver, H, Instant)>>,
    deadline: Instant,
) -> Result<(Receiver, H, Instant)> {
    let left = deadline.saturating_duration_since(Instant::now());
    timeout(left, task)
        .await
        .map_err(|_| format!("a phase took over {} s", PHASE_LIMIT.as_secs()))??
}

fn enqueue(hub: &LocalHub, device: &str, tag: &str, seq: u64, stamp_ns: u64) -> iothub::Result<()> {
    let message = Message::new(body(seq, stamp_ns)).with_message_id(format!("{tag}-{seq}"));
    hub.enqueue_c2d(device, message)
}

// ---------------------------------------------------------------------------------------------
// 1 and 2. C2D throughput and latency, `DeviceClient` against the raw client.

struct Rates {
    device: f64,
    raw: f64,
    floor: f64,
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

struct Latencies {
    device: Percentiles,
    raw: Percentiles,
}

async fn c2d_receive() -> Result<(Rates, Latencies)> {
    println!();
    println!("== 1. C2D receive throughput: in-process LocalHub, one client, queue kept full ==");
    let hub = LocalHub::builder().start().await?;
    let device_cs = hub.create_device("dc")?;
    let raw_cs = hub.create_device("raw")?;
    let floor_cs = hub.create_device("floor")?;
    let connector = tls_connector(hub.ca_pem())?;
    let port = hub.mqtt_addr().port();
    let raw_client = |cs| RawMqtt::connect(&connector, port, cs, RAW_KEEP_ALIVE, RAW_READ);
    let mut raw = Receiver::Raw(Box::new(raw_client(&raw_cs).await?));
    let floor = raw_client(&floor_cs).await?;
    let mut floor = Receiver::Floor(FloorClient::start(floor, floor_cs.device_id().to_owned()));
    let client = within(
        "DeviceClient connect",
        DeviceClient::builder(device_cs)
            .trust_ca_pem(hub.ca_pem())
            .ack_mode(AckMode::Auto)
            .connect(),
    )
    .await?;
    let mut device = Receiver::Device(client.clone());

    (raw, _) = throughput_round(&hub, "raw", "warm", raw, WARMUP_MESSAGES).await?;
    (floor, _) = throughput_round(&hub, "floor", "warm", floor, WARMUP_MESSAGES).await?;
    (device, _) = throughput_round(&hub, "dc", "warm", device, WARMUP_MESSAGES).await?;
    println!(
        "{} messages per round, {BODY_LEN}-byte bodies, after a {}-message warm-up",
        thousands(THROUGHPUT_MESSAGES),
        thousands(WARMUP_MESSAGES)
    );
    println!(
        "{:>7}  {:>10}  {:>10}  {:>12}  {:>9}  {:>6}  {:>10}  {:>10}  {:>9}  {:>6}  {:>6}",
        "round",
        "raw msgs/s",
        "floor",
        "DeviceClient",
        "floor/raw",
        "DC/raw",
        "raw CPU µs",
        "floor CPU",
        "DC CPU µs",
        "raw cs",
        "DC cs"
    );
    // Columns: rates, the ratios to the raw client, then this process's CPU µs per message
    // (hub, feeder and client together) in each client's part of the round, and context
    // switches per message in the raw and DeviceClient parts.
    let mut columns: [Vec<f64>; 10] = std::array::from_fn(|_| Vec::with_capacity(ROUNDS));
    let per_message = |before: Option<Usage>, after: Option<Usage>| match (before, after) {
        (Some(b), Some(a)) => [
            (a.cpu_ns - b.cpu_ns) as f64 / 1e3 / THROUGHPUT_MESSAGES as f64,
            (a.switches - b.switches) as f64 / THROUGHPUT_MESSAGES as f64,
        ],
        _ => [f64::NAN; 2],
    };
    // Raw, floor, DeviceClient: the order turns every round, so that each client runs first,
    // second and third equally often (whatever a place in the order costs or gains, such as
    // the caches the previous client left, all three pay it alike).
    let mut clients = [Some(raw), Some(floor), Some(device)];
    const NAMES: [&str; 3] = ["raw", "floor", "dc"];
    for round in 1..=ROUNDS {
        let tag = format!("t{round}");
        let mut rate = [0.0; 3];
        let mut usage = [[f64::NAN; 2]; 3];
        for turn in 0..3 {
            let i = (turn + round - 1) % 3;
            let receiver = clients[i].take().ok_or("a client went missing")?;
            let before = Usage::now();
            let (receiver, time) =
                throughput_round(&hub, NAMES[i], &tag, receiver, THROUGHPUT_MESSAGES).await?;
            usage[i] = per_message(before, Usage::now());
            rate[i] = THROUGHPUT_MESSAGES as f64 / time.as_secs_f64();
            clients[i] = Some(receiver);
        }
        let [raw_rate, floor_rate, device_rate] = rate;
        let [[raw_cpu, raw_cs], [floor_cpu, _], [device_cpu, device_cs]] = usage;
        let row = [
            raw_rate,
            floor_rate,
            device_rate,
            floor_rate / raw_rate,
            device_rate / raw_rate,
            raw_cpu,
            floor_cpu,
            device_cpu,
            raw_cs,
            device_cs,
        ];
        print_throughput_row(&round.to_string(), &row);
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    for (label, pick) in [("min", 0), ("max", 1)] {
        let row = columns.clone().map(|values| {
            let (lo, hi) = min_max(&values);
            if pick == 0 { lo } else { hi }
        });
        print_throughput_row(label, &row);
    }
    let medians = columns.clone().map(|mut values| median(&mut values));
    print_throughput_row("median", &medians);
    let [Some(mut raw), Some(floor), Some(mut device)] = clients else {
        return Err("a client went missing".into());
    };
    let [mut raw_rates, mut floor_rates, mut device_rates, ..] = columns;
    let rates = Rates {
        device: median(&mut device_rates),
        raw: median(&mut raw_rates),
        floor: median(&mut floor_rates),
    };

    println!();
    println!(
        "== 2. C2D latency, enqueue → receipt, one message per {} ms, {} messages per client ==",
        LATENCY_PERIOD.as_millis(),
        thousands(LATENCY_MESSAGES)
    );
    println!(
        "{:>14}  {:>9}  {:>9}  {:>9}  {:>9}  {:>10}",
        "client", "p50 ms", "p99 ms", "max ms", "rate/s", "queue full"
    );
    let raw_latency;
    let device_latency;
    (raw, raw_latency) = latency_round(&hub, "raw", "raw", raw).await?;
    (device, device_latency) = latency_round(&hub, "dc", "DeviceClient", device).await?;
    drop(raw);
    drop(floor);
    drop(device);
    within("DeviceClient close", client.close()).await?;
    hub.shutdown().await;
    Ok((
        rates,
        Latencies {
            device: device_latency,
            raw: raw_latency,
        },
    ))
}

/// Wakes the feeder on every received message.
struct Progress {
    sequence: Sequence,
    notify: Arc<Notify>,
}

impl OnMessage for Progress {
    fn on_message(&mut self, seq: u64, _stamp_ns: u64, _at: Instant) -> Result<()> {
        self.sequence.check(seq)?;
        if (seq + 1).is_multiple_of(FEEDER_WAKE_EVERY) {
            self.notify.notify_one();
        }
        Ok(())
    }
}

/// Feeds `count` messages to `device`, keeping its queue full, and waits until `receiver` has
/// them all; returns the receiver and the time from the first enqueue to the last receipt.
async fn throughput_round(
    hub: &LocalHub,
    device: &str,
    tag: &str,
    receiver: Receiver,
    count: usize,
) -> Result<(Receiver, Duration)> {
    let notify = Arc::new(Notify::new());
    let progress = Progress {
        sequence: Sequence(0),
        notify: notify.clone(),
    };
    let task = tokio::spawn(receive(receiver, count, progress));
    let start = Instant::now();
    let deadline = start + PHASE_LIMIT;
    let mut next = 0u64;
    let count = count as u64;
    // Each pass either enqueues or waits at most `FEEDER_POLL`; the deadline bounds the passes.
    while next < count {
        loop {
            match enqueue(hub, device, tag, next, 0) {
                Ok(()) => next += 1,
                Err(e) if e.kind() == ErrorKind::QueueFull => break,
                Err(e) => return Err(e.into()),
            }
            if next == count {
                break;
            }
        }
        if next == count || task.is_finished() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("feeding took over {} s", PHASE_LIMIT.as_secs()).into());
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(FEEDER_POLL) => {}
        }
    }
    let (receiver, _, last) = join_receiver(task, deadline).await?;
    Ok((receiver, last.saturating_duration_since(start)))
}

/// This process's CPU time and context switches so far.
#[derive(Clone, Copy)]
struct Usage {
    cpu_ns: u64,
    switches: u64,
}

impl Usage {
    fn now() -> Option<Usage> {
        Some(Usage {
            cpu_ns: cpu_ns()?,
            switches: context_switches()?,
        })
    }
}

/// One line of the throughput table: rates, ratios, CPU µs and context switches per message.
fn print_throughput_row(label: &str, row: &[f64; 10]) {
    println!(
        "{label:>7}  {:>10.0}  {:>10.0}  {:>12.0}  {:>9.2}  {:>6.2}  {:>10.2}  {:>10.2}  {:>9.2}  \
         {:>6.2}  {:>6.2}",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]
    );
}

/// Records enqueue → receipt latencies.
struct LatencyLog {
    sequence: Sequence,
    origin: Instant,
    nanos: Vec<u64>,
}

impl OnMessage for LatencyLog {
    fn on_message(&mut self, seq: u64, stamp_ns: u64, at: Instant) -> Result<()> {
        self.sequence.check(seq)?;
        let received = nanos(at.saturating_duration_since(self.origin));
        self.nanos.push(received.saturating_sub(stamp_ns));
        Ok(())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Enqueues `LATENCY_MESSAGES` messages, one per `LATENCY_PERIOD`, and measures how long
/// each takes to reach `receiver`.
async fn latency_round(
    hub: &LocalHub,
    device: &str,
    label: &str,
    receiver: Receiver,
) -> Result<(Receiver, Percentiles)> {
    let origin = Instant::now();
    let log = LatencyLog {
        sequence: Sequence(0),
        origin,
        nanos: Vec::with_capacity(LATENCY_MESSAGES),
    };
    let task = tokio::spawn(receive(receiver, LATENCY_MESSAGES, log));
    let deadline = origin + PHASE_LIMIT;
    let mut interval = tokio::time::interval(LATENCY_PERIOD);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut queue_full = 0usize;
    let tag = format!("l-{device}");
    // A refused enqueue is retried on the next tick; at most twice as many ticks as messages.
    for _ in 0..LATENCY_MESSAGES * 2 {
        if sent == LATENCY_MESSAGES as u64 || task.is_finished() || Instant::now() > deadline {
            break;
        }
        interval.tick().await;
        let stamp = nanos(origin.elapsed());
        match enqueue(hub, device, &tag, sent, stamp) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == ErrorKind::QueueFull => queue_full += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let elapsed = origin.elapsed();
    if sent < LATENCY_MESSAGES as u64 && !task.is_finished() {
        return Err(format!(
            "only {sent} of {LATENCY_MESSAGES} messages enqueued ({queue_full} refused as full)"
        )
        .into());
    }
    let (receiver, mut log, _) = join_receiver(task, deadline).await?;
    log.nanos.sort_unstable();
    let at = |p: usize| {
        let rank = (log.nanos.len() * p).div_ceil(100).max(1);
        Duration::from_nanos(log.nanos[rank - 1])
    };
    let result = Percentiles {
        p50: at(50),
        p99: at(99),
        max: at(100),
    };
    println!(
        "{label:>14}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.0}  {queue_full:>10}",
        ms(result.p50),
        ms(result.p99),
        ms(result.max),
        sent as f64 / elapsed.as_secs_f64()
    );
    if queue_full > 0 {
        println!(
            "{label:>14}  saturated: the hub refused {queue_full} enqueues (queue of 50 full), so \
             these latencies are mostly queueing"
        );
    }
    Ok((receiver, result))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
