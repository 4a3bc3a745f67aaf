//! Desired-property updates: [`DeviceClient::desired_property_updates`].
//!
//! IoT Hub pushes a desired-properties change as a patch on
//! `$iothub/twin/PATCH/properties/desired/?$version={v}` only while the device is connected and
//! subscribed (Microsoft Learn "Communicate with an IoT hub using the MQTT protocol"; the
//! subscription is QoS 0). A change made while the device is away is never pushed. The official
//! C# sample for this (azure-iot-sdk-csharp
//! `iot-hub/Samples/device/DeviceReconnectionSample/DeviceReconnectionSample.cs`,
//! `ConnectionStatusChangeHandlerAsync` → `GetTwinAndDetectChangesAsync`) gets the twin every
//! time the client is connected and, when the desired `$version` is newer than the last one it
//! handled, hands the whole desired collection to its patch handler.
//!
//! This client does that for the application: after the subscription is made and after every
//! (re)connection it GETs the twin and yields the full desired document, flagged
//! [`DesiredUpdateKind::FullDocument`], when its version is newer than the last one yielded. A
//! full document (not a synthesized diff) is what the C# sample hands over, and it also says
//! which properties were removed while the device was away (they are absent), which a diff
//! would have to express as `null`s. Patches not newer than what was yielded are skipped (they
//! are already contained); a gap in the versions, an unreadable patch or one without a version
//! also triggers a GET. So every desired version is either yielded or contained in a later
//! full document: none is skipped silently.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::device::connection::{Command, filter_qos};
use crate::device::inbound::{DesiredPatch, FeatureSink};
use crate::device::state::{ConnectionState, closed_error};
use crate::device::twin::{VersionedProperties, request, twin_from_response};
use crate::device::{DeviceClient, twin::Twin};
use crate::error::{ErrorKind, Result};
use crate::protocol::{DESIRED_PATCH_SUBSCRIPTION, TwinRequestKind};

/// How long the client waits before getting the twin again after a failed GET.
const RESYNC_RETRY: Duration = Duration::from_secs(2);

/// What a [`DesiredPropertiesUpdate`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DesiredUpdateKind {
    /// A patch pushed by the hub: only the changed properties; `null` removes one.
    Patch,
    /// The whole desired document, read from the twin after the subscription was made or
    /// after a reconnection (or to fill a gap in the versions). Properties absent from it
    /// were removed.
    FullDocument,
}

/// A change of the desired properties.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DesiredPropertiesUpdate {
    /// The desired properties' `$version` after this change.
    pub version: u64,
    /// The properties (without `$version`): a patch or the whole document, as `kind` says.
    pub properties: Map<String, Value>,
    /// A patch or the whole document.
    pub kind: DesiredUpdateKind,
}

/// What to do with a pushed patch.
#[derive(Debug, PartialEq)]
pub(crate) enum PatchOutcome {
    /// Yield it.
    Yield(DesiredPropertiesUpdate),
    /// Yield it, then get the whole twin (a version was skipped, or it had none).
    YieldThenResync(DesiredPropertiesUpdate),
    /// Already contained in what was yielded.
    Stale,
    /// Unreadable: get the whole twin instead.
    Resync,
}

/// The versions seen so far, without I/O.
#[derive(Debug, Default)]
pub(crate) struct DesiredTracker {
    last: Option<u64>,
}

impl DesiredTracker {
    /// A patch pushed with `version` (from the topic; else the body's `$version`).
    pub fn on_patch(&mut self, patch: DesiredPatch) -> PatchOutcome {
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&patch.body) else {
            tracing::warn!("an unreadable desired-properties patch; getting the twin instead");
            return PatchOutcome::Resync;
        };
        let body_version = body.remove("$version").and_then(|v| v.as_u64());
        let Some(version) = patch.version.or(body_version) else {
            let update = DesiredPropertiesUpdate {
                version: self.last.unwrap_or(0),
                properties: body,
                kind: DesiredUpdateKind::Patch,
            };
            return PatchOutcome::YieldThenResync(update);
        };
        let gap = match self.last {
            Some(last) if version <= last => return PatchOutcome::Stale,
            Some(last) => version > last + 1,
            None => false,
        };
        self.last = Some(version);
        let update = DesiredPropertiesUpdate {
            version,
            properties: body,
            kind: DesiredUpdateKind::Patch,
        };
        if gap {
            PatchOutcome::YieldThenResync(update)
        } else {
            PatchOutcome::Yield(update)
        }
    }

    /// The whole desired document, read from the twin: yielded when newer than what was.
    pub fn on_full(&mut self, desired: VersionedProperties) -> Option<DesiredPropertiesUpdate> {
        if self.last.is_some_and(|last| desired.version <= last) {
            return None;
        }
        self.last = Some(desired.version);
        Some(DesiredPropertiesUpdate {
            version: desired.version,
            properties: desired.properties,
            kind: DesiredUpdateKind::FullDocument,
        })
    }
}

/// The application's end of the updates, shared by every [`DesiredPropertyUpdates`].
pub(crate) type DesiredReceiver = Arc<Mutex<mpsc::Receiver<DesiredPropertiesUpdate>>>;

type GetResponse = oneshot::Receiver<Result<crate::device::pending_requests::Response>>;

/// Follows the pushed patches and the connection, and yields the updates.
struct Watcher {
    commands: mpsc::WeakSender<Command>,
    timeout: Duration,
    patches: mpsc::Receiver<DesiredPatch>,
    state: tokio::sync::watch::Receiver<ConnectionState>,
    out: mpsc::Sender<DesiredPropertiesUpdate>,
    tracker: DesiredTracker,
}

impl Watcher {
    /// Starts a GET of the twin (its response comes through the returned receiver); `None`
    /// when the client is gone.
    fn start_get(&self) -> Option<GetResponse> {
        let commands = self.commands.upgrade()?;
        let timeout = self.timeout;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let response = request(
                &commands,
                TwinRequestKind::Get,
                Bytes::from_static(b" "),
                timeout,
            )
            .await;
            let _ = tx.send(response);
        });
        Some(rx)
    }

    async fn run(mut self) {
        self.state.borrow_and_update();
        let mut get = self.start_get();
        let mut get_again = false;
        let mut retry_at: Option<Instant> = None;
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                patch = self.patches.recv() => {
                    let Some(patch) = patch else { return };
                    let (update, resync) = match self.tracker.on_patch(patch) {
                        PatchOutcome::Yield(update) => (Some(update), false),
                        PatchOutcome::YieldThenResync(update) => (Some(update), true),
                        PatchOutcome::Stale => (None, false),
                        PatchOutcome::Resync => (None, true),
                    };
                    if let Some(update) = update {
                        if self.out.send(update).await.is_err() {
                            return;
                        }
                    }
                    if resync {
                        if get.is_some() { get_again = true } else { get = self.start_get() }
                    }
                }
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let connected = *self.state.borrow_and_update() == ConnectionState::Connected;
                    if connected {
                        if get.is_some() { get_again = true } else { get = self.start_get() }
                    }
                }
                response = async { get.as_mut().expect("guarded").await }, if get.is_some() => {
                    get = None;
                    let twin = response
                        .map_err(|_| closed_error())
                        .and_then(|r| r)
                        .and_then(|r| twin_from_response(&r));
                    match twin {
                        Ok(Twin { desired, .. }) => {
                            if let Some(update) = self.tracker.on_full(desired) {
                                if self.out.send(update).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Closed => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot get the twin to catch up on desired properties; retrying");
                            retry_at = Some(Instant::now() + RESYNC_RETRY);
                        }
                    }
                    if get_again {
                        get_again = false;
                        retry_at = None;
                        get = self.start_get();
                    }
                }
                _ = sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {
                    retry_at = None;
                    if get.is_none() {
                        get = self.start_get();
                    }
                }
            }
        }
    }
}

impl DeviceClient {
    /// The desired-property updates, as a [`Stream`]; returns once the hub granted the
    /// subscription to `$iothub/twin/PATCH/properties/desired/#` (made on the first call and
    /// restored after every reconnection). Subscribing on first use, and returning once
    /// subscribed, is what azure-iot-sdk-python does when a handler is set
    /// (`azure/iot/device/iothub/sync_clients.py` `_generic_receive_handler_setter`: "will not
    /// return until the feature has been enabled"). Every call returns a stream over the same updates:
    /// with several readers, each update goes to one.
    ///
    /// The first update is the whole desired document
    /// ([`DesiredUpdateKind::FullDocument`]); then come the hub's patches
    /// ([`DesiredUpdateKind::Patch`]), and after every reconnection the whole document again
    /// when it changed while the client was away, so no change is missed (see the module
    /// documentation of `desired.rs` for why a full document). Versions only grow.
    ///
    /// Updates wait in a bounded buffer (the builder's message buffer); when it is full the
    /// client stops reading from the network until the application catches up.
    pub async fn desired_property_updates(&self) -> Result<DesiredPropertyUpdates> {
        let receiver = self
            .features()
            .desired
            .get_or_try_init(|| self.start_desired_updates())
            .await
            .map_err(|e| self.why_stopped(e))?;
        Ok(DesiredPropertyUpdates {
            receiver: receiver.clone(),
            next: None,
        })
    }

    async fn start_desired_updates(&self) -> Result<DesiredReceiver> {
        let features = self.features();
        let (patches_tx, patches) = mpsc::channel(features.buffer);
        let (done, granted) = oneshot::channel();
        let command = Command::Subscribe {
            filter: DESIRED_PATCH_SUBSCRIPTION.to_owned(),
            qos: filter_qos(DESIRED_PATCH_SUBSCRIPTION),
            sink: Some(FeatureSink::DesiredPatches(patches_tx)),
            done,
        };
        self.commands()
            .send(command)
            .await
            .map_err(|_| closed_error())?;
        granted.await.map_err(|_| closed_error())??;
        let (out, receiver) = mpsc::channel(features.buffer);
        let watcher = Watcher {
            commands: self.commands().downgrade(),
            timeout: features.twin_timeout,
            patches,
            state: self.connection_state(),
            out,
            tracker: DesiredTracker::default(),
        };
        tokio::spawn(watcher.run());
        Ok(Arc::new(Mutex::new(receiver)))
    }
}

/// The stream of [`DeviceClient::desired_property_updates`]; it ends when the client closes.
pub struct DesiredPropertyUpdates {
    receiver: DesiredReceiver,
    next: Option<Pin<Box<dyn Future<Output = Option<DesiredPropertiesUpdate>> + Send>>>,
}

impl std::fmt::Debug for DesiredPropertyUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredPropertyUpdates")
            .finish_non_exhaustive()
    }
}

impl DesiredPropertyUpdates {
    /// The next update, waiting for one; [`ErrorKind::Closed`] once the client is closed.
    pub async fn recv(&mut self) -> Result<DesiredPropertiesUpdate> {
        self.receiver
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(closed_error)
    }
}

impl Stream for DesiredPropertyUpdates {
    type Item = DesiredPropertiesUpdate;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<DesiredPropertiesUpdate>> {
        if self.next.is_none() {
            let receiver = self.receiver.clone();
            self.next = Some(Box::pin(async move { receiver.lock().await.recv().await }));
        }
        let result = match self.next.as_mut() {
            Some(future) => std::task::ready!(future.as_mut().poll(cx)),
            None => return Poll::Pending,
        };
        self.next = None;
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(version: Option<u64>, body: &'static str) -> DesiredPatch {
        DesiredPatch {
            version,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn full(version: u64) -> VersionedProperties {
        VersionedProperties::from_json(
            serde_json::from_str(&format!(r#"{{"a":{version},"$version":{version}}}"#)).unwrap(),
        )
    }

    #[test]
    fn the_first_full_document_is_yielded_then_patches_in_order() {
        let mut tracker = DesiredTracker::default();
        let first = tracker.on_full(full(3)).unwrap();
        assert_eq!(
            (first.version, first.kind),
            (3, DesiredUpdateKind::FullDocument)
        );
        assert_eq!(first.properties["a"], 3);
        assert!(!first.properties.contains_key("$version"));
        // A patch already contained in the document is skipped.
        assert_eq!(
            tracker.on_patch(patch(Some(3), r#"{"a":3,"$version":3}"#)),
            PatchOutcome::Stale
        );
        let PatchOutcome::Yield(next) =
            tracker.on_patch(patch(Some(4), r#"{"b":null,"$version":4}"#))
        else {
            panic!()
        };
        assert_eq!((next.version, next.kind), (4, DesiredUpdateKind::Patch));
        assert_eq!(next.properties["b"], Value::Null);
        assert!(!next.properties.contains_key("$version"));
        // The same document again (a reconnection with nothing changed) yields nothing.
        assert_eq!(tracker.on_full(full(4)), None);
    }

    #[test]
    fn a_change_made_while_away_comes_as_the_full_document() {
        let mut tracker = DesiredTracker::default();
        tracker.on_full(full(1));
        // Versions 2 and 3 were made while the device was disconnected.
        let caught_up = tracker.on_full(full(3)).unwrap();
        assert_eq!(
            (caught_up.version, caught_up.kind),
            (3, DesiredUpdateKind::FullDocument)
        );
    }

    #[test]
    fn a_gap_or_a_patch_without_version_asks_for_the_twin() {
        let mut tracker = DesiredTracker::default();
        tracker.on_full(full(1));
        let PatchOutcome::YieldThenResync(update) = tracker.on_patch(patch(Some(5), "{}")) else {
            panic!()
        };
        assert_eq!(update.version, 5);
        // The version may come from the body alone.
        assert!(matches!(
            tracker.on_patch(patch(None, r#"{"$version":6}"#)),
            PatchOutcome::Yield(DesiredPropertiesUpdate { version: 6, .. })
        ));
        let PatchOutcome::YieldThenResync(update) = tracker.on_patch(patch(None, r#"{"x":1}"#))
        else {
            panic!()
        };
        assert_eq!(update.version, 6, "the last version known");
        assert_eq!(
            tracker.on_patch(patch(Some(7), "not json")),
            PatchOutcome::Resync
        );
        assert_eq!(
            tracker.on_patch(patch(Some(7), "[1]")),
            PatchOutcome::Resync
        );
    }

    #[test]
    fn before_any_document_the_first_patch_is_yielded() {
        let mut tracker = DesiredTracker::default();
        assert!(matches!(
            tracker.on_patch(patch(Some(9), "{}")),
            PatchOutcome::Yield(_)
        ));
        assert_eq!(tracker.on_full(full(9)), None);
        assert!(tracker.on_full(full(10)).is_some());
    }
}
