//! Interop with the official Azure IoT Python SDKs (azure-iot-device 2.14.0, azure-iot-hub
//! 2.7.0): the peers in `tests/interop/` talk to an in-process [`LocalHub`] over loopback, and
//! every test checks what the SDK decoded, so a wrong wire format fails here.
//!
//! Needs a venv made by `tests/interop/setup-python.sh VENV`, passed as
//! `IOTHUB_PYTHON=VENV/bin/python`. Without it each test prints a `skipped:` line and passes,
//! unless `IOTHUB_REQUIRE_INTEROP=1`, which turns the missing venv into a failure (for CI).
//! See `tests/interop/README.md`.
#![cfg(feature = "local-hub")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub::local_hub::LocalHub;
use iothub::protocol::FeedbackStatus;
use iothub::{Ack, Message};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long the peers may run (`--timeout`): Python start-up, SDK import, TLS and the exchange.
const PEER_DEADLINE_SECS: u32 = 60;
/// How long the test waits for any one line or exit of a peer: longer than the peer's own
/// deadline, so that a stuck peer reports its own timeout (exit 2 and a stage) first.
const PEER_WAIT: Duration = Duration::from_secs(PEER_DEADLINE_SECS as u64 + 15);
/// How long any wait on the hub (telemetry, feedback) may take.
const HUB_WAIT: Duration = Duration::from_secs(30);

/// The venv's python, from `IOTHUB_PYTHON`; `None` means "skip this test".
fn python() -> Option<PathBuf> {
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
            eprintln!("skipped: set IOTHUB_PYTHON (see tests/interop/README.md)");
            None
        }
    }
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

async fn hub() -> LocalHub {
    LocalHub::builder()
        .feedback_flush_interval(Duration::from_millis(50))
        .start()
        .await
        .expect("the local hub starts")
}

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("iothub-interop-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        TempFile(path)
    }

    fn path(&self) -> &Path {
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
fn python_device_connection_string(hub_string: &str) -> String {
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
struct Peer {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl Peer {
    fn spawn(python: &Path, script: &str, args: &[String], ca_file: &Path) -> Peer {
        let mut cmd = Command::new(python);
        cmd.arg(interop_dir().join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // This machine (and CI images) export these pointing at the system bundle; each names
            // one file, so override them with the test CA rather than inherit (interop.md §3).
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
            .unwrap_or_else(|e| panic!("cannot start {} {script}: {e}", python.display()));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
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
            stderr,
            stderr_task: Some(stderr_task),
        }
    }

    /// Kills the peer and describes the failure with everything it wrote to stderr.
    async fn failure(&mut self, what: &str) -> String {
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

    /// The next line on stdout.
    async fn line(&mut self, what: &str) -> String {
        let problem = match timeout(PEER_WAIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => return line,
            Ok(Ok(None)) => format!("stdout ended while waiting for {what}"),
            Ok(Err(e)) => format!("cannot read stdout while waiting for {what}: {e}"),
            Err(_) => format!("no {what} within {PEER_WAIT:?}"),
        };
        panic!("{}", self.failure(&problem).await)
    }

    /// Waits for a line that is exactly `expected`.
    async fn expect_line(&mut self, expected: &str) {
        let line = self.line(&format!("the line {expected:?}")).await;
        if line != expected {
            let problem = format!("expected the line {expected:?}, got {line:?}");
            panic!("{}", self.failure(&problem).await);
        }
    }

    /// The next line on stdout, parsed as JSON.
    async fn json_line(&mut self, what: &str) -> Value {
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
    async fn expect_success(&mut self) {
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

fn device_args(
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
fn hub_time_text(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .unwrap()
}

/// A C2D message with every system property the Python SDK exposes and custom properties whose
/// names and values need percent-encoding in the topic.
async fn c2d_to_python_device(websockets: bool) {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let device_id = if websockets { "py-wss" } else { "py-tls" };
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut feedback = hub.feedback();

    let extra: &[&str] = if websockets { &["--websockets"] } else { &[] };
    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        1,
        extra,
    );
    let mut peer = Peer::spawn(&python, "py_device.py", &args, ca.path());
    peer.expect_line("connected").await;
    assert!(hub.is_connected(device_id), "the hub sees {device_id}");

    let message_id = format!("c2d-{device_id}-1");
    let body = r#"{"hello":"c2d","n":1,"s":"grüße"}"#;
    // Whole seconds plus 123.4 ms, an hour ahead: the hub keeps the time to 100 ns.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expiry = UNIX_EPOCH + Duration::new(now.as_secs() + 3600, 123_400_000);
    let properties = [
        ("prop1", "v1"),
        ("prop 2", "v/2"),
        ("unicode", "grüße ✓ 日本"),
        ("equals", "a=b"),
        ("amp", "x&y=z"),
        ("percent", "100%25 %"),
        ("plus", "1+1 = 2"),
        ("path/key", "?q=1#frag"),
        ("empty", ""),
    ];
    let mut message = Message::new(body)
        .with_message_id(&message_id)
        .with_correlation_id("corr/1 ä")
        .with_user_id("backend-user")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_expiry(expiry)
        .with_ack(Ack::Full);
    for (name, value) in properties {
        message = message.with_property(name, value);
    }
    hub.enqueue_c2d(device_id, message).unwrap();

    let got = peer.json_line("the C2D message as JSON").await;
    let custom: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let expected = json!({
        "data": body,
        "message_id": message_id,
        "correlation_id": "corr/1 ä",
        "user_id": "backend-user",
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "expiry_time_utc": hub_time_text(expiry),
        "ack": "full",
        "custom_properties": custom,
    });
    assert_eq!(
        got, expected,
        "what azure-iot-device decoded from the hub's PUBLISH"
    );
    peer.expect_success().await;

    // The SDK PUBACKs on receipt, which completes the message: full ack asks for Success.
    let record = timeout(HUB_WAIT, async {
        loop {
            let batch = feedback.recv().await.expect("the hub is running");
            if let Some(r) = batch
                .into_iter()
                .find(|r| r.original_message_id == message_id)
            {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no feedback for {message_id} within {HUB_WAIT:?}"));
    assert_eq!(record.status_code, FeedbackStatus::Success);
    assert_eq!(record.description, "Success");
    assert_eq!(record.device_id, device_id);
    assert_eq!(
        hub.c2d_queue_len(device_id),
        Some(0),
        "the message is completed"
    );
}

#[tokio::test]
async fn python_device_receives_c2d_over_mqtt_tls() {
    c2d_to_python_device(false).await;
}

#[tokio::test]
async fn python_device_receives_c2d_over_websockets() {
    c2d_to_python_device(true).await;
}

#[tokio::test]
async fn python_device_telemetry_reaches_the_hub() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let device_id = "py-d2c";
    let cs = hub.create_device(device_id).unwrap().to_string();
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let mut telemetry = hub.telemetry();

    let body = r#"{"t":1,"s":"grüße & 100%"}"#;
    let args = device_args(
        &python_device_connection_string(&cs),
        ca.path(),
        &hub,
        0,
        &["--send-telemetry", body],
    );
    let mut peer = Peer::spawn(&python, "py_device.py", &args, ca.path());
    peer.expect_line("connected").await;
    peer.expect_line("sent").await;
    peer.expect_success().await;

    let (from, message) = timeout(HUB_WAIT, telemetry.recv())
        .await
        .unwrap_or_else(|_| panic!("no telemetry within {HUB_WAIT:?}"))
        .expect("the hub is running");
    assert_eq!(from, device_id);
    assert_eq!(message.body_str(), Some(body));
    assert_eq!(message.message_id(), Some("d2c-1"));
    assert_eq!(message.content_type(), Some("application/json"));
    assert_eq!(message.content_encoding(), Some("utf-8"));
    assert_eq!(message.correlation_id(), None);
    assert_eq!(message.ack(), None);
    assert_eq!(
        message.properties().collect::<Vec<_>>(),
        vec![("k", Some("v v"))],
        "custom properties of the telemetry message"
    );
}

#[tokio::test]
async fn python_registry_create_get_delete() {
    let Some(python) = python() else { return };
    let hub = hub().await;
    let ca = TempFile::new("ca.pem", hub.ca_pem());
    let service = hub.service_connection_string().to_string();
    assert!(
        service.starts_with("HostName=localhost;SharedAccessKeyName=iothubowner;"),
        "a port-free iothubowner connection string: {service:?}"
    );
    let device_id = "py-registry-1";
    let args = vec![
        "--connection-string".to_owned(),
        service,
        "--ca-file".to_owned(),
        ca.path().display().to_string(),
        "--https-port".to_owned(),
        hub.https_addr().port().to_string(),
        "--device-id".to_owned(),
        device_id.to_owned(),
        "--timeout".to_owned(),
        PEER_DEADLINE_SECS.to_string(),
    ];
    let mut peer = Peer::spawn(&python, "py_registry.py", &args, ca.path());

    let device_step = |step: &str, v: &Value| {
        let ctx = format!("step {step}: {v}");
        assert_eq!(v["step"], step, "{ctx}");
        assert_eq!(v["ok"], true, "{ctx}");
        assert_eq!(v["device_id"], device_id, "{ctx}");
        assert_eq!(v["status"], "enabled", "{ctx}");
        assert_eq!(v["auth_type"], "sas", "{ctx}");
        assert_eq!(v["primary_key_matches"], true, "{ctx}");
        assert_eq!(v["secondary_key_matches"], true, "{ctx}");
        assert!(v["etag"].as_str().is_some_and(|e| !e.is_empty()), "{ctx}");
    };

    let create = peer.json_line("the create step").await;
    device_step("create", &create);
    let get = peer.json_line("the get step").await;
    device_step("get", &get);
    assert_eq!(get["etag"], create["etag"], "unchanged device, same etag");

    let delete = peer.json_line("the delete step").await;
    assert_eq!(
        delete,
        json!({"step": "delete", "ok": true, "device_id": device_id, "result": "None"})
    );

    let gone = peer.json_line("the get_deleted step").await;
    let ctx = format!("get_deleted: {gone}");
    assert_eq!(gone["step"], "get_deleted", "{ctx}");
    assert_eq!(gone["ok"], true, "{ctx}");
    assert_eq!(gone["error_status_code"], 404, "{ctx}");
    assert_eq!(gone["iothub_errorcode"], "DeviceNotFound", "{ctx}");
    assert!(
        gone["error_body"]
            .as_str()
            .is_some_and(|b| b.contains("ErrorCode:DeviceNotFound;")),
        "legacy error body: {ctx}"
    );

    peer.expect_success().await;
    assert!(
        hub.device_connection_string(device_id).is_none(),
        "the hub no longer has {device_id}"
    );
}
