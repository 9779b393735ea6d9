//! [`async_read`] with its completion conditions (Asio's `read.hpp`).

use crate::buf::{IoBuf, IoBufMut};
use crate::{Error, Rejected, Result};

use super::{AsyncReadSome, Post, MAX_TRANSFER_SIZE};

/// When [`async_read`] is done (Asio's completion conditions). Every
/// condition also ends the operation when the buffer is full, as in Asio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Until the buffer is full (`spare() == 0`).
    TransferAll,
    /// Until this operation has read at least `n` bytes. Each step asks
    /// for as much as fits (up to [`MAX_TRANSFER_SIZE`]), so it may read
    /// more than `n`.
    AtLeast(usize),
    /// Until this operation has read exactly `n` bytes: no step asks for
    /// more than what is left, so nothing past the `n`th byte is read. A
    /// buffer with room for fewer than `n` ends full, with `Ok(room)`, as
    /// Asio's `transfer_exactly` does.
    Exactly(usize),
}

impl Completion {
    /// Most bytes this operation may still read after `total`.
    fn remaining(self, total: usize) -> usize {
        match self {
            Completion::Exactly(n) => n.saturating_sub(total),
            _ => usize::MAX,
        }
    }

    /// `true` once `total` bytes satisfy the condition.
    fn met(self, total: usize) -> bool {
        match self {
            Completion::TransferAll => false,
            Completion::AtLeast(n) | Completion::Exactly(n) => total >= n,
        }
    }
}

/// Reads into `buf` until `cond` holds or the buffer is full (Asio's
/// `async_read`).
///
/// `handler` gets `Ok(n)`, the bytes this operation read, or the first
/// error: `Err(Eof)` when the peer closed first. The bytes read stay in the
/// buffer, which always comes back. Each step asks for at most
/// `min(spare, MAX_TRANSFER_SIZE)` bytes, and `Exactly` never for more than
/// it still needs.
///
/// When there is nothing to read (the condition already holds, e.g.
/// `Exactly(0)`, or the buffer is full) the handler gets `Ok(0)` through
/// [`Post`], without touching the stream. The handler never runs inside
/// this call; if the first step cannot be queued, buffer and handler come
/// back in the `Err`. A later step that cannot be queued ends the operation
/// with that error (`PoolFull(Ops)`), handed to `handler` with the buffer.
pub fn async_read<S, B, F>(
    stream: &S, buf: B, cond: Completion, handler: F,
) -> core::result::Result<(), Rejected<(B, F)>>
where
    S: AsyncReadSome + Post,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    let op = ReadOp {
        buf,
        stream: stream.clone(),
        handler,
        cond,
        total: 0,
    };
    let started = if op.done() {
        stream.post_handler(op, |op| op.finish(Ok(0)))
    } else {
        op.issue()
    };
    started.map_err(|r| Rejected {
        error: r.error,
        handler: (r.handler.buf, r.handler.handler),
    })
}

/// [`async_read`]'s state machine, and the buffer each step reads into.
pub(super) struct ReadOp<S, B, F> {
    buf: B,
    stream: S,
    handler: F,
    cond: Completion,
    /// Bytes read by this operation so far.
    total: usize,
}

impl<S, B, F> ReadOp<S, B, F>
where
    S: AsyncReadSome,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    fn done(&self) -> bool {
        self.buf.spare() == 0 || self.cond.met(self.total)
    }

    /// Starts the next read, or hands the operation back.
    fn issue(self) -> core::result::Result<(), Rejected<Self>> {
        let stream = self.stream.clone();
        stream
            .async_read_some(self, Self::on_read)
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.0,
            })
    }

    /// Each read's completion: Asio's `read_op::operator()` past `default:`.
    fn on_read(res: Result<usize>, mut op: Self) {
        match res {
            // No step asks for 0 bytes, so 0 means the peer closed.
            Ok(0) => return op.finish(Err(Error::Eof)),
            Ok(n) => op.total += n,
            Err(e) => return op.finish(Err(e)),
        }
        if op.done() {
            let total = op.total;
            op.finish(Ok(total));
        } else if let Err(r) = op.issue() {
            r.handler.finish(Err(r.error));
        }
    }

    fn finish(self, res: Result<usize>) {
        (self.handler)(res, self.buf)
    }
}

// SAFETY: the bytes are `buf`'s, which keeps them valid and in place while
// it, and so this struct, moves.
unsafe impl<S: Send + 'static, B: IoBufMut, F: Send + 'static> IoBuf for ReadOp<S, B, F> {
    fn read_ptr(&self) -> *const u8 {
        self.buf.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.buf.bytes_len()
    }
}

// SAFETY: the room is a prefix of `buf`'s (`spare()` never exceeds
// `buf.spare()`), so `buf`'s guarantees cover it.
unsafe impl<S: Send + 'static, B: IoBufMut, F: Send + 'static> IoBufMut for ReadOp<S, B, F> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.buf.write_ptr()
    }
    fn spare(&self) -> usize {
        self.buf
            .spare()
            .min(self.cond.remaining(self.total))
            .min(MAX_TRANSFER_SIZE)
    }
    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        // SAFETY: `n <= self.spare() <= self.buf.spare()` and those bytes
        // were written, per this function's contract.
        unsafe { self.buf.advance(n) }
    }
    fn clear(&mut self) {
        self.buf.clear()
    }
}
