//! The `iothub-local` program started by a test: its `NAME='value'` lines are read until it
//! prints `ready`, every wait bounded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// The flags that put every IoT Hub listener on a free port.
pub const FREE_PORTS: [&str; 6] = ["--mqtt-port", "0", "--https-port", "0", "--amqp-port", "0"];

/// How long `iothub-local` may take to print `ready`.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// Starts `iothub-local` with `args` (logging at warn, stdin closed, killed on drop); returns it
/// and the lines it printed before `ready`.
pub async fn start<I, S>(args: I) -> (Child, Vec<String>)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut hub = Command::new(env!("CARGO_BIN_EXE_iothub-local"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("iothub-local starts");
    let mut lines = BufReader::new(hub.stdout.take().expect("piped")).lines();
    let mut printed = Vec::new();
    loop {
        let line = timeout(READY_WAIT, lines.next_line())
            .await
            .expect("iothub-local is ready in time")
            .expect("readable output")
            .unwrap_or_else(|| panic!("iothub-local stopped; printed {printed:#?}"));
        if line == "ready" {
            return (hub, printed);
        }
        printed.push(line);
    }
}

/// The value of a printed `NAME='value'` line, unquoted (`'\''` is a quote inside the value).
pub fn printed_var(printed: &[String], name: &str) -> String {
    let quoted = printed
        .iter()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("iothub-local printed no {name}: {printed:#?}"));
    unquote(quoted)
}

/// Every printed `NAME='value'` line, unquoted.
pub fn printed_vars(printed: &[String]) -> BTreeMap<String, String> {
    printed
        .iter()
        .map(|line| {
            let (name, quoted) = line.split_once('=').expect("NAME='value'");
            (name.to_owned(), unquote(quoted))
        })
        .collect()
}

fn unquote(quoted: &str) -> String {
    quoted
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not single-quoted: {quoted}"))
        .replace("'\\''", "'")
}
