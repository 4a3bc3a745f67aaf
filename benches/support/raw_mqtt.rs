//! A raw MQTT 3.1.1 device client over TLS for the benches: rumqttc's packet codec over
//! tokio-rustls, driven by its caller in one task, with no event loop, no topic decoding and no
//! channels. The benches add what they do with it (`impl RawMqtt` blocks of their own).

use bytes::BytesMut;
use iothub::auth::{DeviceConnectionString, TokenSource};
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Login, Packet, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, QoS};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Result, within};

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The user name the official SDKs send (py-device `pipeline_stages_iothub_mqtt.py`; node-device `mqtt.ts`).
fn username(cs: &DeviceConnectionString) -> String {
    format!(
        "{}/{}/?api-version=2021-04-12&DeviceClientType=iothub-bench%2F0.1",
        cs.host_name(),
        cs.device_id()
    )
}

fn password(cs: &DeviceConnectionString) -> Result<String> {
    Ok(TokenSource::for_device(cs)?.token()?.token.to_string())
}

pub struct RawMqtt {
    stream: TlsStream,
    read: BytesMut,
    write: BytesMut,
}

impl RawMqtt {
    /// Connects as the device of `cs` (clean session false) and subscribes to its C2D topic.
    /// Each read takes at most `read_capacity` bytes (more after a partial packet).
    pub async fn connect(
        connector: &tokio_rustls::TlsConnector,
        port: u16,
        cs: &DeviceConnectionString,
        keep_alive: u16,
        read_capacity: usize,
    ) -> Result<Self> {
        let tcp = within("TCP connect", TcpStream::connect(("127.0.0.1", port))).await?;
        tcp.set_nodelay(true)?;
        let server = ServerName::try_from("localhost")?;
        let stream = within("TLS handshake", connector.connect(server, tcp)).await?;
        let mut client = RawMqtt {
            stream,
            read: BytesMut::with_capacity(read_capacity),
            write: BytesMut::with_capacity(1024),
        };
        let mut connect = Connect::new(cs.device_id());
        connect.keep_alive = keep_alive;
        connect.clean_session = false;
        connect.login = Some(Login::new(username(cs), password(cs)?));
        client.queue(Packet::Connect(connect))?;
        client.flush().await?;
        match client.recv().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            other => {
                return Err(
                    format!("{}: expected CONNACK 0, got {other:?}", cs.device_id()).into(),
                );
            }
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
            other => {
                return Err(
                    format!("{}: expected SUBACK QoS 1, got {other:?}", cs.device_id()).into(),
                );
            }
        }
        Ok(client)
    }

    pub fn queue(&mut self, packet: Packet) -> Result<()> {
        packet
            .write(&mut self.write, usize::MAX)
            .map_err(|e| format!("cannot encode a packet: {e}"))?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
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
    pub fn buffered(&mut self) -> Result<Option<Packet>> {
        match Packet::read(&mut self.read, 1 << 20) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(format!("malformed packet from the hub: {e}").into()),
        }
    }

    /// Reads more bytes; an error at end of stream.
    pub async fn fill(&mut self) -> Result<()> {
        match within("read", self.stream.read_buf(&mut self.read)).await? {
            0 => Err("the hub closed the connection".into()),
            _ => Ok(()),
        }
    }

    pub async fn recv(&mut self) -> Result<Packet> {
        for _ in 0..1_000_000 {
            if let Some(packet) = self.buffered()? {
                return Ok(packet);
            }
            self.fill().await?;
        }
        Err("no complete packet after a million reads".into())
    }
}
