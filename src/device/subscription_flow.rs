//! How the connection task keeps the wanted subscriptions and the pending `$rid` requests in
//! step with the live connection: what to (re)send after a CONNACK, when the connection counts
//! as restored, and what a refused filter takes down with it.

use rumqttc::{QoS, Request, SubscribeFilter};
use tokio::sync::oneshot;

use crate::device::connection::{Task, transport_error};
use crate::device::state::ConnectionState;
use crate::error::{ErrorKind, Result};
use crate::protocol::{
    DESIRED_PATCH_SUBSCRIPTION, METHOD_REQUEST_SUBSCRIPTION, TWIN_RESPONSE_SUBSCRIPTION,
};

impl Task {
    /// Once every wanted filter is granted on a new connection: `Connected`, and the first
    /// connection's `ready` resolves.
    pub(crate) fn check_restored(
        &mut self,
        restoring: &mut bool,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) {
        if *restoring && self.subscriptions.all_granted() {
            *restoring = false;
            self.state.send_replace(ConnectionState::Connected);
            if let Some(ready) = ready.take() {
                let _ = ready.send(Ok(()));
            }
        }
    }

    /// A feature's filter was refused: its channel closes, and requests waiting for twin
    /// responses fail.
    pub(crate) fn forget_feature(&mut self, filter: &str) {
        match filter {
            DESIRED_PATCH_SUBSCRIPTION => self.sinks.desired = None,
            METHOD_REQUEST_SUBSCRIPTION => self.sinks.methods = None,
            TWIN_RESPONSE_SUBSCRIPTION => self.requests.fail_all_with(
                ErrorKind::Unauthorized,
                "the hub refused the subscription to twin responses",
            ),
            _ => self.sinks.inputs = None,
        }
    }

    /// Drops what a lost connection left queued in rumqttc that must not go out on the new
    /// one: SUBSCRIBEs (the subscription set sends what is still needed) and QoS 0 requests
    /// (already failed with the lost connection).
    pub(crate) fn purge_stale_requests(&mut self) {
        self.eventloop.pending.retain(|request| match request {
            Request::Subscribe(_) => false,
            Request::Publish(publish) => publish.qos != QoS::AtMostOnce,
            _ => true,
        });
    }

    /// Sends the filters not yet sent on the live connection, in one SUBSCRIBE.
    pub(crate) fn flush_subscriptions(&mut self) {
        let batch = self.subscriptions.take_unsent();
        if batch.is_empty() {
            return;
        }
        let filters = batch
            .into_iter()
            .map(|(filter, qos)| SubscribeFilter::new(filter, qos));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::warn!(error = %e, "cannot queue a SUBSCRIBE; it is retried later");
            self.subscriptions.unsend_last();
        }
    }

    /// Publishes the requests not yet sent, once twin responses can arrive.
    pub(crate) fn flush_requests(&mut self) {
        if !self.subscriptions.is_granted(TWIN_RESPONSE_SUBSCRIPTION) {
            return;
        }
        for out in self.requests.take_unsent() {
            if let Err(e) = self
                .client
                .try_publish(out.topic, QoS::AtMostOnce, false, out.payload)
            {
                self.requests.fail(
                    &out.request_id,
                    transport_error(format!("cannot queue the request: {e}")),
                );
            }
        }
    }
}
