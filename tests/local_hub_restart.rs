//! `iothub-local --state-dir`, killed with SIGKILL while a back end sends C2D messages and a
//! device sends telemetry, and started again on the same directory, several times: every C2D
//! message whose send returned Ok reaches the device (duplicates are counted, none may be
//! lost), every Ok'd telemetry event is retained, feedback covers every delivery, the printed
//! connection strings and ports never change, and a `DeviceClient` left running reconnects by
//! itself each time.
#![cfg(all(feature = "cli", feature = "device", feature = "service"))]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use iothub::device::{ConnectionState, DeviceClient};
use iothub::local_hub::{LocalHub, TelemetryStart};
use iothub::protocol::FeedbackStatus;
use iothub::service::RegistryManager;
use iothub::{Ack, Message, RetryPolicy};
use tokio::process::Child;
use tokio::time::{sleep, timeout};

mod iothub_local_process;

const C2D_MESSAGES: usize = 1_000;
const TELEMETRY_EVENTS: usize = 500;
const KILLS: usize = 3;
const WAIT: Duration = Duration::from_secs(60);

/// A running `iothub-local` and what it printed.
struct Hub {
    child: Child,
    vars: BTreeMap<String, String>,
}

async fn start_hub(dir: &Path, config: &Path) -> Hub {
    let mut args = vec![OsStr::new("--state-dir"), dir.as_os_str()];
    args.extend([OsStr::new("--config"), config.as_os_str()]);
    let flags = iothub_local_process::FREE_PORTS
        .into_iter()
        .chain(["--device", "dev1"]);
    args.extend(flags.map(OsStr::new));
    let (child, printed) = iothub_local_process::start(args).await;
    Hub {
        child,
        vars: iothub_local_process::printed_vars(&printed),
    }
}

/// A small xorshift generator: the kill points differ from run to run (the seed is printed).
fn kill_points(seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    let mut points: Vec<usize> = (0..KILLS)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // One point in each third of the sends (a little off their edges).
            let third = C2D_MESSAGES / KILLS;
            i * third + 30 + (x as usize) % (third - 60)
        })
        .collect();
    points.sort_unstable();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sends_loses_no_acknowledged_c2d_message_telemetry_or_feedback() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("iothub-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state_dir: PathBuf = dir.join("state");
    let config = dir.join("hub.json");
    std::fs::write(
        &config,
        r#"{"limits": {"c2dMaxPending": 1100, "feedbackFlushMs": 200}}"#,
    )
    .unwrap();
    let hub = start_hub(&state_dir, &config).await;
    let first_vars = hub.vars.clone();
    let var = |name: &str| first_vars[name].clone();
    let ca_pem = std::fs::read_to_string(var("IOTHUB_CA_FILE")).unwrap();
    let retry = RetryPolicy::new()
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500));

    // The device, left running for the whole test.
    let device = DeviceClient::builder(var("IOTHUB_DEVICE_CONNECTION_STRING").parse().unwrap())
        .trust_ca_pem(&ca_pem)
        .retry_policy(retry.clone())
        .connect()
        .await
        .unwrap();
    let received: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let receiver = {
        let (device, received) = (device.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok(message) = device.receive_message().await {
                let id = message.message_id().unwrap_or_default().to_owned();
                *received.lock().unwrap().entry(id).or_default() += 1;
            }
        })
    };
    let registry = RegistryManager::builder(var("IOTHUB_CONNECTION_STRING").parse().unwrap())
        .trust_ca_pem(&ca_pem)
        .https_port(var("IOTHUB_HTTPS_PORT").parse().unwrap())
        .amqp_port(var("IOTHUB_AMQP_PORT").parse().unwrap())
        .retry_policy(retry.clone())
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // SIGKILL at random points of the C2D sends, then the same command on the same directory.
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let points = kill_points(seed);
    let c2d_ok_count = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (c2d_ok_count, state_dir, config) =
            (c2d_ok_count.clone(), state_dir.clone(), config.clone());
        let points = points.clone();
        tokio::spawn(async move {
            let mut hub = hub;
            for point in points {
                while c2d_ok_count.load(Ordering::Relaxed) < point {
                    sleep(Duration::from_millis(2)).await;
                }
                hub.child.start_kill().unwrap();
                hub.child.wait().await.unwrap();
                let again = start_hub(&state_dir, &config).await;
                assert_eq!(
                    again.vars, hub.vars,
                    "a restart prints the same connection strings, ports and CA file"
                );
                hub = again;
            }
            hub
        })
    };

    let c2d = async {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let mut attempt = 0;
        while ok.len() < C2D_MESSAGES {
            let id = format!("c{attempt}");
            attempt += 1;
            let message = Message::new(id.clone())
                .with_message_id(id.clone())
                .with_ack(Ack::Full);
            match timeout(
                Duration::from_secs(10),
                registry.send_c2d_message("dev1", message),
            )
            .await
            {
                Ok(Ok(())) => {
                    ok.push(id);
                    c2d_ok_count.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    failed.push(id);
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
        (ok, failed)
    };
    let telemetry = async {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let mut attempt = 0;
        while ok.len() < TELEMETRY_EVENTS {
            let id = format!("t{attempt}");
            attempt += 1;
            let message = Message::new(id.clone()).with_message_id(id.clone());
            match timeout(Duration::from_secs(10), device.send_message(message)).await {
                Ok(Ok(())) => ok.push(id),
                _ => {
                    failed.push(id);
                    sleep(Duration::from_millis(20)).await;
                }
            }
            // Spread the telemetry over the C2D sends, and so over the kills.
            sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    };
    let ((c2d_ok, c2d_failed), (telemetry_ok, telemetry_failed)) = tokio::join!(c2d, telemetry);
    let mut hub = timeout(WAIT, chaos).await.unwrap().unwrap();

    // Every Ok'd C2D message reaches the device that kept running.
    let deadline = Instant::now() + WAIT;
    loop {
        let missing = {
            let received = received.lock().unwrap();
            c2d_ok
                .iter()
                .filter(|id| !received.contains_key(*id))
                .count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged C2D messages never reached the device"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *device.connection_state().borrow(),
        ConnectionState::Connected,
        "the device reconnected by itself"
    );
    let (duplicated, unacknowledged_delivered) = {
        let received = received.lock().unwrap();
        let duplicated: u32 = received.values().map(|n| n - 1).sum();
        let delivered = c2d_failed
            .iter()
            .filter(|id| received.contains_key(*id))
            .count();
        (duplicated, delivered)
    };

    // Feedback: a Success record for every Ok'd message.
    let mut feedback = registry.feedback_receiver();
    let mut settled = HashSet::new();
    let expected: HashSet<&String> = c2d_ok.iter().collect();
    while !expected.iter().all(|id| settled.contains(*id)) {
        let batch = timeout(WAIT, feedback.recv())
            .await
            .expect("feedback for every delivery")
            .unwrap()
            .unwrap();
        for record in batch.records() {
            assert_eq!(record.status_code, FeedbackStatus::Success);
            settled.insert(record.original_message_id.clone());
        }
        batch.complete().await.unwrap();
    }
    device.close().await.unwrap();
    receiver.await.unwrap();

    // A last SIGKILL; the state directory opened in process holds every Ok'd telemetry event.
    hub.child.start_kill().unwrap();
    hub.child.wait().await.unwrap();
    let local = LocalHub::builder()
        .state_dir(&state_dir)
        .start()
        .await
        .unwrap();
    let retained: usize = (0..4).map(|p| local.telemetry_retained(p)).sum();
    let mut stream = local.telemetry_from(TelemetryStart::Earliest).unwrap();
    let mut telemetry_ids = HashSet::new();
    for _ in 0..retained {
        let event = timeout(WAIT, stream.next()).await.unwrap().unwrap();
        telemetry_ids.insert(event.message.message_id().unwrap_or_default().to_owned());
    }
    let telemetry_lost = telemetry_ok
        .iter()
        .filter(|id| !telemetry_ids.contains(*id))
        .count();
    assert_eq!(
        local.c2d_queue_len("dev1"),
        Some(0),
        "everything was completed"
    );
    local.shutdown().await;

    println!(
        "restart figures (seed {seed}, kills after {points:?} Ok'd sends): C2D sends {} \
         (Ok {}, failed {} of which delivered {unacknowledged_delivered}), lost 0, \
         duplicated {duplicated}; telemetry sends {} (Ok {}, failed {}), retained {retained}, \
         lost {telemetry_lost}; feedback records for {} messages; {:.1} s",
        c2d_ok.len() + c2d_failed.len(),
        c2d_ok.len(),
        c2d_failed.len(),
        telemetry_ok.len() + telemetry_failed.len(),
        telemetry_ok.len(),
        telemetry_failed.len(),
        settled.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(telemetry_lost, 0, "acknowledged telemetry was lost");
    let _ = std::fs::remove_dir_all(&dir);
}
