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

/// The first packet of a connection.
#[derive(Debug)]
pub(super) enum First {
    /// A packet rumqttc's 3.1.1 codec read.
    Packet(Packet),
    /// A CONNECT with a protocol level other than 4 (3.1.1): MQTT 3.1.1 section 3.1.2.2 wants
    /// CONNACK 0x01 and a close.
    UnsupportedLevel(u8),
}

/// The protocol level of a CONNECT at the start of `bytes`, once enough of it is there
/// (MQTT 3.1.1 section 3.1.2: fixed header, remaining length, protocol name, level); `None`
/// when `bytes` does not start with a CONNECT or is too short yet.
pub(super) fn connect_protocol_level(bytes: &[u8]) -> Option<u8> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length: 1 to 4 bytes, 7 bits each, high bit "more" (section 2.2.3).
    let mut at = 1;
    loop {
        let byte = *bytes.get(at)?;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let name_len = u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize;
    bytes.get(at + 2 + name_len).copied()
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

    /// The first packet, or the level of a CONNECT this 3.1.1 endpoint does not speak, checked
    /// before the codec (which reads level 5 as if it were 3.1.1 and fails on 3).
    pub async fn first_packet(&mut self) -> Result<First, End> {
        loop {
            if let Some(level) = connect_protocol_level(&self.read)
                && level != 4
            {
                return Ok(First::UnsupportedLevel(level));
            }
            if let Some(packet) = self.buffered_packet()? {
                return Ok(First::Packet(packet));
            }
            self.fill().await?;
        }
    }

    /// Encodes a packet into the write buffer; nothing is written until [`Self::flush`].
    pub fn queue(&mut self, packet: Packet) -> Result<(), End> {
        packet
            .write(&mut self.write, usize::MAX)
            .map_err(|e| End::Protocol(format!("cannot encode a packet: {e}")))?;
        Ok(())
    }

    /// Writes everything queued in one write and one flush (one TLS record batch, one syscall
    /// where the socket takes it all); nothing when nothing is queued.
    pub async fn flush(&mut self) -> Result<(), End> {
        if self.write.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.write).await.map_err(End::Io)?;
        self.write.clear();
        self.stream.flush().await.map_err(End::Io)
    }

    /// Queues a packet and flushes.
    pub async fn send(&mut self, packet: Packet) -> Result<(), End> {
        self.queue(packet)?;
        self.flush().await
    }
}

#[cfg(test)]
mod level_tests {
    use super::connect_protocol_level;

    #[test]
    fn the_level_is_read_from_a_partial_connect() {
        // CONNECT, remaining length 12, "MQTT", level 5 (an MQTT 5 client).
        let v5 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60];
        assert_eq!(connect_protocol_level(&v5), Some(5));
        assert_eq!(connect_protocol_level(&v5[..8]), None);
        // MQTT 3.1: "MQIsdp", level 3, with a two-byte remaining length.
        let v3 = [
            0x10, 0x80, 0x01, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3,
        ];
        assert_eq!(connect_protocol_level(&v3), Some(3));
        // Not a CONNECT.
        assert_eq!(connect_protocol_level(&[0x30, 0, 0, 0, 0]), None);
    }
}
