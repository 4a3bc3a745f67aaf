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

/// Events and commands handled at most in one pass, so that the timers still get their turn.
const READY_BATCH: usize = 64;

impl Task {
    /// Goes on from `step` (what the `select!` woke for) with the events rumqttc has already
    /// read and the commands already waiting, without another trip through `select!`, which
    /// builds rumqttc's `poll()` future anew each time. Stops at the first step that is not
    /// `Continue`.
    pub(super) async fn handle_ready(
        &mut self,
        mut step: Step,
        epoch: u64,
        sends: &mut Sends,
        restoring: &mut bool,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Step {
        for _ in 0..READY_BATCH {
            if !matches!(step, Step::Continue) {
                break;
            }
            step = if let Some(event) = self.eventloop.state.events.pop_front() {
                self.on_event(event, epoch, sends, restoring, ready).await
            } else {
                match self.commands.try_recv() {
                    Ok(command) => self.on_command(Some(command), epoch, sends).await,
                    // Empty, or every handle gone: the `select!` sees that next.
                    Err(_) => break,
                }
            };
        }
        step
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
        let acks = std::mem::take(&mut self.acks_due.pkids);
        let written = tokio::time::timeout(limit, async {
            for pkid in acks {
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
