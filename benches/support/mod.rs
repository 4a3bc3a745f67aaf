//! Helpers shared by the bench binaries.

#![allow(dead_code)] // each bench uses a different part

pub mod hub_process;
pub mod raw_mqtt;

use std::error::Error as StdError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use iothub::SasKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::timeout;

/// Any error, for a bench's `main` to print.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// `Result` with [`BoxError`].
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The longest any single read, write or handshake may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// A deterministic 32-byte key for device `i`.
pub fn device_key(i: usize) -> SasKey {
    let mut bytes = [0u8; 32];
    for (j, byte) in bytes.iter_mut().enumerate() {
        *byte = (i.wrapping_mul(31).wrapping_add(j * 7919) % 251) as u8 ^ (j as u8);
    }
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SasKey::from_bytes(&bytes)
}

/// `target/<profile>/iothub-local`, next to `target/<profile>/deps/hub-<hash>`.
pub fn hub_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory from the bench executable")?;
    let path = dir.join(format!("iothub-local{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing; build it first with \
             `cargo build --release --features cli --bin iothub-local`",
            path.display()
        )
        .into())
    }
}

/// The median of `values` (the mean of the middle two for an even count); sorts them.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) && mid > 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The smallest and largest of `values`.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// Context switches (voluntary and not) of every thread of this process so far, from
/// `/proc/self/task/*/status` (Linux); `None` where that cannot be read.
pub fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        for line in status.lines() {
            if let Some(count) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += count.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// CPU time of every thread of this process so far, in nanoseconds, from
/// `/proc/self/task/*/schedstat` (Linux); `None` where that cannot be read.
pub fn cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// This process's soft limit on open files; `None` when unlimited.
pub fn open_files_soft_limit() -> Result<Option<u64>> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or("no `Max open files` in /proc/self/limits")?;
    let soft = line["Max open files".len()..]
        .split_whitespace()
        .next()
        .ok_or("an empty `Max open files` line")?;
    if soft == "unlimited" {
        Ok(None)
    } else {
        Ok(Some(soft.parse()?))
    }
}

/// `10000` → `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn tls_connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

pub async fn within<T, E>(what: &str, future: impl Future<Output = Result<T, E>>) -> Result<T>
where
    E: Into<BoxError>,
{
    match timeout(WAIT, future).await {
        Ok(result) => result.map_err(|e| format!("{what}: {}", e.into()).into()),
        Err(_) => Err(format!("{what}: no progress in {} s", WAIT.as_secs()).into()),
    }
}

/// A bench's `main`: finds the `iothub-local` binary, runs `bench` with it on a multi-thread
/// Tokio runtime, and turns any error into a message and a failing exit code.
pub fn run_bench<F, Fut>(name: &str, bench: F) -> ExitCode
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let hub_exe = match hub_binary() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(hub_exe)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `VmRSS` of a process, in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or("an empty VmRSS line")?
        .parse()?;
    Ok(kib)
}

/// Runs each of `tasks` as a spawned task, at most `at_once` at a time; their outputs in the
/// order they finished, or the first error (a task's or its panic).
pub async fn spawn_bounded<T, F>(
    tasks: impl IntoIterator<Item = F>,
    at_once: usize,
) -> Result<Vec<T>>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut outputs = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    for task in tasks {
        while running.len() >= at_once.max(1) {
            if let Some(joined) = running.join_next().await {
                outputs.push(joined??);
            }
        }
        running.spawn(task);
    }
    while let Some(joined) = running.join_next().await {
        outputs.push(joined??);
    }
    Ok(outputs)
}
