//! The feedback receiver's task: its own AMQP connection and a receiver link on
//! `/messages/serviceBound/feedback`, each message decoded into a batch that the application
//! completes or abandons.

use std::collections::HashMap;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use super::{AmqpConfig, Link, OPEN_TIMEOUT, transport};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::FeedbackRecord;
use crate::protocol::amqp_message::FEEDBACK_LINK_SOURCE;
use crate::protocol::feedback::decode_feedback_body;

/// A settlement the application chose for a feedback batch.
pub(crate) enum Settle {
    Complete(u64, oneshot::Sender<Result<()>>),
    Abandon(u64, oneshot::Sender<Result<()>>),
}

/// A batch as the feedback task hands it out.
pub(crate) struct ReceivedBatch {
    pub id: u64,
    pub records: Vec<FeedbackRecord>,
}

/// Starts a feedback receiver task; batches come out of the returned channel.
pub(crate) fn spawn_feedback(
    config: AmqpConfig,
) -> (
    mpsc::Receiver<Result<ReceivedBatch>>,
    mpsc::UnboundedSender<Settle>,
) {
    let (batches_tx, batches_rx) = mpsc::channel(16);
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    tokio::spawn(feedback_task(config, batches_tx, settle_rx));
    (batches_rx, settle_tx)
}

async fn feedback_task(
    config: AmqpConfig,
    batches: mpsc::Sender<Result<ReceivedBatch>>,
    mut settles: mpsc::UnboundedReceiver<Settle>,
) {
    let mut failures = 0u32;
    let mut next_id = 0u64;
    'connection: loop {
        if batches.is_closed() {
            return;
        }
        let (mut link, mut receiver) = match open_feedback(&config).await {
            Ok(opened) => {
                failures = 0;
                opened
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let last =
                    e.kind() == ErrorKind::Unauthorized || config.retry.gives_up_after(failures);
                if batches.send(Err(e)).await.is_err() || last {
                    return;
                }
                tokio::time::sleep(config.retry.delay(failures)).await;
                continue;
            }
        };
        let mut pending: HashMap<u64, DeliveryInfo> = HashMap::new();
        loop {
            tokio::select! {
                delivery = receiver.recv::<Body<Value>>() => {
                    let delivery = match delivery {
                        Ok(delivery) => delivery,
                        Err(e) => {
                            tracing::warn!(error = %e, "the feedback link failed; reopening");
                            link.close().await;
                            tokio::time::sleep(config.retry.delay(1)).await;
                            continue 'connection;
                        }
                    };
                    let records = decode_feedback_body(delivery.body());
                    let info = DeliveryInfo::from(delivery);
                    match records {
                        Ok(records) => {
                            next_id += 1;
                            pending.insert(next_id, info);
                            if batches.send(Ok(ReceivedBatch { id: next_id, records })).await.is_err() {
                                break 'connection;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a feedback message was not a record array; rejecting it");
                            let _ = receiver.reject(info, None).await;
                        }
                    }
                }
                settle = settles.recv() => {
                    let Some(settle) = settle else { break 'connection };
                    let (id, done, accept) = match settle {
                        Settle::Complete(id, done) => (id, done, true),
                        Settle::Abandon(id, done) => (id, done, false),
                    };
                    let result = match pending.remove(&id) {
                        Some(info) if accept => receiver.accept(info).await.map_err(|e| transport("the completion did not reach the hub").with_source(e)),
                        Some(info) => receiver.release(info).await.map_err(|e| transport("the abandon did not reach the hub").with_source(e)),
                        None => Err(transport("the feedback link that delivered this batch was lost; the hub will deliver it again")),
                    };
                    let _ = done.send(result);
                }
                _ = sleep_until(link.renew_at) => {
                    if let Err(e) = link.authorize(&config).await {
                        tracing::warn!(error = %e, "token renewal failed; reopening the feedback link");
                        link.close().await;
                        continue 'connection;
                    }
                }
            }
        }
    }
}

async fn open_feedback(config: &AmqpConfig) -> Result<(Link, Receiver)> {
    let mut link = Link::open(config).await?;
    let name = format!("feedback-receiver-{}", uuid::Uuid::new_v4());
    let attach = Receiver::builder()
        .name(name)
        .source(FEEDBACK_LINK_SOURCE)
        .target(format!("iothub-rs-{}", uuid::Uuid::new_v4()))
        .attach(&mut link.session);
    match tokio::time::timeout(OPEN_TIMEOUT, attach).await {
        Ok(Ok(receiver)) => Ok((link, receiver)),
        Ok(Err(e)) => {
            link.close().await;
            Err(transport("the hub refused the feedback link").with_source(e))
        }
        Err(_) => {
            link.close().await;
            Err(Error::new(
                ErrorKind::Timeout,
                "the hub did not answer the feedback link's ATTACH in time",
            ))
        }
    }
}
