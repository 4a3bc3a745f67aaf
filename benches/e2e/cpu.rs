//! CPU time per runtime for `benches/e2e.rs`: the named threads of each Tokio runtime, read from
//! `/proc/self/task`.

use crate::support::Result;
use crate::{DEVICE_THREADS, HUB_THREADS, SERVICE_THREADS};

/// CPU nanoseconds, and times scheduled onto a CPU, of this process's threads whose name
/// starts with `prefix`.
fn threads_cpu(prefix: &str) -> Result<(u64, u64)> {
    let mut total = (0, 0);
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let (ns, runs) = thread_cpu(&dir).unwrap_or((0, 0));
        total.0 += ns;
        total.1 += runs;
    }
    Ok(total)
}

/// `schedstat`: nanoseconds on a CPU, nanoseconds waiting for one, and the number of times the
/// thread was put on a CPU (each wake-up, and each return after being preempted). Without
/// `schedstat` the count is 0.
fn thread_cpu(dir: &std::path::Path) -> Option<(u64, u64)> {
    if let Ok(schedstat) = std::fs::read_to_string(dir.join("schedstat")) {
        let mut fields = schedstat.split_whitespace();
        let ns = fields.next()?.parse().ok()?;
        let runs = fields.nth(1)?.parse().ok()?;
        return Some((ns, runs));
    }
    // `stat`: utime and stime are fields 14 and 15, after the parenthesised name.
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks * 10_000_000, 0)) // USER_HZ = 100 on Linux
}

#[derive(Clone, Copy)]
pub struct CpuSample {
    pub hub: u64,
    /// Times a hub thread was put on a CPU.
    pub hub_runs: u64,
    pub device: u64,
    pub service: u64,
}

impl CpuSample {
    pub fn now() -> Result<Self> {
        let (hub, hub_runs) = threads_cpu(HUB_THREADS)?;
        Ok(CpuSample {
            hub,
            hub_runs,
            device: threads_cpu(DEVICE_THREADS)?.0,
            service: threads_cpu(SERVICE_THREADS)?.0,
        })
    }
}
