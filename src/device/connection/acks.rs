//! PUBACKs written in batches: one socket write and one flush for every acknowledgement that is
//! due when the task runs out of ready work, instead of one write and one flush each; and the
//! ready work (events rumqttc already read, commands already waiting) handled in one pass.
//!
//! rumqttc's event loop takes one request per wake-up and flushes after each, so acknowledging
//! through `AsyncClient::ack` costs a channel hop, a wake-up and a `write` per message. An
//! incoming QoS 1 PUBLISH leaves no state in rumqttc when acknowledgements are manual
//! (`MqttState::handle_incoming_publish` only builds the PUBACK in automatic mode), so the task
//! encodes the PUBACKs itself into the connection's write buffer (`Network::write`) and flushes
//! them together.
//!
//! After a wake-up the task also takes the packets the connection has already received
//! (`Task::read_received`) instead of going back through rumqttc's `poll()`, which reads at
//! most ten packets per call and copies each PUBLISH's topic for its event queue.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::Poll;

use super::*;

/// Acknowledgements queued, or wake-ups with more work ready, at most before the queued
/// acknowledgements are written anyway: a busy connection (a stream of telemetry sends, say)
/// delays a PUBACK by a bounded amount of work only.
const ACK_BATCH: usize = 64;

/// The PUBACKs due on the live connection, not written yet.
#[derive(Debug, Default)]
pub(crate) struct DueAcks {
    pkids: Vec<u16>,
    /// Times the batch was kept back because more work was ready.
    deferrals: usize,
}

impl DueAcks {
    /// Forgets the batch: its packet ids belong to a connection that is gone.
    pub(crate) fn clear(&mut self) {
        self.pkids.clear();
        self.deferrals = 0;
    }
}

/// A set of MQTT packet ids, hashed with one multiplication instead of SipHash: the ids come
/// from the hub, and a set holds at most 65,535 of them.
pub(crate) type PacketIds = HashSet<u16, BuildHasherDefault<PacketIdHasher>>;

/// The hasher of [`PacketIds`]: Fibonacci hashing of the 16-bit id, which spreads consecutive
/// ids over both the low bits (the bucket) and the high bits (the control byte) of the hash.
#[derive(Default)]
pub(crate) struct PacketIdHasher(u64);

impl Hasher for PacketIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What [`Task::read_received`] found.
enum ReadReceived {
    Publish(rumqttc::Publish),
    /// Another packet, handed to rumqttc's state.
    Other,
    Nothing,
    /// The connection broke; why.
    Lost(String),
}

/// Events and commands handled at most in one pass, so that the timers still get their turn.
const READY_BATCH: usize = 64;

impl Task {
    /// Goes on from `step` (what the `select!` woke for) with the events rumqttc has already
    /// read, the commands already waiting and the packets the connection has already received,
    /// without another trip through `select!`, which builds rumqttc's `poll()` future anew each
    /// time. Stops at the first step that is not `Continue`.
    pub(super) async fn handle_ready(
        &mut self,
        mut step: Step,
        epoch: u64,
        sends: &mut Sends,
        restoring: &mut bool,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Step {
        self.resolve_receipts();
        for _ in 0..READY_BATCH {
            if !matches!(step, Step::Continue) {
                break;
            }
            step = if let Some(event) = self.eventloop.state.events.pop_front() {
                self.on_event(event, epoch, sends, restoring, ready).await
            } else if let Ok(command) = self.commands.try_recv() {
                self.on_command(Some(command), epoch, sends).await
            } else {
                match self.read_received().await {
                    ReadReceived::Publish(publish) => {
                        let event = Event::Incoming(Incoming::Publish(publish));
                        self.on_event(event, epoch, sends, restoring, ready).await
                    }
                    // An acknowledgement, a SUBACK or a PINGRESP: now among rumqttc's events.
                    ReadReceived::Other => Step::Continue,
                    // Nothing received yet: the `select!` waits for it.
                    ReadReceived::Nothing => break,
                    ReadReceived::Lost(reason) => {
                        // What rumqttc's `poll()` does on an error: the connection is gone,
                        // and its unacknowledged sends wait for the next.
                        self.eventloop.clean();
                        Step::Reconnect {
                            planned: false,
                            reason,
                        }
                    }
                }
            };
        }
        step
    }

    /// Takes one packet the connection has already received, without waiting. A PUBLISH goes
    /// straight to the caller: with manual acknowledgements rumqttc keeps no state for it, and
    /// its event loop would copy its topic for its event queue. Every other packet goes
    /// through rumqttc's state (in-flight sends, the ping) onto its event queue.
    async fn read_received(&mut self) -> ReadReceived {
        let Some(network) = self.eventloop.network.as_mut() else {
            return ReadReceived::Nothing;
        };
        let read = {
            let read = network.read();
            tokio::pin!(read);
            std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending => Poll::Ready(None),
            })
            .await
        };
        let lost =
            |e: rumqttc::StateError| ReadReceived::Lost(describe(&ConnectionError::MqttState(e)));
        match read {
            None => ReadReceived::Nothing,
            Some(Err(e)) => lost(e),
            Some(Ok(Incoming::Publish(publish))) => ReadReceived::Publish(publish),
            Some(Ok(packet)) => match self.eventloop.state.handle_incoming_packet(packet) {
                Ok(None) => ReadReceived::Other,
                // A send that waited for this acknowledgement's packet id (rumqttc's
                // collision handling) goes out now.
                Ok(Some(outgoing)) => {
                    let limit =
                        Duration::from_secs(self.eventloop.network_options.connection_timeout());
                    let written = tokio::time::timeout(limit, async {
                        network.write(outgoing).await?;
                        network.flush().await
                    })
                    .await;
                    match written {
                        Ok(Ok(())) => ReadReceived::Other,
                        Ok(Err(e)) => lost(e),
                        Err(_) => ReadReceived::Lost("writing to the hub timed out".into()),
                    }
                }
                Err(e) => lost(e),
            },
        }
    }

    /// Queues a PUBACK for `pkid` on the live connection; [`Task::write_acks_if_idle`] sends it.
    pub(super) fn puback(&mut self, pkid: u16) {
        self.acks_due.pkids.push(pkid);
    }

    /// Writes the queued PUBACKs when nothing else is ready to handle: no event rumqttc already
    /// read and no command waiting (both would usually add acknowledgements to the batch), or
    /// when the batch is full or was kept back [`ACK_BATCH`] times. `Err` describes a broken
    /// connection.
    pub(super) async fn write_acks_if_idle(&mut self) -> std::result::Result<(), String> {
        self.resolve_receipts();
        if self.acks_due.pkids.is_empty() {
            return Ok(());
        }
        let idle = self.eventloop.state.events.is_empty() && self.commands.is_empty();
        let full = self.acks_due.pkids.len() >= ACK_BATCH || self.acks_due.deferrals >= ACK_BATCH;
        if !idle && !full {
            self.acks_due.deferrals += 1;
            return Ok(());
        }
        self.write_acks().await
    }

    /// Writes every queued PUBACK with one flush, bounded by the connection timeout. Without a
    /// connection the queue is dropped: its packet ids belong to a connection that is gone.
    pub(super) async fn write_acks(&mut self) -> std::result::Result<(), String> {
        if self.acks_due.pkids.is_empty() {
            return Ok(());
        }
        let limit = Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let Some(network) = self.eventloop.network.as_mut() else {
            self.acks_due.clear();
            return Ok(());
        };
        self.acks_due.deferrals = 0;
        // Drained, not taken: the queue keeps its capacity for the next batch.
        let acks = &mut self.acks_due.pkids;
        let written = tokio::time::timeout(limit, async {
            for pkid in acks.drain(..) {
                network.write(Packet::PubAck(PubAck::new(pkid))).await?;
            }
            network.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing acknowledgements failed: {e}")),
            Err(_) => Err("writing acknowledgements timed out".into()),
        }
    }
}
