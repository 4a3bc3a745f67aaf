//! The official SDK pairs of `benches/e2e.rs`: sequential C2D from the Python and Node service
//! SDKs to their device SDKs, through the bench's hub (see the bench's module docs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use iothub::local_hub::LocalHub;

use crate::peer::{self, Peer, TempFile};
use crate::support::Result;

/// Messages of one official-pair run: IoT Hub's queue limit, so that a sender faster than its
/// receiver never meets `QueueFull` (the peers do not retry).
pub const PEER_MESSAGES: usize = 50;

/// An official SDK pair.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    Python,
    Node,
}

/// The peers' interpreters (`None`: skipped) and the hub's CA file.
pub struct Peers {
    pub python: Option<PathBuf>,
    pub node_modules: Option<PathBuf>,
    pub ca: TempFile,
}

/// A path from a non-empty environment variable.
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

const PEER_DEVICE: &str = "peer-device";
const PEER_WARMUP: &str = "peer-warmup";

/// One run of an official pair: sequential C2D, `PEER_MESSAGES`; messages per second.
pub async fn pair_rate(hub: &LocalHub, peers: &Peers, pair: Pair) -> Result<f64> {
    // Left over by a failed run, if any.
    let _ = hub.delete_device(PEER_DEVICE);
    let _ = hub.delete_device(PEER_WARMUP);
    let cs = hub.create_device(PEER_DEVICE)?;
    hub.create_device(PEER_WARMUP)?;
    let result = pair_run(hub, peers, pair, &cs.to_string()).await;
    hub.delete_device(PEER_DEVICE)?;
    hub.delete_device(PEER_WARMUP)?;
    result
}

async fn pair_run(hub: &LocalHub, peers: &Peers, pair: Pair, cs: &str) -> Result<f64> {
    let ca = peers.ca.path();
    let count = PEER_MESSAGES as u32;
    let mut receiver = match pair {
        Pair::Python => Peer::spawn(
            peers.python.as_deref().ok_or("no python")?,
            "py_device.py",
            &peer::device_args(
                &peer::python_device_connection_string(cs),
                ca,
                hub,
                count,
                &[],
            ),
            ca,
        ),
        Pair::Node => Peer::spawn_node(
            peers.node_modules.as_deref().ok_or("no node")?,
            "node_device.js",
            // The port is in the connection string's GatewayHostName.
            &[
                "--connection-string".to_owned(),
                cs.to_owned(),
                "--ca-file".to_owned(),
                ca.display().to_string(),
                "--count".to_owned(),
                count.to_string(),
                "--timeout".to_owned(),
                "60".to_owned(),
            ],
            ca,
        ),
    };
    receiver.expect_line("connected").await;
    let devices = format!("[\"{PEER_DEVICE}\"]");
    let mut args: Vec<String> = vec!["--connection-string".into()];
    let mut sender = match pair {
        Pair::Python => {
            args.extend([
                hub.service_connection_string().to_string(),
                "--ca-file".into(),
                ca.display().to_string(),
                "--amqp-port".into(),
                hub.amqp_addr().port().to_string(),
            ]);
            args.extend(common_sender_args(&devices));
            Peer::spawn(
                peers.python.as_deref().ok_or("no python")?,
                "py_service_bench.py",
                &args,
                ca,
            )
        }
        Pair::Node => {
            args.push(hub.amqp_connection_string().to_string());
            args.extend(common_sender_args(&devices));
            args.extend(["--in-flight".into(), "1".into()]);
            Peer::spawn_node(
                peers.node_modules.as_deref().ok_or("no node")?,
                "node_service_bench.js",
                &args,
                ca,
            )
        }
    };
    let receiving = async {
        for _ in 0..PEER_MESSAGES {
            receiver.json_line("a C2D message").await;
        }
        let last = Instant::now();
        receiver.expect_success().await;
        last
    };
    let sending = async {
        let result = sender.json_line("the result line").await;
        let at = Instant::now();
        sender.expect_success().await;
        (result, at)
    };
    let (last, (result, result_at)) = tokio::join!(receiving, sending);
    let seconds = result["elapsed_s"]
        .as_f64()
        .ok_or_else(|| format!("no elapsed_s in {result}"))?;
    let start = result_at
        .checked_sub(Duration::from_secs_f64(seconds))
        .ok_or("a clock before the sender's start")?;
    Ok(PEER_MESSAGES as f64 / last.saturating_duration_since(start).as_secs_f64())
}

fn common_sender_args(devices: &str) -> [String; 8] {
    [
        "--device-ids".into(),
        devices.to_owned(),
        "--warmup-device".into(),
        PEER_WARMUP.into(),
        "--count".into(),
        PEER_MESSAGES.to_string(),
        "--timeout".into(),
        "60".into(),
    ]
}
