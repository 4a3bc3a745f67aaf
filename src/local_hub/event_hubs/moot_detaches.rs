//! Incoming DETACH frames that an END of their session makes moot are not answered.
//!
//! The official Event Hubs SDK for Rust (`azure_messaging_eventhubs` 0.16 on fe2o3-amqp 0.16)
//! authorizes with a fresh `$cbs` session each time and tears it down by dropping it: DETACH of
//! both `$cbs` links, then END, sent back to back without waiting. If the hub then answers with
//! DETACH, DETACH, END, that client's session engine closes the whole connection: the first
//! DETACH reply finds its link gone (an error), the session starts waiting for END, the second
//! reply is another error in that wait, the session stops, and the END that follows belongs to
//! no session ("Session is not found": fe2o3-amqp 0.16.2 `src/session/engine.rs`
//! `end_session` and `wait_for_remote_end`, `src/connection/mod.rs` `on_incoming_end`). Its
//! next operation fails with "Illegal session state", and a reader cannot even open.
//!
//! An END detaches every link still attached to its session (OASIS AMQP 1.0 part 2, sessions
//! and links), so a DETACH followed by the END of its session needs no reply of its own.
//! [`MootDetaches`] keeps a DETACH read from the client back from the AMQP engine for up to
//! [`HOLD`]; if the END of the same session arrives in that time, the DETACH is dropped and the
//! client gets END alone, which every AMQP client accepts. Otherwise the DETACH goes on and is
//! answered as usual, [`HOLD`] later. Everything else passes through in order.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a DETACH waits for the END of its session: the client above sends the two frames
/// within a fraction of a millisecond; a link closed on its own is answered this much later.
pub(crate) const HOLD: Duration = Duration::from_millis(5);

/// What a whole protocol header or frame is, as far as this layer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Detach { channel: u16 },
    End { channel: u16 },
    Other,
}

/// The length and kind of the whole header or frame at the start of `bytes`, if it is all there.
fn next_unit(bytes: &[u8]) -> Option<(usize, Unit)> {
    if bytes.len() >= 8 && bytes.starts_with(b"AMQP") {
        return Some((8, Unit::Other));
    }
    let size = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    // Sizes under 8 never get here: `FrameGuard` below fails the read first.
    let size = size.max(8);
    let frame = bytes.get(..size)?;
    let channel = u16::from_be_bytes([frame[6], frame[7]]);
    let body = frame.get(usize::from(frame[4]) * 4..).unwrap_or_default();
    // Type 0 is an AMQP frame; a performative is a described list (OASIS AMQP 1.0 part 2.3.2).
    let code = match body {
        _ if frame[5] != 0 => None,
        [0x00, 0x53, code, ..] => Some(u64::from(*code)),
        [0x00, 0x80, rest @ ..] => rest
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default())),
        _ => None,
    };
    let unit = match code {
        Some(0x16) => Unit::Detach { channel },
        Some(0x17) => Unit::End { channel },
        _ => Unit::Other,
    };
    Some((size, unit))
}

/// The sans-IO part: whole frames read from the client, released in order, minus moot DETACHes.
#[derive(Debug, Default)]
pub(crate) struct DetachFilter {
    /// Read, not yet split into whole headers and frames.
    unparsed: Vec<u8>,
    /// Whole headers and frames from the first DETACH still waiting for its END on.
    held: Vec<u8>,
    /// For the engine, in order.
    released: Vec<u8>,
}

impl DetachFilter {
    /// Takes bytes read from the client.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.unparsed.extend_from_slice(bytes);
        let mut at = 0;
        while let Some((len, _)) = next_unit(&self.unparsed[at..]) {
            at += len;
        }
        self.held.extend_from_slice(&self.unparsed[..at]);
        self.unparsed.drain(..at);
        self.settle(false);
    }

    /// Whether a DETACH is waiting for the END of its session.
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Gives up waiting: every held frame goes on.
    pub(crate) fn hold_expired(&mut self) {
        self.settle(true);
    }

    /// At the end of the client's stream, whatever is left goes on (a partial frame included:
    /// the engine reports it).
    pub(crate) fn finish(&mut self) {
        self.settle(true);
        self.released.append(&mut self.unparsed);
    }

    /// Bytes for the engine.
    pub(crate) fn released(&mut self) -> &mut Vec<u8> {
        &mut self.released
    }

    /// Drops each held DETACH whose session's END follows it, releases everything before the
    /// first DETACH still waiting (everything, when `expired`).
    fn settle(&mut self, expired: bool) {
        let mut units = Vec::new();
        let mut at = 0;
        while let Some((len, unit)) = next_unit(&self.held[at..]) {
            units.push((at, len, unit));
            at += len;
        }
        let ended = |after: usize, on: u16| {
            units[after + 1..]
                .iter()
                .any(|&(_, _, unit)| unit == Unit::End { channel: on })
        };
        let mut kept_from = None;
        for (index, &(start, len, unit)) in units.iter().enumerate() {
            match unit {
                Unit::Detach { channel } if ended(index, channel) => {}
                Unit::Detach { .. } if !expired => {
                    kept_from = Some(start);
                    break;
                }
                _ => self
                    .released
                    .extend_from_slice(&self.held[start..start + len]),
            }
        }
        match kept_from {
            Some(start) => drop(self.held.drain(..start)),
            None => self.held.clear(),
        }
    }
}

/// A stream whose reads pass through a [`DetachFilter`]; writes pass through unchanged.
#[derive(Debug)]
pub(crate) struct MootDetaches<S> {
    inner: S,
    filter: DetachFilter,
    /// Running while a DETACH is held.
    hold: Option<Pin<Box<Sleep>>>,
    /// The client's stream has ended.
    finished: bool,
}

impl<S> MootDetaches<S> {
    pub(crate) fn new(inner: S) -> Self {
        MootDetaches {
            inner,
            filter: DetachFilter::default(),
            hold: None,
            finished: false,
        }
    }

    /// Starts the hold when a DETACH is newly held, ends it when none is; `true` once it ran out.
    fn hold_ran_out(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.filter.holding() {
            self.hold = None;
            return false;
        }
        let hold = self
            .hold
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(HOLD)));
        if hold.as_mut().poll(cx).is_ready() {
            self.hold = None;
            self.filter.hold_expired();
            return true;
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MootDetaches<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let released = this.filter.released();
            if !released.is_empty() {
                let n = released.len().min(buf.remaining());
                buf.put_slice(&released[..n]);
                released.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.finished = true;
                    this.hold = None;
                    this.filter.finish();
                }
                Poll::Ready(Ok(())) => {
                    this.filter.feed(read.filled());
                    this.hold_ran_out(cx);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if !this.hold_ran_out(cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MootDetaches<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An AMQP frame on `channel` with performative body `body`.
    fn frame(channel: u16, body: &[u8]) -> Vec<u8> {
        let mut f = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, 0]);
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// detach(handle 0, closed true)
    fn detach(channel: u16) -> Vec<u8> {
        frame(channel, &[0x00, 0x53, 0x16, 0xc0, 0x03, 0x02, 0x43, 0x41])
    }

    /// The same DETACH with its descriptor as a ulong rather than a small ulong.
    fn detach_long_descriptor(channel: u16) -> Vec<u8> {
        frame(channel, &[0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x16, 0x45])
    }

    fn end(channel: u16) -> Vec<u8> {
        frame(channel, &[0x00, 0x53, 0x17, 0x45])
    }

    fn attach(channel: u16) -> Vec<u8> {
        frame(channel, &[0x00, 0x53, 0x12, 0x45])
    }

    fn released(filter: &mut DetachFilter) -> Vec<u8> {
        std::mem::take(filter.released())
    }

    #[test]
    fn detaches_followed_by_the_end_of_their_session_are_dropped() {
        let mut filter = DetachFilter::default();
        let mut bytes = detach(1);
        bytes.extend(detach_long_descriptor(1));
        bytes.extend(end(1));
        filter.feed(&bytes);
        assert_eq!(released(&mut filter), end(1));
        assert!(!filter.holding());
    }

    #[test]
    fn a_held_detach_is_dropped_when_its_end_comes_in_a_later_read() {
        let mut filter = DetachFilter::default();
        let mut first = attach(0);
        first.extend(detach(1));
        filter.feed(&first);
        // What came before the DETACH goes on at once.
        assert_eq!(released(&mut filter), attach(0));
        assert!(filter.holding());
        // The END arrives split over two reads.
        let end = end(1);
        filter.feed(&end[..5]);
        assert!(released(&mut filter).is_empty());
        filter.feed(&end[5..]);
        assert_eq!(released(&mut filter), end);
        assert!(!filter.holding());
    }

    #[test]
    fn the_end_of_another_session_does_not_drop_a_detach() {
        let mut filter = DetachFilter::default();
        let mut bytes = detach(1);
        bytes.extend(attach(0));
        bytes.extend(end(2));
        filter.feed(&bytes);
        assert!(released(&mut filter).is_empty());
        filter.hold_expired();
        assert_eq!(released(&mut filter), bytes);
    }

    #[test]
    fn an_end_before_the_detach_does_not_drop_it() {
        let mut filter = DetachFilter::default();
        let mut bytes = end(1);
        bytes.extend(detach(1));
        filter.feed(&bytes);
        assert_eq!(released(&mut filter), end(1));
        filter.hold_expired();
        assert_eq!(released(&mut filter), detach(1));
    }

    #[test]
    fn headers_sasl_frames_and_partial_frames_pass_in_order() {
        let mut filter = DetachFilter::default();
        let mut bytes = b"AMQP\x03\x01\x00\x00".to_vec();
        // sasl-init as a type-1 frame whose code matches DETACH's: not a DETACH
        let mut sasl = frame(0, &[0x00, 0x53, 0x16, 0x45]);
        sasl[5] = 1;
        bytes.extend(&sasl);
        bytes.extend(b"AMQP\x00\x01\x00\x00");
        bytes.extend(attach(0));
        filter.feed(&bytes[..bytes.len() - 3]);
        filter.feed(&bytes[bytes.len() - 3..]);
        assert_eq!(released(&mut filter), bytes);
        // A partial frame at the end of the stream is handed on for the engine to report.
        filter.feed(&attach(0)[..6]);
        filter.finish();
        assert_eq!(released(&mut filter), attach(0)[..6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_detach_alone_is_delivered_after_the_hold() {
        let (mut client, hub) = tokio::io::duplex(1024);
        let mut hub = MootDetaches::new(hub);
        client.write_all(&detach(1)).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut got = vec![0u8; detach(1).len()];
        hub.read_exact(&mut got).await.unwrap();
        assert_eq!(got, detach(1));
        assert_eq!(started.elapsed(), HOLD);
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_gets_end_alone_when_detach_and_end_come_together() {
        let (mut client, hub) = tokio::io::duplex(1024);
        let mut hub = MootDetaches::new(hub);
        client.write_all(&detach(1)).await.unwrap();
        let later = async {
            tokio::time::sleep(HOLD / 2).await;
            client.write_all(&end(1)).await.unwrap();
            client.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let (_, read) = tokio::join!(later, hub.read_to_end(&mut got));
        read.unwrap();
        assert_eq!(got, end(1));
        // Writes pass through.
        hub.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    }
}
