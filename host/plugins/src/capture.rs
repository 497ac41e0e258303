//! Bounded capture of a guest's stdout and stderr.
//!
//! A Rust guest that panics prints the panic message to stderr and then traps;
//! keeping the last few KiB of each stream lets the node error carry that
//! message. Output beyond the bound is dropped from the front (the end of the
//! stream is what explains a crash), and writing never fails, so a chatty
//! guest cannot trap itself by printing.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much of each stream is kept.
pub(crate) const CAPTURE_BYTES: usize = 4 << 10;

/// The tail of one output stream; clones share the buffer.
#[derive(Clone, Default)]
pub(crate) struct TailPipe {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl TailPipe {
    /// The kept bytes, lossily decoded as UTF-8 and trimmed.
    pub fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let start = buffer.len().saturating_sub(CAPTURE_BYTES);
        String::from_utf8_lossy(&buffer[start..]).trim().to_owned()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.len() >= CAPTURE_BYTES {
            buffer.clear();
            buffer.extend_from_slice(&bytes[bytes.len() - CAPTURE_BYTES..]);
            return;
        }
        buffer.extend_from_slice(bytes);
        if buffer.len() > 2 * CAPTURE_BYTES {
            let excess = buffer.len() - CAPTURE_BYTES;
            buffer.drain(..excess);
        }
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_of_long_output() {
        let pipe = TailPipe::default();
        for i in 0..10_000 {
            pipe.push(format!("line {i}\n").as_bytes());
        }
        let text = pipe.text();
        assert!(text.ends_with("line 9999"));
        assert!(text.len() <= CAPTURE_BYTES);
    }
}
