//! Which twin features each identity's session subscribed to: twin responses
//! (`$iothub/twin/res/#`), desired-property patches (`$iothub/twin/PATCH/properties/desired/#`)
//! and method requests (`$iothub/methods/POST/#`), with the QoS granted.
//!
//! The subscriptions belong to the MQTT session: a clean session forgets them when it opens, a
//! resumed persistent one (clean session 0) keeps them (MQTT 3.1.1 section 3.1.2.4), as the C2D
//! subscription is kept.

use std::collections::HashMap;

use rumqttc::mqttbytes::QoS;

use super::identities::Identity;
use super::{HubState, Inner};

/// The twin features a session subscribed to, with the QoS granted.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FeatureSubscriptions {
    pub responses: Option<QoS>,
    pub desired: Option<QoS>,
    pub methods: Option<QoS>,
}

/// Which twin feature a subscription is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feature {
    /// `$iothub/twin/res/#`.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`.
    DesiredPatches,
    /// `$iothub/methods/POST/#`.
    MethodRequests,
}

impl HubState {
    /// Records that session `session_id` of `identity` subscribed to (`Some(qos)`) or
    /// unsubscribed from (`None`) a feature; ignored unless it is the current session.
    pub fn set_feature_subscription(
        &self,
        identity: &Identity,
        session_id: u64,
        feature: Feature,
        qos: Option<QoS>,
    ) {
        let mut inner = self.lock();
        if !inner
            .slot(identity)
            .is_some_and(|slot| slot.is_current(session_id))
        {
            return;
        }
        let subscriptions = inner
            .feature_subscriptions
            .entry(identity.clone())
            .or_default();
        match feature {
            Feature::TwinResponses => subscriptions.responses = qos,
            Feature::DesiredPatches => subscriptions.desired = qos,
            Feature::MethodRequests => subscriptions.methods = qos,
        }
        drop(inner);
        if feature == Feature::MethodRequests && qos.is_some() {
            self.method_subscribers_changed.notify_waiters();
        }
    }
}

impl HubState {
    /// Whether the identity's session (current or resumed) subscribed to `feature`.
    pub fn subscribed_to(&self, identity: &Identity, feature: Feature) -> bool {
        self.lock()
            .feature_subscriptions
            .get(identity)
            .is_some_and(|s| {
                match feature {
                    Feature::TwinResponses => s.responses,
                    Feature::DesiredPatches => s.desired,
                    Feature::MethodRequests => s.methods,
                }
                .is_some()
            })
    }
}

impl Inner {
    /// Forgets the feature subscriptions of an identity (a new session that does not resume
    /// a persistent one).
    pub(super) fn forget_feature_subscriptions(&mut self, identity: &Identity) {
        self.feature_subscriptions.remove(identity);
    }

    /// The QoS of the method subscription of the identity's connected session, if any.
    pub(super) fn method_subscription(&self, identity: &Identity) -> Option<QoS> {
        let connected = self.slot(identity).is_some_and(|s| s.is_connected());
        connected
            .then(|| self.feature_subscriptions.get(identity)?.methods)
            .flatten()
    }
}

/// Per-identity feature subscriptions kept in [`Inner`].
pub(super) type Subscriptions = HashMap<Identity, FeatureSubscriptions>;
