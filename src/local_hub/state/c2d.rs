//! Each device's cloud-to-device queue, as seen from the listeners: the AMQP send link and the
//! registry enqueue and purge, the device's MQTT session pulls and completes.
//!
//! A connected, subscribed session learns that its queue has something through its outbox
//! ([`Outbound::C2dReady`]); it then pulls with [`HubState::next_c2d`], which locks the message
//! until the PUBACK ([`HubState::complete_c2d`]) or until the lock lapses. A message leaves the
//! queue only when completed, expired, purged or dead-lettered.

use std::time::SystemTime;

use crate::error::{Error, ErrorKind};
use crate::local_hub::c2d_queue::{EnqueueRefusal, LockToken, Settled};
use crate::message::Message;
use crate::protocol::{FeedbackRecord, expiry_time};

use super::identities::{Device, RegistryError};
use super::{HubState, Inner, Outbound};

impl Device {
    /// Tells the device's session, if connected and subscribed to C2D, to pull its queue.
    pub(super) fn wake_c2d(&self) {
        if self.slot.c2d_subscribed {
            self.slot.push(Outbound::C2dReady);
        }
    }
}

impl HubState {
    /// Queues a message for a device; `to` is set to the device's path when absent.
    ///
    /// Refusals: [`ErrorKind::DeviceNotFound`], [`ErrorKind::QueueFull`] and
    /// [`ErrorKind::MessageTooLarge`], with a description fit for the sender.
    pub fn enqueue_c2d(&self, device_id: &str, message: Message) -> Result<(), Error> {
        let now = self.clock.now();
        let mut settled = Vec::new();
        let mut inner = self.lock();
        let device = inner.devices.get_mut(device_id).ok_or_else(|| {
            Error::new(
                ErrorKind::DeviceNotFound,
                format!("device '{device_id}' is not registered"),
            )
        })?;
        let message = if message.to().is_none() {
            message.with_to(crate::protocol::c2d_address(device_id))
        } else {
            message
        };
        let message_id = message.message_id().map(str::to_owned);
        let result = device
            .queue
            .enqueue(message, &self.settings.c2d, now, &mut settled)
            .map_err(|refusal| match refusal {
                EnqueueRefusal::QueueFull => Error::new(
                    ErrorKind::QueueFull,
                    format!(
                        "the queue of device '{device_id}' already holds the maximum of messages"
                    ),
                ),
                EnqueueRefusal::TooLarge => Error::new(
                    ErrorKind::MessageTooLarge,
                    "the message is larger than the cloud-to-device limit",
                ),
            });
        if result.is_ok() {
            device.record.c2d_count = device.queue.len();
            device.wake_c2d();
            tracing::info!(device = device_id, message_id = ?message_id, "c2d enqueued");
        }
        self.file_c2d_deadline(&mut inner, device_id);
        self.record_feedback(&mut inner, device_id, settled, now);
        result
    }

    /// Purges a device's queue; returns how many messages it held.
    pub fn purge_c2d(&self, device_id: &str) -> Result<usize, RegistryError> {
        let now = self.clock.now();
        let mut settled = Vec::new();
        let mut inner = self.lock();
        let device = inner
            .devices
            .get_mut(device_id)
            .ok_or(RegistryError::DeviceNotFound)?;
        let count = device.queue.purge(now, &mut settled);
        device.record.c2d_count = 0;
        self.file_c2d_deadline(&mut inner, device_id);
        self.record_feedback(&mut inner, device_id, settled, now);
        tracing::info!(device = device_id, count, "c2d queue purged");
        Ok(count)
    }

    /// The next message for the device's current, subscribed session `session_id`, locked for
    /// it. `None` for any other session (a module's, or one that was replaced).
    pub fn next_c2d(&self, device_id: &str, session_id: u64) -> Option<(LockToken, Message)> {
        let now = self.clock.now();
        let mut settled = Vec::new();
        let mut inner = self.lock();
        let device = inner.devices.get_mut(device_id)?;
        if !device.slot.is_current(session_id) || !device.slot.c2d_subscribed {
            return None;
        }
        let next = device
            .queue
            .next_delivery(&self.settings.c2d, now, &mut settled);
        device.record.c2d_count = device.queue.len();
        self.file_c2d_deadline(&mut inner, device_id);
        self.record_feedback(&mut inner, device_id, settled, now);
        if let Some((_, message)) = &next {
            tracing::info!(device = device_id, message_id = ?message.message_id(), "c2d delivered");
        }
        next
    }

    /// The device acknowledged a delivery.
    pub fn complete_c2d(&self, device_id: &str, token: LockToken) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(device_id) else {
            return;
        };
        let settled = device.queue.complete(token, now);
        device.record.c2d_count = device.queue.len();
        device.slot.last_activity = now;
        self.file_c2d_deadline(&mut inner, device_id);
        match settled {
            Some(settled) => {
                tracing::info!(device = device_id, message_id = ?settled.message_id, "c2d completed");
                self.record_feedback(&mut inner, device_id, vec![settled], now);
            }
            None => tracing::info!(device = device_id, "c2d completion after the lock was lost"),
        }
    }

    /// Records whether the device's session subscribed to (or unsubscribed from) C2D.
    pub fn set_c2d_subscribed(&self, device_id: &str, session_id: u64, subscribed: bool) {
        let mut inner = self.lock();
        if let Some(device) = inner.devices.get_mut(device_id) {
            if device.slot.is_current(session_id) {
                device.slot.c2d_subscribed = subscribed;
                device.wake_c2d();
            }
        }
    }

    /// Messages in a device's queue, delivered or not.
    pub fn c2d_queue_len(&self, device_id: &str) -> Option<usize> {
        self.lock().devices.get(device_id).map(|d| d.queue.len())
    }

    /// Turns settled messages into feedback records, for those whose `iothub-ack` asks.
    pub(super) fn record_feedback(
        &self,
        inner: &mut Inner,
        device_id: &str,
        settled: Vec<Settled>,
        now: SystemTime,
    ) {
        if settled.is_empty() {
            self.persist_c2d(inner, device_id, &[], now);
            return;
        }
        let generation_id = inner
            .devices
            .get(device_id)
            .map(|d| d.record.generation_id.clone())
            .unwrap_or_default();
        let mut records = Vec::new();
        for s in settled {
            if !s.status.is_requested_by(s.ack) {
                continue;
            }
            tracing::info!(device = device_id, message_id = ?s.message_id, status = %s.status, "feedback record");
            let record = FeedbackRecord {
                original_message_id: s.message_id.unwrap_or_default(),
                status_code: s.status,
                description: s.status.as_str().to_owned(),
                device_id: device_id.to_owned(),
                device_generation_id: generation_id.clone(),
                enqueued_time_utc: expiry_time::format(s.at).unwrap_or_default(),
            };
            records.push(record);
        }
        // The queue's change and its feedback are written together.
        self.persist_c2d(inner, device_id, &records, now);
        let any = !records.is_empty();
        for record in records {
            inner.feedback.push(record, now);
        }
        // The sweep cuts the batch: wake it if the batch is full, or due before its planned
        // wake.
        let due = inner
            .feedback
            .next_deadline(self.settings.feedback_flush_interval);
        if any
            && (inner.feedback.has_ready()
                || due.is_some_and(|at| inner.deadlines.wakes_sooner(at)))
        {
            self.sweep_wake.notify_one();
        }
    }
}
