//! The `iothub-local` program: `--config`, `--env-out`, what it prints, and the files it leaves.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use iothub_local_process::{FREE_PORTS, start};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

mod iothub_local_process;

const WAIT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iothub-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What `sh` makes of `script`.
fn shell(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// What `iothub-local` printed on stderr when `args` made it exit with a failure before it
/// started anything.
async fn refused(args: &[&str]) -> String {
    let out = timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_iothub-local"))
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names(printed: &[String]) -> Vec<&str> {
    printed
        .iter()
        .map(|l| l.split_once('=').expect("NAME=value").0)
        .collect()
}

#[tokio::test]
async fn config_file_flags_and_env_file_give_a_shell_the_exact_strings() {
    let dir = scratch("env");
    let config = dir.join("hub.json");
    let env_file = dir.join("hub.env");
    // A key with + / = and a host name and port the flags override.
    std::fs::write(
        &config,
        r#"{
          "hostName": "from-config",
          "ports": {"mqtt": 1, "https": 0, "amqp": 0},
          "devices": [{"id": "cfgdev", "primaryKey": "a2V5K3dpdGgvc2xhc2g/PT0=",
                       "modules": [{"id": "m1"}]}],
          "eventHubs": {"partitions": 2, "consumerGroups": ["cg1"]},
          "limits": {"c2dMaxPending": 7, "feedbackFlushMs": 100}
        }"#,
    )
    .unwrap();
    let (mut hub, printed) = start(&[
        "--config",
        config.to_str().unwrap(),
        "--hostname",
        "localhost",
        "--mqtt-port",
        "0",
        "--device",
        "dev2",
        "--env-out",
        env_file.to_str().unwrap(),
    ])
    .await;
    let names = names(&printed);
    for expected in [
        "IOTHUB_CONNECTION_STRING",
        "IOTHUB_AMQP_CONNECTION_STRING",
        "IOTHUB_CA_FILE",
        "IOTHUB_DEVICE_ID",
        "IOTHUB_DEVICE_CONNECTION_STRING",
        "IOTHUB_DEVICE_CONNECTION_STRING_CFGDEV",
        "IOTHUB_DEVICE_CONNECTION_STRING_DEV2",
        "IOTHUB_MODULE_CONNECTION_STRING_CFGDEV_M1",
        "EVENTHUB_CONNECTION_STRING",
        "EVENTHUB_EMULATOR_CONNECTION_STRING",
        "IOTHUB_MQTT_PORT",
        "IOTHUB_HTTPS_PORT",
        "IOTHUB_AMQP_PORT",
        "EVENTHUB_PORT",
        "EVENTHUB_EMULATOR_PORT",
    ] {
        assert!(names.contains(&expected), "{expected} in {printed:#?}");
    }
    let eval_printed = printed.join("\n");
    for name in &names {
        let from_env_file = shell(&format!(
            ". '{}' && printf '%s' \"${name}\"",
            env_file.display()
        ));
        let from_stdout = shell(&format!("{eval_printed}\nprintf '%s' \"${name}\""));
        assert_eq!(from_env_file, from_stdout, "{name}");
        assert!(!from_env_file.is_empty(), "{name}");
    }
    let var = |name: &str| {
        shell(&format!(
            ". '{}' && printf '%s' \"${name}\"",
            env_file.display()
        ))
    };
    // The config's device and key, the flag's host name and port, and the first device as
    // the examples read it.
    assert!(var("IOTHUB_DEVICE_CONNECTION_STRING_CFGDEV").starts_with(
        "HostName=localhost;DeviceId=cfgdev;SharedAccessKey=a2V5K3dpdGgvc2xhc2g/PT0=;"
    ),);
    assert_eq!(var("IOTHUB_DEVICE_ID"), "cfgdev");
    assert_eq!(
        var("IOTHUB_DEVICE_CONNECTION_STRING"),
        var("IOTHUB_DEVICE_CONNECTION_STRING_CFGDEV")
    );
    for port in ["IOTHUB_MQTT_PORT", "IOTHUB_HTTPS_PORT", "IOTHUB_AMQP_PORT"] {
        let port: u16 = var(port).parse().unwrap();
        assert!(port > 1, "{port}");
    }
    assert!(
        var("EVENTHUB_CONNECTION_STRING")
            .contains(&format!("sb://localhost:{}/", var("EVENTHUB_PORT")))
    );

    // SIGTERM stops it, and the temporary CA file goes with it.
    let ca_file = PathBuf::from(var("IOTHUB_CA_FILE"));
    assert!(ca_file.exists());
    let pid = hub.id().unwrap().to_string();
    shell(&format!("kill -TERM {pid}"));
    let status = timeout(WAIT, hub.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!ca_file.exists(), "{} was left behind", ca_file.display());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_config_file_with_an_unknown_key_is_refused_naming_the_key() {
    let dir = scratch("unknown");
    let config = dir.join("hub.json");
    std::fs::write(&config, r#"{"limits": {"c2dMaxPendng": 5}}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iothub-local"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("c2dMaxPendng") && stderr.contains(&config.display().to_string()),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sample config of the docs starts a hub (its fixed ports replaced by flags).
#[tokio::test]
async fn the_sample_config_in_docs_starts_a_hub() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/iothub-local.config.json");
    let dir = scratch("sample");
    let state = dir.join("state");
    let mut args = vec!["--config", sample.to_str().unwrap(), "--state-dir"];
    args.push(state.to_str().unwrap());
    for flag in [
        "--mqtt-port",
        "--https-port",
        "--amqp-port",
        "--event-hubs-emulator-port",
    ] {
        args.extend([flag, "0"]);
    }
    let (mut hub, printed) = start(&args).await;
    let names = names(&printed);
    for expected in [
        "IOTHUB_MODULE_CONNECTION_STRING_DEV1_M1",
        "IOTHUB_DEVICE_CERT_FILE_CAMERA",
        "IOTHUB_DEVICE_CONNECTION_STRING_SENSOR",
        "IOTHUB_STATE_DIR",
    ] {
        assert!(names.contains(&expected), "{expected} in {printed:#?}");
    }
    hub.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logs redirected to a file or a pipe carry no ANSI colour codes.
#[tokio::test]
async fn logs_into_a_pipe_have_no_colour_codes() {
    let mut hub = Command::new(env!("CARGO_BIN_EXE_iothub-local"))
        .args(["--mqtt-port", "0", "--https-port", "0", "--amqp-port", "0"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hub.stdout.take().unwrap()).lines();
    while let Some(line) = timeout(WAIT, lines.next_line()).await.unwrap().unwrap() {
        if line == "ready" {
            break;
        }
    }
    shell(&format!("kill -TERM {}", hub.id().unwrap()));
    let out = timeout(WAIT, hub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
}

/// A second hub on a state directory that a running hub uses is refused, saying which process
/// has it; once that one is killed, the directory is taken over.
#[tokio::test]
async fn a_state_directory_in_use_is_refused_until_its_hub_is_gone() {
    let dir = scratch("in-use");
    let state = dir.join("state");
    let mut args = vec!["--state-dir", state.to_str().unwrap()];
    args.extend(FREE_PORTS);
    let (mut first, printed) = start(&args).await;
    let second = Command::new(env!("CARGO_BIN_EXE_iothub-local"))
        .args(&args)
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let pid = first.id().unwrap();
    assert!(stderr.contains(&format!("process {pid}")), "{stderr}");
    first.kill().await.unwrap();
    let (mut again, printed_again) = start(&args).await;
    assert_eq!(printed_again, printed);
    again.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--worker-threads N` sets the threads serving connections (1 by default); 0 is refused
/// before anything starts, naming the flag.
#[tokio::test]
async fn worker_threads_are_a_positive_count() {
    let mut args = FREE_PORTS.to_vec();
    args.extend(["--worker-threads", "3"]);
    let (mut hub, printed) = start(&args).await;
    assert!(names(&printed).contains(&"IOTHUB_CONNECTION_STRING"));
    hub.kill().await.unwrap();

    args.pop();
    args.push("0");
    let stderr = refused(&args).await;
    assert!(stderr.contains("--worker-threads"), "{stderr}");
}

/// `--max-connections-per-address N` bounds the connections each listener admits from one
/// address: with 2, a third TCP connection from 127.0.0.1 to the MQTT port is closed right
/// after it is accepted (the default admits 1,000), and 0 is refused before anything starts.
#[tokio::test]
async fn connections_per_address_follow_the_flag() {
    use tokio::io::AsyncReadExt;

    let mut args = FREE_PORTS.to_vec();
    args.extend(["--max-connections-per-address", "2"]);
    let (mut hub, printed) = start(&args).await;
    let port: u16 = iothub_local_process::printed_var(&printed, "IOTHUB_MQTT_PORT")
        .parse()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let mut third = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    // The hub closes it at once. Without the bound it would keep it, as the two held ones,
    // until their TLS handshake time (10 s) ran out: half that time tells the two apart.
    let read = timeout(Duration::from_secs(5), third.read(&mut byte))
        .await
        .expect("the third connection from one address is closed at once");
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the third connection from one address was not closed: {read:?}"
    );
    drop(held);
    hub.kill().await.unwrap();

    args.pop();
    args.push("0");
    let stderr = refused(&args).await;
    assert!(stderr.contains("--max-connections-per-address"), "{stderr}");
}
