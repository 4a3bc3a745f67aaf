//! Outgoing frames with every performative field present, for azure-eventhub's pure-Python
//! AMQP stack.
//!
//! AMQP 1.0 lets an encoder leave out trailing null fields of a composite (OASIS AMQP 1.0
//! §1.4, "Composite Type Representation"), and fe2o3-amqp does. azure-eventhub 5.x's
//! `_pyamqp` does not fill them back in: `decode_frame` returns only the fields on the wire and
//! appends a transfer's payload after them, and the handlers index fields by position
//! (azure-sdk-for-python `azure/eventhub/_pyamqp/_decode.py`, `decode_frame`;
//! `aio/_connection_async.py` reads `frame[9]` of OPEN, `aio/_link_async.py` `frame[13]` of
//! ATTACH, `aio/_receiver_async.py` the payload as `frame[11]` of TRANSFER). Event Hubs itself
//! sends every field, so this layer pads each outgoing performative's list with nulls to its
//! full field count. Everything else passes through unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes buffered for the peer before writes push back.
const HIGH_WATER: usize = 256 * 1024;

/// The field count of a performative (frame type 0 = AMQP, 1 = SASL), by descriptor code.
fn field_count(frame_type: u8, code: u64) -> Option<u32> {
    Some(match (frame_type, code) {
        (0, 0x10) => 10, // open
        (0, 0x11) => 8,  // begin
        (0, 0x12) => 14, // attach
        (0, 0x13) => 11, // flow
        (0, 0x14) => 11, // transfer
        (0, 0x15) => 6,  // disposition
        (0, 0x16) => 3,  // detach
        (0, 0x17) => 1,  // end
        (0, 0x18) => 1,  // close
        (1, 0x40) => 1,  // sasl-mechanisms
        (1, 0x42) => 1,  // sasl-challenge
        (1, 0x44) => 2,  // sasl-outcome
        _ => return None,
    })
}

/// Values for fields fe2o3-amqp leaves null because they hold the spec's default, which
/// `_pyamqp` compares as numbers (`aio/_session_async.py` checks new links against BEGIN's
/// `handle-max`; `aio/_connection_async.py` OPEN's `max-frame-size`).
fn default_for(frame_type: u8, code: u64, index: usize) -> Option<&'static [u8]> {
    const UINT_MAX: &[u8] = &[0x70, 0xff, 0xff, 0xff, 0xff];
    const USHORT_MAX: &[u8] = &[0x60, 0xff, 0xff];
    match (frame_type, code, index) {
        (0, 0x10, 2) => Some(UINT_MAX),   // open.max-frame-size
        (0, 0x10, 3) => Some(USHORT_MAX), // open.channel-max
        (0, 0x11, 4) => Some(UINT_MAX),   // begin.handle-max
        _ => None,
    }
}

/// The encoded length of the AMQP value at the start of `bytes` (OASIS AMQP 1.0 §1.6).
fn value_len(bytes: &[u8]) -> Option<usize> {
    let be32 = |at: usize| -> Option<usize> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let len = match *bytes.first()? {
        0x00 => {
            let descriptor = value_len(bytes.get(1..)?)?;
            1 + descriptor + value_len(bytes.get(1 + descriptor..)?)?
        }
        0x40..=0x45 => 1,
        0x50..=0x56 => 2,
        0x60..=0x61 => 3,
        0x70..=0x74 => 5,
        0x80..=0x84 => 9,
        0x94 | 0x98 => 17,
        0xa0 | 0xa1 | 0xa3 | 0xc0 | 0xc1 | 0xe0 => 2 + usize::from(*bytes.get(1)?),
        0xb0 | 0xb1 | 0xb3 | 0xd0 | 0xd1 | 0xf0 => 5 + be32(1)?,
        _ => return None,
    };
    (len <= bytes.len()).then_some(len)
}

/// Appends `frame` (one whole frame) to `out`, with its performative padded.
pub(crate) fn pad_frame(frame: &[u8], out: &mut Vec<u8>) {
    if let Some(padded) = padded(frame) {
        out.extend_from_slice(&padded);
    } else {
        out.extend_from_slice(frame);
    }
}

fn padded(frame: &[u8]) -> Option<Vec<u8>> {
    let body_start = usize::from(*frame.get(4)?) * 4;
    let frame_type = *frame.get(5)?;
    let body = frame.get(body_start..)?;
    let (code, descriptor_len) = match body {
        [0x00, 0x53, code, ..] => (u64::from(*code), 3),
        [0x00, 0x80, rest @ ..] => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 10),
        _ => return None,
    };
    let full = field_count(frame_type, code)?;
    let list = body.get(descriptor_len..)?;
    let (count, content, list_len) = match list.first()? {
        0x45 => (0u32, &list[..0], 1usize),
        0xc0 => {
            let size = usize::from(*list.get(1)?);
            (u32::from(*list.get(2)?), list.get(3..2 + size)?, 2 + size)
        }
        0xd0 => {
            let size = u32::from_be_bytes(list.get(1..5)?.try_into().ok()?) as usize;
            let count = u32::from_be_bytes(list.get(5..9)?.try_into().ok()?);
            (count, list.get(9..5 + size)?, 5 + size)
        }
        _ => return None,
    };
    // Split the fields, fill the missing ones with nulls, then nulls with known defaults.
    let mut fields: Vec<&[u8]> = Vec::with_capacity(full as usize);
    let mut at = 0;
    while at < content.len() {
        let len = value_len(&content[at..])?;
        fields.push(&content[at..at + len]);
        at += len;
    }
    if fields.len() != count as usize {
        return None;
    }
    let mut changed = count < full;
    fields.resize(fields.len().max(full as usize), &[0x40]);
    for (index, field) in fields.iter_mut().enumerate() {
        if *field == [0x40] {
            if let Some(default) = default_for(frame_type, code, index) {
                *field = default;
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    let encoded: Vec<u8> = fields.concat();
    let rest = list.get(list_len..)?;
    let mut out = Vec::with_capacity(frame.len() + encoded.len() + 9);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&frame[4..body_start + descriptor_len]);
    out.push(0xd0);
    out.extend_from_slice(&u32::try_from(4 + encoded.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&u32::try_from(fields.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(rest);
    let size = u32::try_from(out.len()).ok()?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

/// A stream whose outgoing AMQP frames are padded by [`pad_frame`]; reads pass through.
#[derive(Debug)]
pub(crate) struct FullFrames<S> {
    inner: S,
    /// Written by the AMQP engine, not yet a whole frame or protocol header.
    incoming: Vec<u8>,
    /// Padded, waiting for the socket.
    outgoing: Vec<u8>,
}

impl<S> FullFrames<S> {
    pub(crate) fn new(inner: S) -> Self {
        FullFrames {
            inner,
            incoming: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// Moves every complete header or frame from `incoming` to `outgoing`.
    fn convert(&mut self) {
        let mut at = 0;
        loop {
            let rest = &self.incoming[at..];
            if rest.len() >= 8 && rest.starts_with(b"AMQP") {
                self.outgoing.extend_from_slice(&rest[..8]);
                at += 8;
                continue;
            }
            let Some(size) = rest
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                break;
            };
            let size = (size as usize).max(8);
            if rest.len() < size {
                break;
            }
            pad_frame(&rest[..size], &mut self.outgoing);
            at += size;
        }
        self.incoming.drain(..at);
    }
}

impl<S: AsyncWrite + Unpin> FullFrames<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FullFrames<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FullFrames<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() >= HIGH_WATER {
            std::task::ready!(this.poll_drain(cx))?;
        }
        this.incoming.extend_from_slice(buf);
        this.convert();
        // Best effort now; the rest goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `frame_type` with body `body` on channel 0.
    fn frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
        let mut f = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, frame_type, 0, 0]);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_short_open_gets_all_ten_fields() {
        // open(list8 [container-id "a"])
        let short = frame(0, &[0x00, 0x53, 0x10, 0xc0, 0x04, 0x01, 0xa1, 0x01, b'a']);
        let mut out = Vec::new();
        pad_frame(&short, &mut out);
        let mut body = vec![
            0x00,
            0x53,
            0x10,
            0xd0,
            0,
            0,
            0,
            4 + 3 + 1 + 5 + 3 + 6,
            0,
            0,
            0,
            10,
        ];
        body.extend_from_slice(&[0xa1, 0x01, b'a', 0x40]);
        // max-frame-size and channel-max with the spec's defaults
        body.extend_from_slice(&[0x70, 0xff, 0xff, 0xff, 0xff, 0x60, 0xff, 0xff]);
        body.extend_from_slice(&[0x40; 6]);
        assert_eq!(out, frame(0, &body));
    }

    #[test]
    fn a_transfer_keeps_its_payload_after_the_padded_list() {
        // transfer(list0) + payload
        let mut body = vec![0x00, 0x53, 0x14, 0x45];
        body.extend_from_slice(b"payload");
        let mut out = Vec::new();
        pad_frame(&frame(0, &body), &mut out);
        let mut expected = vec![0x00, 0x53, 0x14, 0xd0, 0, 0, 0, 15, 0, 0, 0, 11];
        expected.extend_from_slice(&[0x40; 11]);
        expected.extend_from_slice(b"payload");
        assert_eq!(out, frame(0, &expected));
    }

    #[test]
    fn complete_and_unknown_frames_pass_unchanged() {
        let heartbeat = frame(0, &[]);
        let full_end = frame(0, &[0x00, 0x53, 0x17, 0xc0, 0x02, 0x01, 0x40]);
        let bad_list = frame(0, &[0x00, 0x53, 0x17, 0xc0, 0x02, 0x01, 0xff]);
        let garbage = frame(0, &[0x01, 0x02]);
        for f in [heartbeat, full_end, garbage, bad_list] {
            let mut out = Vec::new();
            pad_frame(&f, &mut out);
            assert_eq!(out, f);
        }
    }

    #[test]
    fn truncated_input_never_panics() {
        let f = frame(0, &[0x00, 0x53, 0x10, 0xc0, 0x09, 0x01]);
        let mut out = Vec::new();
        pad_frame(&f, &mut out);
        assert_eq!(out, f);
    }

    #[tokio::test]
    async fn split_writes_are_reassembled() {
        use tokio::io::AsyncWriteExt;
        let mut bytes = b"AMQP\x00\x01\x00\x00".to_vec();
        bytes.extend_from_slice(&frame(0, &[0x00, 0x53, 0x18, 0x45]));
        let mut stream = FullFrames::new(Vec::new());
        for chunk in bytes.chunks(3) {
            stream.write_all(chunk).await.unwrap();
        }
        stream.flush().await.unwrap();
        let mut expected = b"AMQP\x00\x01\x00\x00".to_vec();
        expected.extend_from_slice(&frame(
            0,
            &[0x00, 0x53, 0x18, 0xd0, 0, 0, 0, 5, 0, 0, 0, 1, 0x40],
        ));
        assert_eq!(stream.inner, expected);
    }
}
