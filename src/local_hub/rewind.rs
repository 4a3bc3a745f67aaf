//! A stream that replays bytes already read from it.
//!
//! The AMQP endpoint reads the 8-byte protocol header itself, to choose between the SASL and
//! the bare AMQP handshake (OASIS AMQP 1.0 part 5, section 5.3.1: a SASL client starts with
//! protocol id 3; uamqp and rhea do so), then hands the stream to fe2o3-amqp's acceptor,
//! which must see the header again. `tokio::io::AsyncReadExt::chain` only reads; the acceptor
//! needs both halves of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads `prefix` first, then `inner`; writes go to `inner`.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// A stream that yields `prefix` before the rest of `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_on_and_writes_through() {
        let (mut far, near) = tokio::io::duplex(64);
        let mut stream = Rewind::new(b"AMQP".to_vec(), near);
        far.write_all(b"\x00\x01\x00\x00").await.unwrap();
        let mut got = [0u8; 8];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"AMQP\x00\x01\x00\x00");
        stream.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
    }
}
