//! Benchmarks for the local IoT Hub (`iothub::local_hub`): C2D throughput and the memory an
//! idle device connection costs.
//!
//! No criterion: one `main`, one run, one small table on stdout.
//!
//! 1. **C2D deliveries per second, 100 devices.** An in-process `LocalHub` (port 0) with 100
//!    registered devices; 100 raw MQTT 3.1.1 clients over TLS (rumqttc's codec over
//!    tokio-rustls, clean session false, SUBSCRIBE `devices/{id}/messages/devicebound/#` QoS 1
//!    and wait for the SUBACK). Each client PUBACKs every PUBLISH it gets (the PUBACKs of
//!    one read go out in one write). A feeder task keeps every device's queue fed through
//!    `LocalHub::enqueue_c2d` (IoT Hub's 50-message queues: `QueueFull` means "come back
//!    later") until 500 messages per device (50,000 in all) were enqueued. Time runs from
//!    the first enqueue to the last PUBLISH received by all clients.
//!
//!    **Baseline, same run, same 100 connections:** MQTT PINGREQ/PINGRESP round trips per
//!    second, with 16 pings outstanding per connection (the hub's C2D in-flight window is 16
//!    too) and as many round trips (500 per connection). Both are one packet each way per
//!    operation through the same TLS sessions, the same per-connection hub task and the same
//!    client code, so the ratio `c2d / ping` is the share of the hub's bare request/response
//!    rate left once C2D's queueing, locking, completion and topic encoding are added (1.0:
//!    C2D costs nothing over a ping). Warm-up first, then 5 alternating rounds (ping, C2D);
//!    the medians are reported, and all rounds are printed.
//!
//! 2. **RSS per idle connected device, at 1,000 and 10,000 devices.** The hub runs as a
//!    separate process — the `iothub-local` binary next to this bench executable
//!    (`target/release/iothub-local`) — so that only the hub's memory is measured. Each size
//!    gets a fresh hub process (not cumulative), started with `--mqtt-port 0 --https-port 0`,
//!    `RUST_LOG=warn`, connection bounds that admit every device from 127.0.0.1
//!    (`--max-connections`, `--max-connections-per-address`: N + 100 at least) and one
//!    `--device=d{i}:{key}` per device (deterministic keys). The bench
//!    reads the CA file and the port from the hub's `IOTHUB_CA_FILE=` and
//!    `IOTHUB_DEVICE_CONNECTION_STRING_*=` lines (the port is in `GatewayHostName`), waits for
//!    `ready`, settles 1 s and reads `VmRSS` from `/proc/<pid>/status` (the baseline, with all
//!    devices registered but none connected). It then connects N devices, at most 200 TLS
//!    handshakes at a time (the hub allows 10 s for TLS + CONNECT): CONNECT with keep-alive
//!    600 s, CONNACK, SUBSCRIBE to C2D, SUBACK. Once every device has its SUBACK it waits 1 s
//!    and reads `VmRSS` again: per device = (after − baseline) / N. The hub is killed at the
//!    end of each size, and on any error.
//!
//!    Each of the two processes holds one end of every connection, so each needs an
//!    open-file limit of at least N + 200; the bench reads its own soft limit (which the hub
//!    inherits) from `/proc/self/limits` and skips a size that does not fit, saying so.
//!
//! Run (Linux only, for `/proc`):
//!
//! ```text
//! cargo build --release --features cli --bin iothub-local
//! ulimit -n 65536   # or as high as the hard limit allows; 10,200 is enough
//! cargo bench -p iothub-benches --bench hub
//! ```
//!
//! Only loopback (127.0.0.1) traffic; every wait is bounded by a timeout and every loop by a
//! count.

mod support;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use support::hub_process::HubProcess;
use support::raw_mqtt::RawMqtt;
use support::{
    Result, median, mib, open_files_soft_limit, spawn_bounded, thousands, tls_connector, vm_rss_kib,
};

use bytes::Bytes;
use iothub::auth::DeviceConnectionString;
use iothub::local_hub::LocalHub;
use iothub::{ErrorKind, Message};
use rumqttc::mqttbytes::v4::{Packet, PubAck};
use tokio::time::timeout;

/// Devices (and connections) of the throughput measurement.
const C2D_DEVICES: usize = 100;
/// C2D messages per device in one timed round (50,000 in all).
const C2D_PER_DEVICE: usize = 500;
/// C2D messages per device in the untimed warm-up round.
const WARMUP_PER_DEVICE: usize = 20;
/// Ping round trips per connection in one timed round: as many as C2D deliveries.
const PINGS_PER_CONNECTION: usize = C2D_PER_DEVICE;
/// Pings outstanding per connection: the hub's C2D in-flight window (`MAX_IN_FLIGHT`).
const PING_WINDOW: usize = 16;
/// Timed rounds of (ping, C2D).
const ROUNDS: usize = 5;
/// The C2D payload: small, as telemetry commands are.
const PAYLOAD: &[u8] = b"{\"command\":\"set\",\"value\":42}";

/// Idle-connection sizes; each gets a fresh hub process.
const IDLE_SIZES: [usize; 2] = [1_000, 10_000];
/// TLS handshakes + CONNECTs in progress at once.
const CONNECT_CONCURRENCY: usize = 200;
/// Open files a process needs beyond one per connection.
const FD_MARGIN: u64 = 200;
/// Keep-alive of the idle devices: the hub closes after 1.5 × this without traffic.
const IDLE_KEEP_ALIVE: u16 = 600;

/// The longest one timed phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// How long the hub process may take to print `ready`.
const HUB_START_LIMIT: Duration = Duration::from_secs(120);
/// Pause before reading RSS, for the hub to settle.
const SETTLE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there are no options to parse.
    support::run_bench("hub bench", |hub_exe| async move { run(&hub_exe).await })
}

async fn run(hub_exe: &Path) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "iothub local hub bench: {cpus} CPU(s), hub binary {}",
        hub_exe.display()
    );
    println!();

    let throughput = c2d_throughput().await?;
    let idle = idle_memory(hub_exe).await?;

    println!();
    println!("== summary ==");
    println!(
        "c2d deliveries/s ({C2D_DEVICES} devices): {:.0}; ping round trips/s (same {C2D_DEVICES} \
         connections): {:.0}; ratio X/Y = {:.2}",
        throughput.c2d_per_s,
        throughput.ping_per_s,
        throughput.c2d_per_s / throughput.ping_per_s
    );
    let mut line = String::from("hub RSS:");
    for (i, result) in idle.iter().enumerate() {
        let sep = if i == 0 { "" } else { ";" };
        match result {
            IdleOutcome::Measured(m) => line.push_str(&format!(
                "{sep} baseline {:.1} MiB, +{} idle devices: {:.1} MiB ({:.1} KiB/device)",
                mib(m.baseline_kib),
                thousands(m.devices),
                mib(m.after_kib),
                m.per_device_kib()
            )),
            IdleOutcome::Skipped { devices, why } => {
                line.push_str(&format!(
                    "{sep} +{} idle devices: skipped ({why})",
                    thousands(*devices)
                ));
            }
        }
    }
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What the hub bench does with a raw MQTT client (benches/support/raw_mqtt.rs).

impl RawMqtt {
    /// Receives and PUBACKs `expect` C2D PUBLISHes; returns when the last one arrived.
    async fn receive_c2d(mut self, expect: usize) -> Result<(Self, Instant)> {
        let mut got = 0;
        let mut last = Instant::now();
        while got < expect {
            self.fill().await?;
            while let Some(packet) = self.buffered()? {
                match packet {
                    Packet::Publish(publish) => {
                        got += 1;
                        last = Instant::now();
                        self.queue(Packet::PubAck(PubAck::new(publish.pkid)))?;
                    }
                    other => return Err(format!("expected PUBLISH, got {other:?}").into()),
                }
            }
            self.flush().await?;
        }
        if got > expect {
            return Err(format!("{got} PUBLISHes where {expect} were enqueued").into());
        }
        Ok((self, last))
    }

    /// `count` PINGREQ/PINGRESP round trips with `window` outstanding; returns when the last
    /// PINGRESP arrived.
    async fn ping(mut self, count: usize, window: usize) -> Result<(Self, Instant)> {
        let mut sent = 0;
        while sent < window.min(count) {
            self.queue(Packet::PingReq)?;
            sent += 1;
        }
        self.flush().await?;
        let mut got = 0;
        while got < count {
            self.fill().await?;
            while let Some(packet) = self.buffered()? {
                match packet {
                    Packet::PingResp => {
                        got += 1;
                        if sent < count {
                            self.queue(Packet::PingReq)?;
                            sent += 1;
                        }
                    }
                    other => return Err(format!("expected PINGRESP, got {other:?}").into()),
                }
            }
            self.flush().await?;
        }
        Ok((self, Instant::now()))
    }
}

/// Connects one client per connection string, `CONNECT_CONCURRENCY` at a time.
async fn connect_all(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    devices: &[DeviceConnectionString],
    keep_alive: u16,
) -> Result<Vec<RawMqtt>> {
    let connects = devices.iter().map(|cs| {
        let (connector, cs) = (connector.clone(), cs.clone());
        async move { RawMqtt::connect(&connector, port, &cs, keep_alive, 4096).await }
    });
    spawn_bounded(connects, CONNECT_CONCURRENCY).await
}

// ---------------------------------------------------------------------------------------------
// 1. C2D throughput against a ping baseline.

struct Throughput {
    c2d_per_s: f64,
    ping_per_s: f64,
}

async fn c2d_throughput() -> Result<Throughput> {
    println!(
        "== 1. C2D deliveries/s: in-process LocalHub, {C2D_DEVICES} devices, {C2D_DEVICES} raw \
         MQTT/TLS clients =="
    );
    let hub = LocalHub::builder().start().await?;
    let ids: Vec<String> = (0..C2D_DEVICES).map(|i| format!("bench{i}")).collect();
    let mut devices = Vec::with_capacity(ids.len());
    for id in &ids {
        devices.push(hub.create_device(id)?);
    }
    let connector = tls_connector(hub.ca_pem())?;
    let mut clients = connect_all(&connector, hub.mqtt_addr().port(), &devices, 600).await?;
    println!(
        "{C2D_DEVICES} clients connected and subscribed; {C2D_PER_DEVICE} C2D messages per device \
         and {PINGS_PER_CONNECTION} pings per connection ({PING_WINDOW} outstanding) per round"
    );

    // Warm-up: TLS buffers, queues, allocator.
    clients = c2d_round(&hub, &ids, clients, WARMUP_PER_DEVICE).await?.0;
    clients = ping_round(clients, PINGS_PER_CONNECTION / 4).await?.0;

    println!(
        "{:>7}  {:>18}  {:>20}  {:>7}",
        "round", "c2d deliveries/s", "ping round trips/s", "ratio"
    );
    let mut c2d = Vec::with_capacity(ROUNDS);
    let mut ping = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let (back, ping_time) = ping_round(clients, PINGS_PER_CONNECTION).await?;
        let (back, c2d_time) = c2d_round(&hub, &ids, back, C2D_PER_DEVICE).await?;
        clients = back;
        let ping_rate = (C2D_DEVICES * PINGS_PER_CONNECTION) as f64 / ping_time.as_secs_f64();
        let c2d_rate = (C2D_DEVICES * C2D_PER_DEVICE) as f64 / c2d_time.as_secs_f64();
        println!(
            "{round:>7}  {c2d_rate:>18.0}  {ping_rate:>20.0}  {:>7.2}",
            c2d_rate / ping_rate
        );
        c2d.push(c2d_rate);
        ping.push(ping_rate);
    }
    let result = Throughput {
        c2d_per_s: median(&mut c2d),
        ping_per_s: median(&mut ping),
    };
    println!(
        "{:>7}  {:>18.0}  {:>20.0}  {:>7.2}",
        "median",
        result.c2d_per_s,
        result.ping_per_s,
        result.c2d_per_s / result.ping_per_s
    );
    drop(clients);
    hub.shutdown().await;
    Ok(result)
}

/// Feeds `per_device` messages to every device and waits until all were received; returns
/// the clients and the time from the first enqueue to the last PUBLISH.
async fn c2d_round(
    hub: &LocalHub,
    ids: &[String],
    clients: Vec<RawMqtt>,
    per_device: usize,
) -> Result<(Vec<RawMqtt>, Duration)> {
    let mut receivers = Vec::with_capacity(clients.len());
    for client in clients {
        receivers.push(tokio::spawn(client.receive_c2d(per_device)));
    }
    let start = Instant::now();
    let deadline = start + PHASE_LIMIT;
    let payload = Bytes::from_static(PAYLOAD);
    let mut remaining = vec![per_device; ids.len()];
    let mut left = per_device * ids.len();
    let mut seq = 0u64;
    while left > 0 {
        if Instant::now() > deadline {
            return Err(format!("C2D feeding took over {} s", PHASE_LIMIT.as_secs()).into());
        }
        let mut progressed = false;
        for (id, remaining) in ids.iter().zip(remaining.iter_mut()) {
            while *remaining > 0 {
                seq += 1;
                let message = Message::new(payload.clone()).with_message_id(format!("m{seq}"));
                match hub.enqueue_c2d(id, message) {
                    Ok(()) => {
                        *remaining -= 1;
                        left -= 1;
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::QueueFull => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if progressed {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (clients, last) = join_all(receivers, deadline).await?;
    Ok((clients, last.saturating_duration_since(start)))
}

/// `count` ping round trips on every connection at once.
async fn ping_round(clients: Vec<RawMqtt>, count: usize) -> Result<(Vec<RawMqtt>, Duration)> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        tasks.push(tokio::spawn(client.ping(count, PING_WINDOW)));
    }
    let (clients, last) = join_all(tasks, start + PHASE_LIMIT).await?;
    Ok((clients, last.saturating_duration_since(start)))
}

/// Waits for every client task; returns the clients and the latest finishing instant.
async fn join_all(
    tasks: Vec<tokio::task::JoinHandle<Result<(RawMqtt, Instant)>>>,
    deadline: Instant,
) -> Result<(Vec<RawMqtt>, Instant)> {
    let mut clients = Vec::with_capacity(tasks.len());
    let mut last: Option<Instant> = None;
    for task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let (client, at) = timeout(left, task)
            .await
            .map_err(|_| format!("a phase took over {} s", PHASE_LIMIT.as_secs()))???;
        clients.push(client);
        last = Some(last.map_or(at, |l| l.max(at)));
    }
    Ok((clients, last.unwrap_or_else(Instant::now)))
}

// ---------------------------------------------------------------------------------------------
// 2. RSS per idle connected device, hub in its own process.

struct IdleMeasure {
    devices: usize,
    baseline_kib: u64,
    after_kib: u64,
}

impl IdleMeasure {
    fn per_device_kib(&self) -> f64 {
        (self.after_kib as f64 - self.baseline_kib as f64) / self.devices as f64
    }
}

enum IdleOutcome {
    Measured(IdleMeasure),
    Skipped { devices: usize, why: String },
}

async fn idle_memory(hub_exe: &Path) -> Result<Vec<IdleOutcome>> {
    println!();
    println!(
        "== 2. hub RSS per idle connected device: iothub-local process, fresh per size, keep-alive \
         {IDLE_KEEP_ALIVE} s, subscribed to C2D =="
    );
    let limit = open_files_soft_limit()?;
    println!(
        "open-file soft limit: {} (each process needs N + {FD_MARGIN})",
        limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string())
    );
    println!(
        "{:>8}  {:>13}  {:>13}  {:>11}  {:>10}  {:>10}",
        "devices", "baseline MiB", "connected MiB", "delta MiB", "KiB/device", "connect s"
    );
    let mut outcomes = Vec::with_capacity(IDLE_SIZES.len());
    for devices in IDLE_SIZES {
        let needed = devices as u64 + FD_MARGIN;
        if limit.is_some_and(|l| l < needed) {
            let why = format!(
                "open-file limit {} < {needed}; run `ulimit -n {needed}` or higher first",
                limit.unwrap_or_default()
            );
            println!("{:>8}  skipped: {why}", thousands(devices));
            outcomes.push(IdleOutcome::Skipped { devices, why });
            continue;
        }
        let (measure, connect_time) = idle_case(hub_exe, devices).await?;
        println!(
            "{:>8}  {:>13.1}  {:>13.1}  {:>11.1}  {:>10.1}  {:>10.1}",
            thousands(devices),
            mib(measure.baseline_kib),
            mib(measure.after_kib),
            mib(measure.after_kib.saturating_sub(measure.baseline_kib)),
            measure.per_device_kib(),
            connect_time.as_secs_f64()
        );
        outcomes.push(IdleOutcome::Measured(measure));
    }
    Ok(outcomes)
}

async fn idle_case(hub_exe: &Path, devices: usize) -> Result<(IdleMeasure, Duration)> {
    let mut hub = HubProcess::start(hub_exe, "d", devices, HUB_START_LIMIT).await?;
    let pid = hub.pid();
    let port = hub.mqtt_port()?;
    let connection_strings = hub.connection_strings().to_vec();
    let ca_pem = hub.ca_pem().to_owned();
    let connector = tls_connector(&ca_pem)?;

    tokio::time::sleep(SETTLE).await;
    let baseline_kib = vm_rss_kib(pid)?;

    let connect_start = Instant::now();
    let clients = timeout(
        PHASE_LIMIT,
        connect_all(&connector, port, &connection_strings, IDLE_KEEP_ALIVE),
    )
    .await
    .map_err(|_| {
        format!(
            "connecting {devices} devices took over {} s",
            PHASE_LIMIT.as_secs()
        )
    })??;
    let connect_time = connect_start.elapsed();
    tokio::time::sleep(SETTLE).await;
    if let Some(status) = hub.exited()? {
        return Err(format!("the hub process exited: {status}").into());
    }
    let after_kib = vm_rss_kib(pid)?;

    drop(clients);
    hub.stop().await?;
    Ok((
        IdleMeasure {
            devices,
            baseline_kib,
            after_kib,
        },
        connect_time,
    ))
}
