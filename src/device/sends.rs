//! Telemetry sends awaiting their PUBACK.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind, Result};

/// Resolves when the hub acknowledges a send.
pub(crate) type SendDone = oneshot::Sender<Result<()>>;

/// The QoS 1 publishes of the application, by packet id once rumqttc has assigned one.
#[derive(Default)]
pub(crate) struct Sends {
    /// Queued in rumqttc, packet id not yet known (rumqttc assigns ids in queue order).
    unassigned: VecDeque<SendDone>,
    by_pkid: HashMap<u16, SendDone>,
}

impl Sends {
    /// A publish was queued in rumqttc.
    pub fn queued(&mut self, done: SendDone) {
        self.unassigned.push_back(done);
    }

    /// rumqttc wrote a QoS 1 publish with `pkid` (0 is a QoS 0 publish: not ours). A
    /// retransmission keeps its id and its waiter.
    pub fn on_outgoing(&mut self, pkid: u16) {
        if pkid != 0 && !self.by_pkid.contains_key(&pkid) {
            if let Some(done) = self.unassigned.pop_front() {
                self.by_pkid.insert(pkid, done);
            }
        }
    }

    /// The hub acknowledged `pkid`.
    pub fn on_puback(&mut self, pkid: u16) {
        if let Some(done) = self.by_pkid.remove(&pkid) {
            let _ = done.send(Ok(()));
        }
    }

    /// Every waiting send failed for `why`.
    pub fn fail_all(&mut self, why: &str) {
        for done in self
            .unassigned
            .drain(..)
            .chain(self.by_pkid.drain().map(|(_, d)| d))
        {
            let _ = done.send(Err(Error::new(ErrorKind::Transport, why.to_owned())));
        }
    }
}
