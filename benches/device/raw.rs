//! The raw baseline of `benches/device.rs`: rumqttc's MQTT 3.1.1 packet codec over
//! tokio-rustls in one task, with no event loop, no topic decoding and no channels.

use bytes::{Bytes, BytesMut};
use iothub::auth::{DeviceConnectionString, TokenSource};
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Login, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, QoS};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Result, within};

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Keep-alive of the raw clients.
const RAW_KEEP_ALIVE: u16 = 600;

/// A raw MQTT 3.1.1 client over TLS: rumqttc's codec, no event loop.
pub(super) struct RawClient {
    stream: TlsStream,
    read: BytesMut,
    write: BytesMut,
}

impl RawClient {
    /// Connects as the device of `cs` (clean session false) and subscribes to its C2D topic.
    pub(super) async fn connect(
        connector: &tokio_rustls::TlsConnector,
        port: u16,
        cs: &DeviceConnectionString,
    ) -> Result<Self> {
        let tcp = within("TCP connect", TcpStream::connect(("127.0.0.1", port))).await?;
        tcp.set_nodelay(true)?;
        let server = ServerName::try_from("localhost")?;
        let stream = within("TLS handshake", connector.connect(server, tcp)).await?;
        let mut client = RawClient {
            stream,
            read: BytesMut::with_capacity(16 * 1024),
            write: BytesMut::with_capacity(1024),
        };
        let mut connect = Connect::new(cs.device_id());
        connect.keep_alive = RAW_KEEP_ALIVE;
        connect.clean_session = false;
        let username = format!(
            "{}/{}/?api-version=2021-04-12&DeviceClientType=iothub-bench%2F0.1",
            cs.host_name(),
            cs.device_id()
        );
        let password = TokenSource::for_device(cs)?.token()?.token.to_string();
        connect.login = Some(Login::new(username, password));
        client.queue(Packet::Connect(connect))?;
        client.flush().await?;
        match client.recv().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            other => return Err(format!("expected CONNACK 0, got {other:?}").into()),
        }
        let mut subscribe = Subscribe::new(
            format!("devices/{}/messages/devicebound/#", cs.device_id()),
            QoS::AtLeastOnce,
        );
        subscribe.pkid = 1;
        client.queue(Packet::Subscribe(subscribe))?;
        client.flush().await?;
        match client.recv().await? {
            Packet::SubAck(ack)
                if ack.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)] => {}
            other => return Err(format!("expected SUBACK QoS 1, got {other:?}").into()),
        }
        Ok(client)
    }

    fn queue(&mut self, packet: Packet) -> Result<()> {
        packet
            .write(&mut self.write, usize::MAX)
            .map_err(|e| format!("cannot encode a packet: {e}"))?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.write.is_empty() {
            return Ok(());
        }
        within("write", async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        })
        .await?;
        self.write.clear();
        Ok(())
    }

    /// A complete packet already read, if any.
    fn buffered(&mut self) -> Result<Option<Packet>> {
        match Packet::read(&mut self.read, 1 << 20) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(format!("malformed packet from the hub: {e}").into()),
        }
    }

    /// Reads more bytes; an error at end of stream.
    async fn fill(&mut self) -> Result<()> {
        match within("read", self.stream.read_buf(&mut self.read)).await? {
            0 => Err("the hub closed the connection".into()),
            _ => Ok(()),
        }
    }

    async fn recv(&mut self) -> Result<Packet> {
        for _ in 0..1_000_000 {
            if let Some(packet) = self.buffered()? {
                return Ok(packet);
            }
            self.fill().await?;
        }
        Err("no complete packet after a million reads".into())
    }

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
