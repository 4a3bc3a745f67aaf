//! The subscriptions a device client holds, without I/O.
//!
//! The set keeps every filter the client asked for and where each stands on the current
//! connection: not yet sent, sent in a SUBSCRIBE awaiting its SUBACK, or granted. IoT Hub keeps
//! subscriptions in a persistent session (`CleanSession=0`), but when a CONNACK says the session
//! is not present every filter must be subscribed again (Microsoft Learn "Communicate with an
//! IoT hub using the MQTT protocol": "if CleanSession is 1 ... the device must subscribe
//! again"; azure-iot-sdk-c `iothubtransport_mqtt_common.c` keeps `topics_ToSubscribe` and
//! resubscribes after each connection). rumqttc announces a SUBSCRIBE's packet id only when it
//! writes it (`Outgoing::Subscribe(pkid)`), in the order the SUBSCRIBEs were queued, so queued
//! SUBSCRIBEs wait in order for their id.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rumqttc::QoS;
use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind, Result};

/// Resolves when a filter is granted (or refused).
pub(crate) type Waiter = oneshot::Sender<Result<()>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// To be sent on the live connection (or the next one).
    Unsent,
    /// In a SUBSCRIBE on the live connection, awaiting the SUBACK.
    Sent,
    /// Granted on the live session.
    Granted,
}

struct Entry {
    qos: QoS,
    stage: Stage,
    waiters: Vec<Waiter>,
}

/// What a SUBACK changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SubAckOutcome {
    /// Filters the hub granted.
    pub granted: Vec<String>,
    /// Filters the hub refused; they are no longer wanted.
    pub refused: Vec<String>,
}

/// The wanted filters and their state on the current connection.
#[derive(Default)]
pub(crate) struct Subscriptions {
    filters: BTreeMap<String, Entry>,
    /// SUBSCRIBEs queued in rumqttc whose packet id is not known yet, oldest first.
    unassigned: VecDeque<Vec<String>>,
    by_pkid: HashMap<u16, Vec<String>>,
}

impl Subscriptions {
    /// Wants `filter` at `qos`. `waiter` resolves when it is granted (at once if it already
    /// is). Returns whether the filter must be sent (it was not wanted before).
    pub fn want(&mut self, filter: &str, qos: QoS, waiter: Option<Waiter>) -> bool {
        match self.filters.get_mut(filter) {
            Some(entry) => {
                if let Some(waiter) = waiter {
                    if entry.stage == Stage::Granted {
                        let _ = waiter.send(Ok(()));
                    } else {
                        entry.waiters.push(waiter);
                    }
                }
                false
            }
            None => {
                self.filters.insert(
                    filter.to_owned(),
                    Entry {
                        qos,
                        stage: Stage::Unsent,
                        waiters: waiter.into_iter().collect(),
                    },
                );
                true
            }
        }
    }

    /// Whether `filter` is granted on the live session.
    pub fn is_granted(&self, filter: &str) -> bool {
        self.filters
            .get(filter)
            .is_some_and(|e| e.stage == Stage::Granted)
    }

    /// Whether every wanted filter is granted.
    pub fn all_granted(&self) -> bool {
        self.filters.values().all(|e| e.stage == Stage::Granted)
    }

    /// The connection was lost: nothing is in flight any more, and what was granted stays
    /// granted only if the next session is present (see [`Self::on_connected`]).
    pub fn on_disconnected(&mut self) {
        self.unassigned.clear();
        self.by_pkid.clear();
        for entry in self.filters.values_mut() {
            if entry.stage == Stage::Sent {
                entry.stage = Stage::Unsent;
            }
        }
    }

    /// A new connection: without a session every filter is to be subscribed again.
    pub fn on_connected(&mut self, session_present: bool) {
        self.on_disconnected();
        if !session_present {
            for entry in self.filters.values_mut() {
                entry.stage = Stage::Unsent;
            }
        }
    }

    /// The filters to send now in one SUBSCRIBE, marked as sent (empty when none).
    pub fn take_unsent(&mut self) -> Vec<(String, QoS)> {
        let mut batch = Vec::new();
        for (filter, entry) in &mut self.filters {
            if entry.stage == Stage::Unsent {
                entry.stage = Stage::Sent;
                batch.push((filter.clone(), entry.qos));
            }
        }
        if !batch.is_empty() {
            self.unassigned
                .push_back(batch.iter().map(|(f, _)| f.clone()).collect());
        }
        batch
    }

    /// A SUBSCRIBE the last [`Self::take_unsent`] batch produced could not be queued: send it
    /// again later.
    pub fn unsend_last(&mut self) {
        if let Some(batch) = self.unassigned.pop_back() {
            for filter in batch {
                if let Some(entry) = self.filters.get_mut(&filter) {
                    entry.stage = Stage::Unsent;
                }
            }
        }
    }

    /// rumqttc wrote a SUBSCRIBE with packet id `pkid`: the oldest queued batch.
    pub fn on_outgoing(&mut self, pkid: u16) {
        if let Some(batch) = self.unassigned.pop_front() {
            self.by_pkid.insert(pkid, batch);
        }
    }

    /// The SUBACK of `pkid`, one grant flag per filter in SUBSCRIBE order.
    pub fn on_suback(&mut self, pkid: u16, granted: &[bool]) -> SubAckOutcome {
        let mut outcome = SubAckOutcome::default();
        let Some(batch) = self.by_pkid.remove(&pkid) else {
            return outcome;
        };
        for (i, filter) in batch.into_iter().enumerate() {
            // A SUBACK with fewer codes than filters grants none of the missing ones.
            if granted.get(i).copied().unwrap_or(false) {
                if let Some(entry) = self.filters.get_mut(&filter) {
                    entry.stage = Stage::Granted;
                    for waiter in entry.waiters.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                }
                outcome.granted.push(filter);
            } else {
                if let Some(entry) = self.filters.remove(&filter) {
                    for waiter in entry.waiters {
                        let _ = waiter.send(Err(refused(&filter)));
                    }
                }
                outcome.refused.push(filter);
            }
        }
        outcome
    }

    /// The client stops: every waiter learns why.
    pub fn fail_all(&mut self, why: &str) {
        for entry in self.filters.values_mut() {
            for waiter in entry.waiters.drain(..) {
                let _ = waiter.send(Err(Error::new(ErrorKind::Transport, why.to_owned())));
            }
        }
    }
}

fn refused(filter: &str) -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        format!("the hub refused the subscription to '{filter}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const C2D: &str = "devices/d/messages/devicebound/#";
    const TWIN: &str = "$iothub/twin/res/#";

    fn names(batch: &[(String, QoS)]) -> Vec<&str> {
        batch.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn a_filter_is_sent_once_and_granted_by_its_suback() {
        let mut subs = Subscriptions::default();
        assert!(subs.want(C2D, QoS::AtLeastOnce, None));
        assert!(!subs.want(C2D, QoS::AtLeastOnce, None));
        subs.on_connected(false);
        assert_eq!(names(&subs.take_unsent()), [C2D]);
        assert!(subs.take_unsent().is_empty(), "sent once");
        subs.on_outgoing(7);
        assert!(!subs.all_granted());
        let outcome = subs.on_suback(7, &[true]);
        assert_eq!(outcome.granted, [C2D]);
        assert!(subs.all_granted() && subs.is_granted(C2D));
    }

    #[test]
    fn subscriptions_are_restored_after_a_reconnect_without_session() {
        let mut subs = Subscriptions::default();
        subs.want(C2D, QoS::AtLeastOnce, None);
        subs.on_connected(false);
        subs.take_unsent();
        subs.on_outgoing(1);
        subs.on_suback(1, &[true]);
        // A new subscription goes out but the connection drops before its SUBACK.
        let (tx, mut waiter) = oneshot::channel();
        assert!(subs.want(TWIN, QoS::AtMostOnce, Some(tx)));
        assert_eq!(names(&subs.take_unsent()), [TWIN]);
        subs.on_outgoing(2);
        subs.on_disconnected();
        // A stale SUBACK for the old connection's packet id changes nothing.
        assert_eq!(subs.on_suback(2, &[true]), SubAckOutcome::default());
        assert!(waiter.try_recv().is_err(), "still waiting");

        // Session present: only what was not granted goes out again.
        subs.on_connected(true);
        assert_eq!(names(&subs.take_unsent()), [TWIN]);
        subs.on_outgoing(1);
        subs.on_suback(1, &[true]);
        assert!(waiter.try_recv().unwrap().is_ok());

        // No session: everything goes out again, in one SUBSCRIBE.
        subs.on_disconnected();
        subs.on_connected(false);
        assert!(!subs.all_granted());
        let batch = subs.take_unsent();
        assert_eq!(names(&batch), ["$iothub/twin/res/#", C2D]);
        assert_eq!(batch[0].1, QoS::AtMostOnce);
        subs.on_outgoing(3);
        let outcome = subs.on_suback(3, &[true, true]);
        assert_eq!(outcome.granted.len(), 2);
        assert!(subs.all_granted());
    }

    #[test]
    fn queued_subscribes_get_packet_ids_in_order() {
        let mut subs = Subscriptions::default();
        subs.on_connected(false);
        subs.want(C2D, QoS::AtLeastOnce, None);
        subs.take_unsent();
        subs.want(TWIN, QoS::AtMostOnce, None);
        subs.take_unsent();
        subs.on_outgoing(10);
        subs.on_outgoing(11);
        assert_eq!(subs.on_suback(11, &[true]).granted, [TWIN]);
        assert!(!subs.is_granted(C2D));
        assert_eq!(subs.on_suback(10, &[true]).granted, [C2D]);
    }

    #[test]
    fn a_refused_filter_fails_its_waiters_and_is_forgotten() {
        let mut subs = Subscriptions::default();
        subs.on_connected(false);
        let (tx, mut waiter) = oneshot::channel();
        subs.want(C2D, QoS::AtLeastOnce, None);
        subs.want(TWIN, QoS::AtMostOnce, Some(tx));
        subs.take_unsent();
        subs.on_outgoing(4);
        let outcome = subs.on_suback(4, &[false, true]);
        assert_eq!(outcome.refused, [TWIN]);
        assert_eq!(outcome.granted, [C2D]);
        let err = waiter.try_recv().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
        assert!(subs.all_granted(), "the refused filter is no longer wanted");
        // Wanting it again sends it again.
        assert!(subs.want(TWIN, QoS::AtMostOnce, None));
    }

    #[test]
    fn an_unqueued_subscribe_is_sent_again_and_stop_fails_waiters() {
        let mut subs = Subscriptions::default();
        subs.on_connected(false);
        let (tx, mut waiter) = oneshot::channel();
        subs.want(C2D, QoS::AtLeastOnce, Some(tx));
        subs.take_unsent();
        subs.unsend_last();
        assert_eq!(names(&subs.take_unsent()), [C2D]);
        subs.fail_all("stopped");
        assert_eq!(
            waiter.try_recv().unwrap().unwrap_err().kind(),
            ErrorKind::Transport
        );
    }

    #[test]
    fn wanting_a_granted_filter_resolves_at_once() {
        let mut subs = Subscriptions::default();
        subs.on_connected(false);
        subs.want(C2D, QoS::AtLeastOnce, None);
        subs.take_unsent();
        subs.on_outgoing(1);
        subs.on_suback(1, &[true]);
        let (tx, mut waiter) = oneshot::channel();
        assert!(!subs.want(C2D, QoS::AtLeastOnce, Some(tx)));
        assert!(waiter.try_recv().unwrap().is_ok());
    }
}
