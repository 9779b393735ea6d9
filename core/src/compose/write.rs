//! [`async_write`] (Asio's `write.hpp`).

use crate::buf::{IoBuf, Slice};
use crate::{Error, Rejected, Result};

use super::{AsyncWriteSome, Post, MAX_TRANSFER_SIZE};

/// Writes every initialised byte of `buf` (Asio's `async_write`), going on
/// from where each partial write stopped.
///
/// `handler` gets `Ok(buf.bytes_len())` or the first error, with the buffer
/// either way; how much went out before an error is not reported (as with
/// std's `write_all`). A write that takes 0 of a non-empty rest ends with
/// `Err(BrokenPipe)` rather than spinning. Each step offers at most
/// [`MAX_TRANSFER_SIZE`] bytes.
///
/// An empty buffer completes with `Ok(0)` through [`Post`], without
/// touching the stream. The handler never runs inside this call; if the
/// first step cannot be queued, buffer and handler come back in the `Err`.
/// A later step that cannot be queued ends the operation with that error
/// (`PoolFull(Ops)`), handed to `handler` with the buffer.
pub fn async_write<S, B, F>(
    stream: &S, buf: B, handler: F,
) -> core::result::Result<(), Rejected<(B, F)>>
where
    S: AsyncWriteSome + Post,
    B: IoBuf,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    let op = WriteOp {
        buf: Slice::new(buf, 0),
        stream: stream.clone(),
        handler,
    };
    let started = if op.buf.bytes_len() == 0 {
        stream.post_handler(op, |op| op.finish(Ok(0)))
    } else {
        op.issue()
    };
    started.map_err(|r| Rejected {
        error: r.error,
        handler: (r.handler.buf.into_inner(), r.handler.handler),
    })
}

/// [`async_write`]'s state machine, and the buffer each step writes from:
/// the bytes not yet written.
pub(super) struct WriteOp<S, B, F> {
    /// The caller's buffer from the first byte not yet written.
    buf: Slice<B>,
    stream: S,
    handler: F,
}

impl<S, B, F> WriteOp<S, B, F>
where
    S: AsyncWriteSome,
    B: IoBuf,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    /// Starts the next write, or hands the operation back. Inlined so the
    /// step is built straight into its operation slot.
    #[inline(always)]
    fn issue(self) -> core::result::Result<(), Rejected<Self>> {
        let stream = self.stream.clone();
        stream
            .async_write_some(self, Self::on_write)
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.0,
            })
    }

    /// Each write's completion: Asio's `write_op::operator()` past
    /// `default:`.
    fn on_write(res: Result<usize>, mut op: Self) {
        match res {
            // Only non-empty writes are issued: 0 is no progress at all.
            Ok(0) => return op.finish(Err(Error::BrokenPipe)),
            Ok(n) => op.buf.consume(n),
            Err(e) => return op.finish(Err(e)),
        }
        if op.buf.bytes_len() == 0 {
            let total = op.buf.begin();
            op.finish(Ok(total));
        } else if let Err(r) = op.issue() {
            r.handler.finish(Err(r.error));
        }
    }

    fn finish(self, res: Result<usize>) {
        (self.handler)(res, self.buf.into_inner())
    }
}

// SAFETY: a prefix of the slice's bytes, which `Slice<B>` keeps valid and
// in place while it, and so this struct, moves.
unsafe impl<S: Send + 'static, B: IoBuf, F: Send + 'static> IoBuf for WriteOp<S, B, F> {
    fn read_ptr(&self) -> *const u8 {
        self.buf.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.buf.bytes_len().min(MAX_TRANSFER_SIZE)
    }
}
