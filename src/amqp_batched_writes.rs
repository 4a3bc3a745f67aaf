//! One socket write per batch of AMQP frames, not one per frame.
//!
//! fe2o3-amqp's connection engine writes every outgoing frame with `SinkExt::send`, which
//! flushes the transport each time (`fe2o3-amqp` 0.18, `src/connection/engine.rs`,
//! `on_outgoing_session_frames`): a burst of dispositions, flows or transfers becomes one TLS
//! record and one `writev` each. [`BatchedWrites`] keeps written bytes in a buffer and treats a
//! flush as "may go later"; the bytes go to the socket, in one write, when
//!
//! - a read finds nothing to read: the engine polls its read side in every turn of its loop,
//!   so it cannot go idle with bytes held back, and frames written in one turn go together;
//! - the buffer reaches [`HIGH_WATER`] bytes;
//! - the stream is shut down (fe2o3 closes the transport when the connection ends, and the
//!   hub's own refusals shut down after writing).
//!
//! A frame therefore leaves in the same task poll that wrote it: the hub's `accepted`
//! disposition still goes out before the task yields, not after other tasks' work.
//!
//! Both ends use it: the hub on every AMQP connection it accepts (IoT Hub's service endpoint),
//! and `RegistryManager` on its C2D connection, whose concurrent sends are bursts of
//! transfers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held back at most; a write that reaches it sends the batch at once. A few TLS
/// records' worth: large enough for a burst of small frames, small enough not to hold up a
/// large transfer.
pub(crate) const HIGH_WATER: usize = 32 * 1024;

/// A stream whose writes are gathered and sent when its reader would wait.
#[derive(Debug)]
pub(crate) struct BatchedWrites<S> {
    inner: S,
    /// Written, not yet handed to `inner`.
    held: Vec<u8>,
    /// How much of `held` `inner` has taken.
    sent: usize,
    /// `inner` took bytes that it has not been asked to flush yet.
    unflushed: bool,
}

impl<S> BatchedWrites<S> {
    /// Gathers the writes to `inner`.
    pub(crate) fn new(inner: S) -> Self {
        BatchedWrites {
            inner,
            held: Vec::new(),
            sent: 0,
            unflushed: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> BatchedWrites<S> {
    /// Hands every held byte to `inner` and flushes it.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
            self.unflushed = true;
        }
        self.held.clear();
        self.sent = 0;
        if self.unflushed {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: sends the batch first when it would pass
    /// [`HIGH_WATER`].
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if !self.held.is_empty() && self.held.len() + len > HIGH_WATER {
            ready!(self.poll_send_held(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                // The reader waits: nothing more is written in this turn. A write error ends
                // the connection as a read error would (fe2o3 stops on either).
                if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_room(cx, buf.len()))?;
        this.held.extend_from_slice(buf);
        if this.held.len() >= HIGH_WATER {
            // Best effort now; what the socket does not take goes with the next batch.
            if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let this = &mut *self;
        ready!(this.poll_room(cx, len))?;
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        if this.held.len() >= HIGH_WATER {
            if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Held bytes may wait for the reader's next wait (see the module doc); nothing to do now.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// Counts the writes that reach the wrapped stream.
    struct CountingWrites<S> {
        inner: S,
        writes: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for CountingWrites<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for CountingWrites<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn batched(
        capacity: usize,
    ) -> (
        BatchedWrites<CountingWrites<tokio::io::DuplexStream>>,
        tokio::io::DuplexStream,
    ) {
        let (ours, peer) = duplex(capacity);
        (
            BatchedWrites::new(CountingWrites {
                inner: ours,
                writes: 0,
            }),
            peer,
        )
    }

    /// Polls a read once: it finds nothing, so the held bytes go out.
    async fn read_would_wait<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BatchedWrites<S>) {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut buf).is_pending())
        })
        .await;
        assert!(polled, "the peer sent nothing, so the read must wait");
    }

    #[tokio::test]
    async fn frames_flushed_one_by_one_leave_in_one_write_when_the_reader_waits() {
        let (mut stream, mut peer) = batched(64 * 1024);
        for frame in [&b"frame-1"[..], b"frame-2", b"frame-3"] {
            stream.write_all(frame).await.unwrap();
            stream.flush().await.unwrap();
        }
        assert_eq!(
            stream.inner.writes, 0,
            "nothing leaves before the reader waits"
        );
        read_would_wait(&mut stream).await;
        assert_eq!(stream.inner.writes, 1);
        let mut got = [0u8; 21];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the peer gets the batch")
            .unwrap();
        assert_eq!(&got, b"frame-1frame-2frame-3");
    }

    #[tokio::test]
    async fn a_full_batch_goes_without_waiting_for_the_reader() {
        let (mut stream, mut peer) = batched(4 * HIGH_WATER);
        let frame = vec![7u8; HIGH_WATER / 4 + 1];
        for _ in 0..4 {
            stream.write_all(&frame).await.unwrap();
        }
        assert!(
            stream.inner.writes >= 1,
            "the fourth frame would pass the limit: the first three were sent"
        );
        let mut got = vec![0u8; 3 * frame.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the peer gets the first three frames")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held() {
        let (mut stream, mut peer) = batched(1024);
        stream.write_all(b"close").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            peer.read_to_end(&mut got),
        )
        .await
        .expect("the peer sees the end")
        .unwrap();
        assert_eq!(got, b"close");
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_socket_takes_goes_as_the_peer_reads() {
        // The pipe takes 1 KiB at a time: the rest waits, and the reader's next waits send it.
        let (mut stream, mut peer) = batched(1024);
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        stream.write_all(&body).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 10_000];
            peer.read_exact(&mut got).await.map(|_| got)
        });
        let pumped = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut byte = [0u8; 1];
            std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut byte);
                let _ = Pin::new(&mut stream).poll_read(cx, &mut buf);
                if stream.held.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        })
        .await;
        assert!(pumped.is_ok(), "the held bytes drained as the peer read");
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got, body);
    }
}
