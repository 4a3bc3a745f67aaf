//! CPU time per runtime for `benches/e2e.rs`: the named threads of each Tokio runtime, read from
//! `/proc/self/task`.

use crate::support::Result;
use crate::{DEVICE_THREADS, HUB_THREADS, SERVICE_THREADS};

/// CPU nanoseconds of this process's threads whose name starts with `prefix`.
fn threads_cpu_ns(prefix: &str) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        total += thread_cpu_ns(&dir).unwrap_or(0);
    }
    Ok(total)
}

fn thread_cpu_ns(dir: &std::path::Path) -> Option<u64> {
    if let Ok(schedstat) = std::fs::read_to_string(dir.join("schedstat")) {
        return schedstat.split_whitespace().next()?.parse().ok();
    }
    // `stat`: utime and stime are fields 14 and 15, after the parenthesised name.
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000) // USER_HZ = 100 on Linux
}

#[derive(Clone, Copy)]
pub struct CpuSample {
    pub hub: u64,
    pub device: u64,
    pub service: u64,
}

impl CpuSample {
    pub fn now() -> Result<Self> {
        Ok(CpuSample {
            hub: threads_cpu_ns(HUB_THREADS)?,
            device: threads_cpu_ns(DEVICE_THREADS)?,
            service: threads_cpu_ns(SERVICE_THREADS)?,
        })
    }
}
