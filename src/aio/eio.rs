//! `embedded-io-async` `Read` and `Write` for the stream sockets ([`TcpStream`],
//! [`UnixStream`](crate::net::UnixStream)), so crates
//! written for that interface (rust-mqtt, reqwless, edge-net...) run on
//! pinion unchanged.
//!
//! Both are cancel-safe: a read waits for readiness and only then copies
//! what is there into the caller's slice with a non-blocking `recv`, so a
//! dropped `read` future never lets the kernel write into the slice later
//! (epoll: a readiness wait on the reactor; io_uring: `POLL_ADD`, then
//! `recv`). Writes likewise.

use embedded_io_async::{ErrorType, Read, Write};
use pinion_core::backend::{Backend, Readiness};
use pinion_core::Error;

#[cfg(doc)]
use crate::net::TcpStream;
use crate::net::{Family, StreamSocket};

impl<B: Backend, P: Family> ErrorType for StreamSocket<'_, B, P> {
    type Error = Error;
}

impl<B: Backend, P: Family> Read for StreamSocket<'_, B, P> {
    /// Some bytes (at least one), or `Ok(0)` at end of stream, or an error.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.try_read(buf) {
                Err(Error::WouldBlock) => self.ready(Readiness::Readable).await?,
                r => return r,
            }
        }
    }
}

impl<B: Backend, P: Family> Write for StreamSocket<'_, B, P> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.try_write(buf) {
                Err(Error::WouldBlock) => self.ready(Readiness::Writable).await?,
                r => return r,
            }
        }
    }

    /// Nothing is buffered in user space: bytes written are in the kernel.
    async fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}
