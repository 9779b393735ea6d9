//! Composed operations, written once over `read_some`/`write_some` for
//! every backend (Asio's `read.hpp`, `read_until.hpp`, `write.hpp`).
//!
//! A backend's stream implements [`AsyncReadSome`] and [`AsyncWriteSome`];
//! the composed operations are state machines that re-issue the primitive
//! from its own completion (the walkthrough's "tricky switch"), never
//! recursion on the stack and never an allocation: each step is one
//! operation slot, reused as the previous one completes.

use crate::buf::{IoBuf, IoBufMut};
use crate::{Rejected, Result};

/// A stream that can read some bytes into an owned buffer.
///
/// Contract for implementations: read at most `buf.spare()` bytes at
/// `buf.write_ptr()`, `advance` by the count, then call the handler once
/// with `Ok(n)` (`n > 0`), `Err(Error::Eof)` when the peer closed its side,
/// or another error; `Ok(0)` only when `spare() == 0`. The buffer always
/// comes back. A full pool hands buffer and handler back at once.
pub trait AsyncReadSome: Clone + Send + 'static {
    /// Starts a read.
    fn async_read_some<B, F>(&self, buf: B, handler: F) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<usize>, B) + Send + 'static;
}

/// A stream that can write some bytes from an owned buffer.
///
/// Contract for implementations: write at most `buf.bytes_len()` bytes
/// from `buf.read_ptr()`, then call the handler once with `Ok(n)` or the
/// error (`BrokenPipe`, `ConnectionReset`, ...), handing the buffer back.
pub trait AsyncWriteSome: Clone + Send + 'static {
    /// Starts a write.
    fn async_write_some<B, F>(&self, buf: B, handler: F) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + Send + 'static;
}
