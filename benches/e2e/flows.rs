//! The flows of `benches/e2e.rs`: the message bodies (sequence number and send time), the
//! sending tasks' turns, and the tasks that send and receive C2D messages and telemetry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use iothub::device::DeviceClient;
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use iothub::{ErrorKind, Message};
use tokio::time::MissedTickBehavior;

use crate::support::{BoxError, Result};
use crate::{DEVICES, Mode, PACE};

fn body(seq: u64, epoch: Instant) -> Message {
    let sent = epoch.elapsed().as_nanos() as u64;
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&sent.to_le_bytes());
    Message::new(bytes).with_message_id(format!("e2e-{seq}"))
}

/// The latency of a received message, in ns.
fn latency_ns(message: &Message, epoch: Instant) -> Result<u64> {
    let body: &[u8] = message.body();
    let sent: [u8; 8] = body
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or("a message body that is not the bench's")?;
    Ok((epoch.elapsed().as_nanos() as u64).saturating_sub(u64::from_le_bytes(sent)))
}

/// One sending task's share of a run: the next sequence number while any of `messages` is
/// left, shared with the run's other tasks; when paced, one per tick of `PACE` (a late tick
/// delays the next, never bunches them).
struct Turns {
    next: Arc<AtomicUsize>,
    messages: usize,
    pace: Option<tokio::time::Interval>,
}

impl Turns {
    fn new(next: Arc<AtomicUsize>, messages: usize, mode: Mode) -> Self {
        let pace = (mode == Mode::Paced).then(|| {
            let mut interval = tokio::time::interval(PACE);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        Turns {
            next,
            messages,
            pace,
        }
    }

    async fn next(&mut self) -> Option<usize> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if seq >= self.messages {
            return None;
        }
        if let Some(pace) = &mut self.pace {
            pace.tick().await;
        }
        Some(seq)
    }
}

/// Receives `counts[i]` messages on `clients[i]`; the latencies and the last receipt.
pub(crate) async fn receive_c2d(
    clients: Vec<DeviceClient>,
    counts: Vec<usize>,
    epoch: Instant,
) -> Result<(Vec<u64>, Instant)> {
    let mut tasks = Vec::new();
    for (client, count) in clients.into_iter().zip(counts) {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let message = client.receive_message().await?;
                latencies.push(latency_ns(&message, epoch)?);
            }
            Ok::<_, BoxError>((latencies, Instant::now()))
        }));
    }
    let mut all = Vec::new();
    let mut last = None::<Instant>;
    for task in tasks {
        let (latencies, at) = task.await??;
        all.extend(latencies);
        last = Some(last.map_or(at, |l| l.max(at)));
    }
    Ok((all, last.unwrap_or_else(Instant::now)))
}

pub(crate) async fn read_telemetry(
    hub: Arc<LocalHub>,
    count: usize,
    epoch: Instant,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(Vec<u64>, Instant)> {
    let mut stream = hub.telemetry();
    let _ = ready.send(());
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let telemetry = stream.next().await.ok_or("the telemetry stream ended")?;
        latencies.push(latency_ns(&telemetry.message, epoch)?);
    }
    Ok((latencies, Instant::now()))
}

/// Sends `messages` C2D messages; returns how many `QueueFull` refusals were retried.
pub(crate) async fn send_c2d(
    registry: RegistryManager,
    ids: Arc<Vec<String>>,
    mode: Mode,
    messages: usize,
    single: bool,
    epoch: Instant,
) -> Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..mode.sending_tasks() {
        let (registry, ids, retries) = (registry.clone(), ids.clone(), retries.clone());
        let mut turns = Turns::new(next.clone(), messages, mode);
        handles.push(tokio::spawn(async move {
            while let Some(seq) = turns.next().await {
                // Message `seq` goes to device `seq % DEVICES`, as the receivers expect.
                let device = &ids[if single { 0 } else { seq % DEVICES }];
                loop {
                    match registry
                        .send_c2d_message(device, body(seq as u64, epoch))
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if e.kind() == ErrorKind::QueueFull => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok::<_, BoxError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(retries.load(Ordering::Relaxed))
}

pub(crate) async fn send_telemetry(
    clients: Vec<DeviceClient>,
    mode: Mode,
    messages: usize,
    epoch: Instant,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for task in 0..mode.sending_tasks() {
        let client = clients[task % clients.len()].clone();
        let mut turns = Turns::new(next.clone(), messages, mode);
        handles.push(tokio::spawn(async move {
            while let Some(seq) = turns.next().await {
                client.send_message(body(seq as u64, epoch)).await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}
