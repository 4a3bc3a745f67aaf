//! The device task's handling of the handle's commands: acknowledgements, telemetry sends,
//! subscriptions, twin requests and close.

use super::*;

impl Task {
    pub(super) async fn on_command(
        &mut self,
        command: Option<Command>,
        epoch: u64,
        sends: &mut Sends,
    ) -> Step {
        match command {
            None => {
                // Every handle is gone.
                let _ = self.client.try_disconnect();
                self.flush_disconnect().await;
                Step::Stop(CloseReason::ClosedByApplication)
            }
            Some(Command::Ack {
                epoch: delivered_on,
                pkid,
                done,
            }) => {
                let live = delivered_on == epoch && self.live_epoch.load(Ordering::SeqCst) == epoch;
                let result = if live {
                    self.awaiting_ack.remove(&pkid);
                    self.puback(pkid);
                    Ok(())
                } else {
                    Err(transport_error(
                        "the connection that delivered this message was lost; the hub will deliver it again",
                    ))
                };
                if let Some(done) = done {
                    let _ = done.send(result);
                }
                Step::Continue
            }
            Some(Command::Send {
                topic,
                payload,
                done,
            }) => {
                match self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                {
                    Ok(()) => sends.queued(done),
                    Err(e) => {
                        let _ = done.send(Err(transport_error(format!(
                            "cannot queue the message: {e}"
                        ))));
                    }
                }
                Step::Continue
            }
            Some(Command::Subscribe {
                filter,
                qos,
                sink,
                done,
            }) => {
                if let Some(sink) = sink {
                    self.sinks.add(sink);
                }
                self.subscriptions.want(&filter, qos, Some(done));
                if self.is_live() {
                    self.flush_subscriptions();
                }
                Step::Continue
            }
            Some(Command::Request {
                kind,
                payload,
                timeout,
                done,
            }) => {
                let filter = TWIN_RESPONSE_SUBSCRIPTION;
                let new = self.subscriptions.want(filter, filter_qos(filter), None);
                let deadline = Instant::now() + timeout;
                self.requests
                    .insert(|rid| twin_request_topic(kind, rid), payload, deadline, done);
                if self.is_live() {
                    if new {
                        self.flush_subscriptions();
                    }
                    self.flush_requests();
                }
                Step::Continue
            }
            Some(Command::Close { done }) => {
                let _ = self.client.try_disconnect();
                self.flush_disconnect().await;
                let _ = done.send(());
                Step::Stop(CloseReason::ClosedByApplication)
            }
        }
    }
}
