//! What `benches/device.rs` does with the raw MQTT client (`benches/support/raw_mqtt.rs`): it
//! reads what the socket has and PUBACKs every PUBLISH of that read in one write.

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};

use super::Result;
use super::support::raw_mqtt::RawMqtt;

impl RawMqtt {
    /// Waits for at least one PUBLISH; appends the payloads of all PUBLISHes read so far to
    /// `out` and PUBACKs them in one write.
    pub(super) async fn receive_publishes(&mut self, out: &mut Vec<Bytes>) -> Result<()> {
        self.receive_publishes_with(|publish| out.push(publish.payload))
            .await
    }

    /// Waits for at least one PUBLISH; hands every PUBLISH read so far to `each` and PUBACKs
    /// them in one write.
    pub(super) async fn receive_publishes_with(
        &mut self,
        mut each: impl FnMut(Publish),
    ) -> Result<()> {
        let mut received = false;
        for _ in 0..1_000_000 {
            while let Some(packet) = self.buffered()? {
                match packet {
                    Packet::Publish(publish) => {
                        self.queue(Packet::PubAck(PubAck::new(publish.pkid)))?;
                        each(publish);
                        received = true;
                    }
                    other => return Err(format!("expected PUBLISH, got {other:?}").into()),
                }
            }
            if received {
                return self.flush().await;
            }
            self.fill().await?;
        }
        Err("no PUBLISH after a million reads".into())
    }
}
