//! Shared by the interop tests: starting the official SDK peers of `tests/interop/` (Python and
//! Node), reading their output with deadlines, and the hub and files they need.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use iothub::local_hub::LocalHub;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long the peers may run (`--timeout`): Python start-up, SDK import, TLS and the exchange.
pub const PEER_DEADLINE_SECS: u32 = 60;
/// How long the test waits for any one line or exit of a peer: longer than the peer's own
/// deadline, so that a stuck peer reports its own timeout (exit 2 and a stage) first.
pub const PEER_WAIT: Duration = Duration::from_secs(PEER_DEADLINE_SECS as u64 + 15);
/// How long any wait on the hub (telemetry, feedback) may take.
pub const HUB_WAIT: Duration = Duration::from_secs(30);

/// The venv's python, from `IOTHUB_PYTHON`; `None` means "skip this test".
pub fn python() -> Option<PathBuf> {
    let required = std::env::var("IOTHUB_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    match std::env::var_os("IOTHUB_PYTHON").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "IOTHUB_PYTHON={} is not a file; create the venv with \
                 `tests/interop/setup-python.sh VENV` and set IOTHUB_PYTHON=VENV/bin/python",
                path.display()
            );
            Some(path)
        }
        None if required => panic!(
            "IOTHUB_REQUIRE_INTEROP=1 but IOTHUB_PYTHON is not set: run \
             `tests/interop/setup-python.sh VENV` and set IOTHUB_PYTHON=VENV/bin/python \
             (see tests/interop/README.md)"
        ),
        None => {
            report_skip(
                "IOTHUB_PYTHON",
                "tests/interop/setup-python.sh VENV",
                "VENV/bin/python",
            );
            None
        }
    }
}

pub fn interop_dir() -> PathBuf {
    // The root crate's tests/, also for the `benches/` workspace member that includes this file.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("tests/interop");
    if dir.is_dir() {
        dir
    } else {
        manifest.join("../tests/interop")
    }
}

pub async fn hub() -> LocalHub {
    LocalHub::builder()
        .feedback_flush_interval(Duration::from_millis(50))
        .start()
        .await
        .expect("the local hub starts")
}

/// A file in the temp directory, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("iothub-interop-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The hub's device connection string without `GatewayHostName`.
///
/// The hub hands out `...;GatewayHostName=localhost:PORT` (its MQTT port), which Node accepts.
/// azure-iot-device 2.14.0 does not: it passes GatewayHostName verbatim as the host to
/// `paho.Client.connect(host, 8883)` (`mqtt_transport.py`), so `localhost:PORT` would be
/// resolved as a host name, and py_device.py's port patch only maps the port. Without the
/// gateway the SDK dials `HostName=localhost` on 8883 / 443, which the patch maps to the hub's
/// MQTT / HTTPS port; the user name and SAS `sr` use `localhost` either way.
pub fn python_device_connection_string(hub_string: &str) -> String {
    assert!(
        hub_string.contains(";GatewayHostName=localhost:"),
        "expected a GatewayHostName with a port in {hub_string:?}"
    );
    hub_string
        .split(';')
        .filter(|part| !part.starts_with("GatewayHostName="))
        .collect::<Vec<_>>()
        .join(";")
}

/// A running Python peer: stdout is read line by line, stderr is collected for failure messages.
/// Killed when dropped (a failing assertion kills it).
pub struct Peer {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The peer's stdin, for peers driven line by line (`Peer::send_line`); the others never
    /// read it.
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl Peer {
    /// Runs a Python peer with the venv's `python`.
    pub fn spawn(python: &Path, script: &str, args: &[String], ca_file: &Path) -> Peer {
        Peer::spawn_program(python, script, args, ca_file, &[])
    }

    /// Runs a Node peer with `node`, resolving packages in `node_modules` (`NODE_PATH`) and
    /// trusting the CA through `NODE_EXTRA_CA_CERTS`, the only way for azure-iothub's AMQP
    /// transport (azure-iothub's `Amqp` transport passes no `ca` option to rhea).
    pub fn spawn_node(node_modules: &Path, script: &str, args: &[String], ca_file: &Path) -> Peer {
        let node = std::env::var_os("IOTHUB_NODE").unwrap_or_else(|| "node".into());
        let env = [
            ("NODE_PATH", node_modules.as_os_str()),
            ("NODE_EXTRA_CA_CERTS", ca_file.as_os_str()),
        ];
        Peer::spawn_program(Path::new(&node), script, args, ca_file, &env)
    }

    fn spawn_program(
        program: &Path,
        script: &str,
        args: &[String],
        ca_file: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Peer {
        let mut cmd = Command::new(program);
        cmd.envs(env.iter().copied());
        cmd.arg(interop_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // This machine (and CI images) export these pointing at the system bundle; each names
            // one file, so override them with the test CA rather than inherit.
            .env("SSL_CERT_FILE", ca_file)
            .env("REQUESTS_CA_BUNDLE", ca_file)
            .env("CURL_CA_BUNDLE", ca_file)
            // Loopback only: never through an inherited proxy.
            .env("NO_PROXY", "localhost,127.0.0.1,::1")
            .env("no_proxy", "localhost,127.0.0.1,::1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "IOTEDGE_GATEWAYHOSTNAME",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {script}: {e}", program.display()));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stdin = child.stdin.take();
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf).await {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Peer {
            name: script.to_owned(),
            child,
            stdout,
            stdin,
            stderr,
            stderr_task: Some(stderr_task),
        }
    }

    /// Kills the peer and describes the failure with everything it wrote to stderr.
    pub async fn failure(&mut self, what: &str) -> String {
        let _ = self.child.start_kill();
        let status = match timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => "unknown exit status".to_owned(),
        };
        if let Some(task) = self.stderr_task.take() {
            let _ = timeout(Duration::from_secs(5), task).await;
        }
        let stderr = self.stderr.lock().unwrap().clone();
        format!(
            "{}: {what} ({status})\n--- stderr of {} ---\n{stderr}--- end of stderr ---",
            self.name, self.name
        )
    }

    /// Writes `line` and a newline to the peer's stdin.
    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the peer's stdin is piped");
        let written = async {
            stdin.write_all(format!("{line}\n").as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(e) = timeout(PEER_WAIT, written)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        {
            let problem = format!("cannot write {line:?} to stdin: {e}");
            panic!("{}", self.failure(&problem).await);
        }
    }

    /// The next line on stdout.
    pub async fn line(&mut self, what: &str) -> String {
        let problem = match timeout(PEER_WAIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => return line,
            Ok(Ok(None)) => format!("stdout ended while waiting for {what}"),
            Ok(Err(e)) => format!("cannot read stdout while waiting for {what}: {e}"),
            Err(_) => format!("no {what} within {PEER_WAIT:?}"),
        };
        panic!("{}", self.failure(&problem).await)
    }

    /// Waits for a line that is exactly `expected`.
    pub async fn expect_line(&mut self, expected: &str) {
        let line = self.line(&format!("the line {expected:?}")).await;
        if line != expected {
            let problem = format!("expected the line {expected:?}, got {line:?}");
            panic!("{}", self.failure(&problem).await);
        }
    }

    /// The next line on stdout, parsed as JSON.
    pub async fn json_line(&mut self, what: &str) -> Value {
        let line = self.line(what).await;
        match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => {
                let problem = format!("{what} is not JSON ({e}): {line:?}");
                panic!("{}", self.failure(&problem).await)
            }
        }
    }

    /// Waits for the peer to exit with status 0, having written nothing more on stdout.
    pub async fn expect_success(&mut self) {
        let mut extra = Vec::new();
        loop {
            match timeout(PEER_WAIT, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => extra.push(line),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    let problem = format!("cannot read stdout: {e}");
                    panic!("{}", self.failure(&problem).await);
                }
                Err(_) => {
                    let problem = format!("stdout still open after {PEER_WAIT:?}");
                    panic!("{}", self.failure(&problem).await);
                }
            }
        }
        let status = match timeout(PEER_WAIT, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("{}", self.failure(&format!("wait failed: {e}")).await),
            Err(_) => panic!("{}", self.failure("did not exit").await),
        };
        if !status.success() || !extra.is_empty() {
            let problem = format!("exited with {status}; unexpected stdout lines: {extra:?}");
            panic!("{}", self.failure(&problem).await);
        }
    }
}

pub fn device_args(
    connection_string: &str,
    ca_file: &Path,
    hub: &LocalHub,
    count: u32,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "--connection-string".to_owned(),
        connection_string.to_owned(),
        "--ca-file".to_owned(),
        ca_file.display().to_string(),
        "--mqtt-port".to_owned(),
        hub.mqtt_addr().port().to_string(),
        "--wss-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// `$.exp` as IoT Hub writes it: ISO 8601 UTC with seven fractional digits.
pub fn hub_time_text(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .unwrap()
}

/// The Node peers' `node_modules`, from `IOTHUB_NODE_MODULES`; `None` means "skip this test".
pub fn node_modules() -> Option<PathBuf> {
    let required = std::env::var("IOTHUB_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    match std::env::var_os("IOTHUB_NODE_MODULES").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.join("azure-iothub").is_dir(),
                "IOTHUB_NODE_MODULES={} has no azure-iothub; run \
                 `tests/interop/setup-node.sh DIR` and set IOTHUB_NODE_MODULES=DIR/node_modules",
                path.display()
            );
            Some(path)
        }
        None if required => panic!(
            "IOTHUB_REQUIRE_INTEROP=1 but IOTHUB_NODE_MODULES is not set: run \
             `tests/interop/setup-node.sh DIR` and set IOTHUB_NODE_MODULES=DIR/node_modules \
             (see tests/interop/README.md)"
        ),
        None => {
            report_skip(
                "IOTHUB_NODE_MODULES",
                "tests/interop/setup-node.sh DIR",
                "DIR/node_modules",
            );
            None
        }
    }
}

/// Says that an interop test is skipped. libtest captures `eprintln!` of a passing test, so
/// `cargo test` would show the test as passed in 0.00 s and nothing else: the first skip of
/// each test binary (for each variable) is written to the process's stderr directly, past the
/// capture, naming the variable, the set-up script and the README; every skip also prints the
/// usual `skipped:` line (seen with `--nocapture`).
pub fn report_skip(variable: &str, setup: &str, value: &str) {
    use std::io::Write as _;
    static REPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let first = {
        let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
        let first = !reported.iter().any(|v| v == variable);
        if first {
            reported.push(variable.to_owned());
        }
        first
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    eprintln!("skipped: set {variable} (see tests/interop/README.md)");
    if first {
        let binary = std::env::args()
            .next()
            .map(|path| {
                let name = Path::new(&path)
                    .file_name()
                    .map_or(path.clone(), |n| n.to_string_lossy().into_owned());
                // cargo names test binaries `{file}-{16 hex digits}`.
                match name.rsplit_once('-') {
                    Some((file, hash))
                        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        format!("tests/{file}.rs")
                    }
                    _ => name,
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "note: interop tests with the official Azure SDKs are SKIPPED in {binary} (first: \
             {test}): {variable} is not set. To run them: `{setup}` and set {variable}={value} \
             (see tests/interop/README.md); IOTHUB_REQUIRE_INTEROP=1 makes a skip a failure."
        );
    }
}
