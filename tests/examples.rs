//! The tutorial's two programs, `examples/simulated_device.rs` and
//! `examples/send_cloud_to_device_message.rs`, run as separate processes against `iothub-local`
//! the way a user in two terminals would run them, and their set-up errors.
//!
//! `cargo test` builds the examples before it runs the tests, next to the `iothub-local` binary
//! (`target/debug/examples/`); when they are not there (`cargo test --test examples` alone
//! builds no example), the tests say so and pass, unless `IOTHUB_REQUIRE_EXAMPLES=1`.
//! `iothub-local` needs the `cli` feature (as `cargo test --all-features` enables).
#![cfg(all(feature = "device", feature = "service", feature = "cli"))]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use iothub_local_process::printed_var;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

mod iothub_local_process;

/// Every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// The environment variables the examples read; cleared for every child so that the test
/// does not depend on the caller's environment.
const EXAMPLE_VARS: [&str; 8] = [
    "IOTHUB_DEVICE_CONNECTION_STRING",
    "IOTHUB_CONNECTION_STRING",
    "IOTHUB_DEVICE_ID",
    "IOTHUB_CA_FILE",
    "IOTHUB_AMQP_PORT",
    "IOTHUB_HTTPS_PORT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The built example `name`, if `cargo test` built it.
fn example(name: &str) -> Option<PathBuf> {
    let hub = PathBuf::from(env!("CARGO_BIN_EXE_iothub-local"));
    let path = hub
        .parent()?
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("IOTHUB_REQUIRE_EXAMPLES").is_none_or(|v| v != "1"),
        "{} is not built (run `cargo test --all-features`)",
        path.display()
    );
    eprintln!(
        "skipped: {} is not built; `cargo test --all-features` builds the examples",
        path.display()
    );
    None
}

fn command(path: &PathBuf) -> Command {
    let mut command = Command::new(path);
    for var in EXAMPLE_VARS {
        command.env_remove(var);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a program to its end; returns its exit code, stdout and stderr.
async fn run(mut command: Command) -> (Option<i32>, String, String) {
    let output = timeout(WAIT, command.output())
        .await
        .expect("the example ends in time")
        .expect("the example runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a set-up error: exit code 2 and one line on stderr naming `var`.
fn assert_setup_error(result: (Option<i32>, String, String), var: &str) {
    let (code, stdout, stderr) = result;
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(var), "names {var}: {stderr}");
}

#[tokio::test]
async fn simulated_device_names_a_missing_or_malformed_variable() {
    let Some(device) = example("simulated_device") else {
        return;
    };
    assert_setup_error(
        run(command(&device)).await,
        "IOTHUB_DEVICE_CONNECTION_STRING",
    );

    let mut malformed = command(&device);
    malformed.env(
        "IOTHUB_DEVICE_CONNECTION_STRING",
        "HostName=hub.example;DeviceId=dev1;SharedAccessKey=not base64!",
    );
    let result = run(malformed).await;
    assert!(
        !result.2.contains("not base64!"),
        "no key shown: {}",
        result.2
    );
    assert_setup_error(result, "IOTHUB_DEVICE_CONNECTION_STRING");

    let mut no_ca = command(&device);
    no_ca
        .env(
            "IOTHUB_DEVICE_CONNECTION_STRING",
            "HostName=hub.example;DeviceId=dev1;SharedAccessKey=cGFzc3dvcmQ=",
        )
        .env("IOTHUB_CA_FILE", "/nonexistent/ca.pem");
    assert_setup_error(run(no_ca).await, "IOTHUB_CA_FILE");
}

#[tokio::test]
async fn sender_names_a_missing_or_malformed_variable() {
    let Some(sender) = example("send_cloud_to_device_message") else {
        return;
    };
    const SERVICE: &str =
        "HostName=hub.example;SharedAccessKeyName=service;SharedAccessKey=cGFzc3dvcmQ=";
    assert_setup_error(run(command(&sender)).await, "IOTHUB_CONNECTION_STRING");

    let mut malformed = command(&sender);
    malformed.env(
        "IOTHUB_CONNECTION_STRING",
        "HostName=hub.example;SharedAccessKeyName=service",
    );
    assert_setup_error(run(malformed).await, "IOTHUB_CONNECTION_STRING");

    let mut no_device = command(&sender);
    no_device.env("IOTHUB_CONNECTION_STRING", SERVICE);
    assert_setup_error(run(no_device).await, "IOTHUB_DEVICE_ID");

    let mut bad_device = command(&sender);
    bad_device
        .env("IOTHUB_CONNECTION_STRING", SERVICE)
        .env("IOTHUB_DEVICE_ID", "two words");
    assert_setup_error(run(bad_device).await, "IOTHUB_DEVICE_ID");

    let mut bad_port = command(&sender);
    bad_port
        .env("IOTHUB_CONNECTION_STRING", SERVICE)
        .env("IOTHUB_DEVICE_ID", "dev1")
        .env("IOTHUB_AMQP_PORT", "amqp");
    assert_setup_error(run(bad_port).await, "IOTHUB_AMQP_PORT");
}

/// Reads lines until one satisfies `done`; returns them all.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<impl AsyncRead + Unpin>>,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = timeout(WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no expected line within {WAIT:?}; got {seen:#?}"))
            .expect("readable output")
            .unwrap_or_else(|| panic!("output ended; got {seen:#?}"));
        let last = done(&line);
        seen.push(line);
        if last {
            return seen;
        }
    }
}

/// `iothub-local` on free ports with device `dev1`: the process, its printed variables and the
/// AMQP port (as printed: port 0 picks it).
async fn start_hub(ca_file: &std::path::Path) -> (Child, Vec<String>, u16) {
    let flags = iothub_local_process::FREE_PORTS.into_iter();
    let flags = flags.chain(["--device", "dev1", "--ca-out"]);
    let mut args: Vec<&OsStr> = flags.map(OsStr::new).collect();
    args.push(ca_file.as_os_str());
    let (hub, printed) = iothub_local_process::start(args).await;
    let amqp_port = printed_var(&printed, "IOTHUB_AMQP_PORT")
        .parse()
        .expect("a port number");
    (hub, printed, amqp_port)
}

#[tokio::test]
async fn the_tutorial_in_two_terminals_against_iothub_local() {
    let (Some(device_program), Some(sender_program)) = (
        example("simulated_device"),
        example("send_cloud_to_device_message"),
    ) else {
        return;
    };
    let ca_file = std::env::temp_dir().join(format!(
        "iothub-examples-test-{}-ca.pem",
        std::process::id()
    ));
    let (mut hub, printed, amqp_port) = start_hub(&ca_file).await;
    let device_cs = printed_var(&printed, "IOTHUB_DEVICE_CONNECTION_STRING");
    assert_eq!(
        device_cs,
        printed_var(&printed, "IOTHUB_DEVICE_CONNECTION_STRING_DEV1"),
        "the first device is also printed under the name the example reads"
    );
    assert_eq!(printed_var(&printed, "IOTHUB_DEVICE_ID"), "dev1");
    let service_cs = printed_var(&printed, "IOTHUB_CONNECTION_STRING");

    // Terminal 1: the device, trusting the hub's CA through SSL_CERT_FILE.
    let mut device = command(&device_program)
        .args(["--count", "2"])
        .env("IOTHUB_DEVICE_CONNECTION_STRING", &device_cs)
        .env("SSL_CERT_FILE", &ca_file)
        .spawn()
        .expect("simulated_device starts");
    let mut device_lines = BufReader::new(device.stdout.take().expect("piped")).lines();
    read_until(&mut device_lines, |line| {
        line.starts_with("Waiting for C2D messages")
    })
    .await;

    // Terminal 2: the back end.
    let mut sender = command(&sender_program);
    sender
        .args(["--timeout", "45"])
        .env("IOTHUB_CONNECTION_STRING", &service_cs)
        .env("IOTHUB_DEVICE_ID", "dev1")
        .env("IOTHUB_AMQP_PORT", amqp_port.to_string())
        .env("SSL_CERT_FILE", &ca_file);
    let (code, sender_out, sender_err) = run(sender).await;
    assert_eq!(
        code,
        Some(0),
        "sender stdout: {sender_out}\nstderr: {sender_err}"
    );
    for line in [
        "Sending message: 0",
        "Sending message: 1",
        "Feedback for message_0: Success (device dev1)",
        "Feedback for message_1: Success (device dev1)",
    ] {
        assert!(
            sender_out.lines().any(|l| l == line),
            "sender printed {line:?}: {sender_out}"
        );
    }

    // The device printed both messages with their properties, and stopped after two.
    let device_out = read_until(&mut device_lines, |line| line == "Total calls received: 2").await;
    let status = timeout(WAIT, device.wait())
        .await
        .expect("the device exits after --count messages")
        .expect("wait");
    assert!(status.success(), "device exit: {status}");
    let count = |wanted: &str| device_out.iter().filter(|l| *l == wanted).count();
    assert_eq!(count("Message received:"), 2, "{device_out:#?}");
    for i in 0..2 {
        for line in [
            format!("    message_id: message_{i}"),
            format!("    correlation_id: correlation_{i}"),
            format!("    custom property testProperty: PropMsg_{i}"),
        ] {
            assert_eq!(count(&line), 1, "{line:?} in {device_out:#?}");
        }
    }
    assert_eq!(count("    content_type: application/json"), 2);
    assert_eq!(count("    ack: full"), 2);
    let data = device_out
        .iter()
        .filter(|l| l.starts_with("    data: {\"service client sent a message\": "))
        .count();
    assert_eq!(data, 2, "{device_out:#?}");

    hub.kill().await.expect("iothub-local stops");
    let _ = std::fs::remove_file(&ca_file);
}
