//! A length check in front of fe2o3-amqp's frame decoder.
//!
//! fe2o3-amqp 0.18 reads frames with tokio-util's `LengthDelimitedCodec` (length adjustment
//! −4) and then takes the 4-byte frame header with `Buf::get_u8`/`get_u16`
//! (`fe2o3-amqp`, `src/frames/amqp.rs` `FrameDecoder::decode` and `src/frames/sasl.rs`
//! `FrameCodec::decode`): a frame whose size field says 4 to 7 leaves fewer than 4 bytes and
//! panics ("advance out of bounds"). OASIS AMQP 1.0 part 2.3.1 ("Frame Layout") makes 8 the
//! smallest frame (the size field counts the whole 8-byte header), and part 2.4.1 bounds every
//! frame by the max-frame-size. [`FrameGuard`] follows the bytes read from the client, frame by
//! frame, and fails the read (an `InvalidData` I/O error: fe2o3 closes the connection) before a
//! frame outside `8..=max` reaches the decoder.
//!
//! The protocol headers (`AMQP` + 4 bytes, before SASL and again after it) are recognised at a
//! frame boundary by their first four bytes: read as a size, `AMQP` is over 1 GB and cannot be
//! a frame the hub accepts.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The smallest frame: the 8-byte frame header alone (OASIS AMQP 1.0 part 2.3.1).
const MIN_FRAME_SIZE: u32 = 8;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// At a frame or header boundary, with `len` of the first 4 bytes seen.
    Boundary { head: [u8; 4], len: usize },
    /// Inside a frame body or the rest of a protocol header.
    Inside { remaining: u64 },
    /// A bad frame was seen: every further read fails.
    Failed,
}

/// The sans-IO part: follows frame boundaries over the bytes fed to it.
#[derive(Debug, Clone)]
pub(crate) struct FrameLengths {
    position: Position,
    max_frame_size: u32,
}

impl FrameLengths {
    /// Starts at a boundary (the protocol header comes first), accepting frames of up to
    /// `max_frame_size` bytes.
    pub(crate) fn new(max_frame_size: u32) -> Self {
        FrameLengths {
            position: Position::Boundary {
                head: [0; 4],
                len: 0,
            },
            max_frame_size,
        }
    }

    /// Follows `bytes`; `Err` with a reason when a frame size is out of bounds.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match &mut self.position {
                Position::Failed => return Err("an earlier frame was malformed".into()),
                Position::Inside { remaining } => {
                    let take = (*remaining).min(bytes.len() as u64);
                    *remaining -= take;
                    bytes = &bytes[take as usize..];
                    if *remaining == 0 {
                        self.position = Position::Boundary {
                            head: [0; 4],
                            len: 0,
                        };
                    }
                }
                Position::Boundary { head, len } => {
                    let take = (4 - *len).min(bytes.len());
                    head[*len..*len + take].copy_from_slice(&bytes[..take]);
                    *len += take;
                    bytes = &bytes[take..];
                    if *len < 4 {
                        continue;
                    }
                    if head == b"AMQP" {
                        self.position = Position::Inside { remaining: 4 };
                        continue;
                    }
                    let size = u32::from_be_bytes(*head);
                    if size < MIN_FRAME_SIZE || size > self.max_frame_size {
                        self.position = Position::Failed;
                        return Err(format!(
                            "frame size {size} outside {MIN_FRAME_SIZE}..={}",
                            self.max_frame_size
                        ));
                    }
                    self.position = Position::Inside {
                        remaining: u64::from(size) - 4,
                    };
                }
            }
        }
        Ok(())
    }
}

/// A stream whose reads fail before a frame of a size outside `8..=max` is passed on.
#[derive(Debug)]
pub(crate) struct FrameGuard<S> {
    inner: S,
    lengths: FrameLengths,
}

impl<S> FrameGuard<S> {
    /// Guards the reads from `inner`, which starts with a protocol header.
    pub(crate) fn new(inner: S, max_frame_size: u32) -> Self {
        FrameGuard {
            inner,
            lengths: FrameLengths::new(max_frame_size),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Err(reason) = this.lengths.feed(&buf.filled()[before..]) {
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_frames_after_either_header_are_refused() {
        for header in [b"AMQP\x00\x01\x00\x00", b"AMQP\x03\x01\x00\x00"] {
            for size in 0u32..8 {
                let mut lengths = FrameLengths::new(1024);
                let mut bytes = header.to_vec();
                bytes.extend_from_slice(&size.to_be_bytes());
                assert!(lengths.feed(&bytes).is_err(), "size {size}");
            }
        }
    }

    #[test]
    fn frames_are_followed_byte_by_byte_across_a_second_header() {
        let mut bytes = b"AMQP\x03\x01\x00\x00".to_vec();
        for _ in 0..3 {
            bytes.extend_from_slice(&12u32.to_be_bytes());
            bytes.extend_from_slice(&[2, 1, 0, 0, 9, 9, 9, 9]);
        }
        bytes.extend_from_slice(b"AMQP\x00\x01\x00\x00");
        bytes.extend_from_slice(&8u32.to_be_bytes());
        bytes.extend_from_slice(&[2, 0, 0, 0]);
        let mut lengths = FrameLengths::new(1024);
        for b in &bytes {
            lengths.feed(std::slice::from_ref(b)).unwrap();
        }
        lengths.feed(&2000u32.to_be_bytes()).unwrap_err();
        lengths.feed(&[0]).unwrap_err();
    }
}
