//! Part 3 of `benches/device.rs`: the memory one connected `DeviceClient` costs, with the hub
//! in an `iothub-local` process of its own.

use std::path::Path;
use std::time::{Duration, Instant};

use iothub::auth::DeviceConnectionString;
use iothub::device::{AckMode, DeviceClient};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::PHASE_LIMIT;
use super::support::hub_process::HubProcess;
use super::support::{
    Result, WAIT, mib, open_files_soft_limit, spawn_bounded, thousands, vm_rss_kib, within,
};

/// Measured clients: with the warm-up client, 1,000 connections from 127.0.0.1, the hub's
/// default bound from one address (`ConnectionLimits::default`), kept so that figures compare
/// with earlier runs.
const RSS_CLIENTS: usize = 999;
/// TLS handshakes + CONNECTs in progress at once.
const CONNECT_CONCURRENCY: usize = 100;
/// Open files a process needs beyond one per connection.
const FD_MARGIN: u64 = 200;
/// How long the hub process may take to print `ready`.
const HUB_START_LIMIT: Duration = Duration::from_secs(60);
/// Pause before reading RSS.
const SETTLE: Duration = Duration::from_secs(1);

pub(super) struct MemoryMeasure {
    pub(super) clients: usize,
    baseline_kib: u64,
    after_kib: u64,
}

impl MemoryMeasure {
    pub(super) fn per_client_kib(&self) -> f64 {
        (self.after_kib as f64 - self.baseline_kib as f64) / self.clients as f64
    }
}

pub(super) enum MemoryOutcome {
    Measured(MemoryMeasure),
    Skipped(String),
}

async fn connect_device(cs: DeviceConnectionString, ca_pem: String) -> Result<DeviceClient> {
    let id = cs.device_id().to_owned();
    within(
        &format!("DeviceClient connect {id}"),
        DeviceClient::builder(cs)
            .trust_ca_pem(ca_pem)
            .ack_mode(AckMode::Auto)
            .connect(),
    )
    .await
}

/// Connects one `DeviceClient` per connection string, `CONNECT_CONCURRENCY` at a time.
async fn connect_all(
    devices: &[DeviceConnectionString],
    ca_pem: &str,
) -> Result<Vec<DeviceClient>> {
    let connects = devices
        .iter()
        .map(|cs| connect_device(cs.clone(), ca_pem.to_owned()));
    spawn_bounded(connects, CONNECT_CONCURRENCY).await
}

/// Closes every client, `CONNECT_CONCURRENCY` at a time; returns how many did not close in
/// time.
async fn close_all(clients: Vec<DeviceClient>) -> usize {
    let mut failed = 0;
    let mut tasks = JoinSet::new();
    for client in clients {
        while tasks.len() >= CONNECT_CONCURRENCY {
            if let Some(joined) = tasks.join_next().await {
                failed += usize::from(!matches!(joined, Ok(Ok(Ok(())))));
            }
        }
        tasks.spawn(async move { timeout(WAIT, client.close()).await });
    }
    while let Some(joined) = tasks.join_next().await {
        failed += usize::from(!matches!(joined, Ok(Ok(Ok(())))));
    }
    failed
}

pub(super) async fn client_memory(hub_exe: &Path) -> Result<MemoryOutcome> {
    println!(
        "== 3. RSS per connected DeviceClient: {} clients in this process, hub in an \
         iothub-local process ==",
        thousands(RSS_CLIENTS)
    );
    let limit = open_files_soft_limit()?;
    let needed = RSS_CLIENTS as u64 + FD_MARGIN;
    println!(
        "open-file soft limit: {} (each process needs {needed})",
        limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string())
    );
    if let Some(limit) = limit.filter(|&l| l < needed) {
        let why = format!("open-file limit {limit} < {needed}; run `ulimit -n {needed}` first");
        println!("skipped: {why}");
        return Ok(MemoryOutcome::Skipped(why));
    }

    // Device 0 is the warm-up client; 1..=RSS_CLIENTS are measured.
    let mut hub = HubProcess::start(hub_exe, "d", RSS_CLIENTS + 1, HUB_START_LIMIT).await?;
    let connection_strings = hub.connection_strings().to_vec();
    let ca_pem = hub.ca_pem().to_owned();
    let warm = connect_device(connection_strings[0].clone(), ca_pem.clone()).await?;
    tokio::time::sleep(SETTLE).await;
    let baseline_kib = vm_rss_kib(std::process::id())?;

    let connect_start = Instant::now();
    let clients = timeout(PHASE_LIMIT, connect_all(&connection_strings[1..], &ca_pem))
        .await
        .map_err(|_| {
            format!(
                "connecting {RSS_CLIENTS} clients took over {} s",
                PHASE_LIMIT.as_secs()
            )
        })??;
    let connect_time = connect_start.elapsed();
    tokio::time::sleep(SETTLE).await;
    let after_kib = vm_rss_kib(std::process::id())?;
    if let Some(status) = hub.exited()? {
        return Err(format!("the hub process exited: {status}").into());
    }
    let measure = MemoryMeasure {
        clients: clients.len(),
        baseline_kib,
        after_kib,
    };
    println!(
        "{:>8}  {:>13}  {:>13}  {:>10}  {:>10}  {:>10}",
        "clients", "baseline MiB", "connected MiB", "delta MiB", "KiB/client", "connect s"
    );
    println!(
        "{:>8}  {:>13.1}  {:>13.1}  {:>10.1}  {:>10.1}  {:>10.1}",
        thousands(measure.clients),
        mib(baseline_kib),
        mib(after_kib),
        mib(after_kib.saturating_sub(baseline_kib)),
        measure.per_client_kib(),
        connect_time.as_secs_f64()
    );

    let close_start = Instant::now();
    let mut all = clients;
    all.push(warm);
    let total = all.len();
    let failed = timeout(PHASE_LIMIT, close_all(all))
        .await
        .map_err(|_| format!("closing took over {} s", PHASE_LIMIT.as_secs()))?;
    println!(
        "closed {} of {total} clients in {:.1} s",
        total - failed,
        close_start.elapsed().as_secs_f64()
    );
    hub.stop().await?;
    Ok(MemoryOutcome::Measured(measure))
}
