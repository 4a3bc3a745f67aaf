//! Requests awaiting the response with their `$rid`, without I/O.
//!
//! A twin request is published on `$iothub/twin/GET/?$rid={rid}` or
//! `$iothub/twin/PATCH/properties/reported/?$rid={rid}` and answered on
//! `$iothub/twin/res/{status}/?$rid={rid}` (Microsoft Learn "Communicate with an IoT hub using
//! the MQTT protocol"). The request id is any text the device chooses; the SDKs give each
//! request a deadline (azure-iot-sdk-c `iothubtransport_mqtt_common.c`:
//! `ON_DEMAND_GET_TWIN_REQUEST_TIMEOUT_SECS 60`, `TWIN_REPORT_UPDATE_TIMEOUT_SECS 60*5`).
//!
//! A request waits unsent while the client is disconnected or its response filter is not yet
//! granted; once sent, losing the connection fails it (the response would never come), and its
//! deadline passing fails it with [`ErrorKind::Timeout`].

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};

/// A response to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status from the topic (200, 204, 4xx, 5xx).
    pub status: u16,
    /// `$version` from the topic, if any.
    pub version: Option<u64>,
    /// The payload.
    pub body: Bytes,
}

/// Resolves with the response.
pub(crate) type Responder = oneshot::Sender<Result<Response>>;

struct Pending {
    topic: String,
    payload: Bytes,
    deadline: Instant,
    sent: bool,
    done: Responder,
}

/// A request ready to publish.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub request_id: String,
    pub topic: String,
    pub payload: Bytes,
}

/// The requests of one client, by request id.
#[derive(Default)]
pub(crate) struct PendingRequests {
    next_id: u64,
    by_id: HashMap<String, Pending>,
}

impl PendingRequests {
    /// Adds a request; `topic_for` builds its topic from the request id given to it. Returns
    /// the request id.
    pub fn insert(
        &mut self,
        topic_for: impl FnOnce(&str) -> String,
        payload: Bytes,
        deadline: Instant,
        done: Responder,
    ) -> String {
        self.next_id += 1;
        let request_id = self.next_id.to_string();
        let pending = Pending {
            topic: topic_for(&request_id),
            payload,
            deadline,
            sent: false,
            done,
        };
        self.by_id.insert(request_id.clone(), pending);
        request_id
    }

    /// How many requests wait (sent or not).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The requests not yet sent, marked sent.
    pub fn take_unsent(&mut self) -> Vec<Outgoing> {
        let mut out: Vec<Outgoing> = self
            .by_id
            .iter_mut()
            .filter(|(_, p)| !p.sent)
            .map(|(id, p)| {
                p.sent = true;
                Outgoing {
                    request_id: id.clone(),
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                }
            })
            .collect();
        // Oldest first (ids are increasing integers).
        out.sort_by_key(|o| o.request_id.parse::<u64>().unwrap_or(u64::MAX));
        out
    }

    /// A request could not be queued: fail it with `error`.
    pub fn fail(&mut self, request_id: &str, error: Error) {
        if let Some(pending) = self.by_id.remove(request_id) {
            let _ = pending.done.send(Err(error));
        }
    }

    /// The response for `request_id` arrived; `false` when no request waits for it (a late
    /// response after a timeout, or another client's id).
    pub fn resolve(&mut self, request_id: &str, response: Response) -> bool {
        match self.by_id.remove(request_id) {
            Some(pending) => {
                let _ = pending.done.send(Ok(response));
                true
            }
            None => false,
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_id.values().map(|p| p.deadline).min()
    }

    /// Fails every request whose deadline is at or before `now` with
    /// [`ErrorKind::Timeout`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.fail(
                id,
                Error::new(
                    ErrorKind::Timeout,
                    "the hub did not answer the request in time",
                ),
            );
        }
        expired.len()
    }

    /// The connection was lost: requests already sent fail with a transport error; the
    /// others wait for the next connection.
    pub fn on_disconnected(&mut self) {
        let sent: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, p)| p.sent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in sent {
            self.fail(
                &id,
                Error::new(
                    ErrorKind::Transport,
                    "the connection was lost before the hub answered the request",
                ),
            );
        }
    }

    /// The client stops: every request fails with a transport error.
    pub fn fail_all(&mut self, why: &str) {
        self.fail_all_with(ErrorKind::Transport, why);
    }

    /// Every request fails with an error of `kind`.
    pub fn fail_all_with(&mut self, kind: ErrorKind, why: &str) {
        for (_, pending) in self.by_id.drain() {
            let _ = pending.done.send(Err(Error::new(kind, why.to_owned())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::twin_get_topic;
    use std::time::Duration;

    fn response(status: u16) -> Response {
        Response {
            status,
            version: None,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_resolves_its_request_by_request_id() {
        let mut pending = PendingRequests::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(60);
        let id1 = pending.insert(twin_get_topic, Bytes::from_static(b" "), deadline, tx1);
        let id2 = pending.insert(twin_get_topic, Bytes::new(), deadline, tx2);
        assert_ne!(id1, id2);
        let out = pending.take_unsent();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].topic, format!("$iothub/twin/GET/?$rid={id1}"));
        assert_eq!(out[0].payload, Bytes::from_static(b" "));
        assert!(pending.take_unsent().is_empty());
        assert!(pending.resolve(&id2, response(204)));
        assert!(!pending.resolve(&id2, response(204)), "answered once");
        assert!(!pending.resolve("unknown", response(200)));
        assert_eq!(rx2.await.unwrap().unwrap().status, 204);
        assert!(pending.resolve(&id1, response(200)));
        assert_eq!(rx1.await.unwrap().unwrap().status, 200);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_times_out_at_its_deadline_and_not_before() {
        let mut pending = PendingRequests::default();
        let (tx_short, rx_short) = oneshot::channel();
        let (tx_long, mut rx_long) = oneshot::channel();
        let start = Instant::now();
        pending.insert(
            twin_get_topic,
            Bytes::new(),
            start + Duration::from_secs(5),
            tx_short,
        );
        let long = pending.insert(
            twin_get_topic,
            Bytes::new(),
            start + Duration::from_secs(60),
            tx_long,
        );
        assert_eq!(
            pending.next_deadline(),
            Some(start + Duration::from_secs(5))
        );

        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(pending.expire(Instant::now()), 0);
        tokio::time::sleep_until(pending.next_deadline().unwrap()).await;
        assert_eq!(pending.expire(Instant::now()), 1);
        let err = rx_short.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(rx_long.try_recv().is_err(), "the later request still waits");
        assert_eq!(
            pending.next_deadline(),
            Some(start + Duration::from_secs(60))
        );
        // A late response to the expired request finds nothing; the other one resolves.
        assert!(pending.resolve(&long, response(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_fails_sent_requests_and_keeps_unsent_ones() {
        let mut pending = PendingRequests::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (tx_sent, rx_sent) = oneshot::channel();
        pending.insert(twin_get_topic, Bytes::new(), deadline, tx_sent);
        pending.take_unsent();
        let (tx_unsent, mut rx_unsent) = oneshot::channel();
        let unsent = pending.insert(twin_get_topic, Bytes::new(), deadline, tx_unsent);
        pending.on_disconnected();
        assert_eq!(
            rx_sent.await.unwrap().unwrap_err().kind(),
            ErrorKind::Transport
        );
        assert!(rx_unsent.try_recv().is_err());
        let out = pending.take_unsent();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_id, unsent);
        pending.fail_all("stopped");
        assert_eq!(
            rx_unsent.await.unwrap().unwrap_err().kind(),
            ErrorKind::Transport
        );
    }
}
