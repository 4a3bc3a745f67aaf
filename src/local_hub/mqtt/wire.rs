//! One connection's bytes: MQTT 3.1.1 packets read and written with rumqttc's codec
//! (`rumqttc::mqttbytes::v4`).

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::{self};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest packet accepted: a 256 KB telemetry message plus its topic (Microsoft Learn,
/// "IoT Hub quotas and throttling": device-to-cloud messages up to 256 KB; azure-iot-device
/// `iothub/pipeline/constant.py` 262144).
const MAX_PACKET: usize = 256 * 1024 + 16 * 1024;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum End {
    Closed,
    Io(std::io::Error),
    Protocol(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("connection closed"),
            End::Io(e) => write!(f, "I/O error: {e}"),
            End::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

/// A connection's stream with its read and write buffers.
pub(super) struct Wire<S> {
    stream: S,
    read: BytesMut,
    write: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S) -> Self {
        Wire {
            stream,
            read: BytesMut::with_capacity(4096),
            write: BytesMut::with_capacity(4096),
        }
    }

    /// A complete packet already buffered, if any.
    pub fn buffered_packet(&mut self) -> Result<Option<Packet>, End> {
        match Packet::read(&mut self.read, MAX_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(End::Protocol(format!("malformed packet: {e}"))),
        }
    }

    /// Reads more bytes (cancel-safe). `Err(Closed)` at end of stream.
    pub async fn fill(&mut self) -> Result<(), End> {
        match self.stream.read_buf(&mut self.read).await {
            Ok(0) => Err(End::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(End::Io(e)),
        }
    }

    pub async fn next_packet(&mut self) -> Result<Packet, End> {
        loop {
            if let Some(packet) = self.buffered_packet()? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    pub async fn send(&mut self, packet: Packet) -> Result<(), End> {
        self.write.clear();
        packet
            .write(&mut self.write, usize::MAX)
            .map_err(|e| End::Protocol(format!("cannot encode a packet: {e}")))?;
        self.stream.write_all(&self.write).await.map_err(End::Io)?;
        self.stream.flush().await.map_err(End::Io)
    }
}
