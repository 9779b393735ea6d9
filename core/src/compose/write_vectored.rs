//! [`async_write_vectored`]: every byte of a buffer list (Asio's
//! `async_write` over a buffer sequence).

use crate::buf::{Consuming, IoBufs};
use crate::{Error, Rejected, Result};

use super::{AsyncWriteSomeVectored, Post};

/// Writes every initialised byte of every buffer of `bufs`, in order,
/// going on from where each partial gather write stopped (the next step
/// starts inside the buffer the last one ended in).
///
/// As [`async_write`](super::async_write): `handler` gets
/// `Ok(bufs.total_len())` or the first error, with the buffers either way;
/// a write that takes 0 of a non-empty rest ends with `Err(BrokenPipe)`;
/// an empty list completes with `Ok(0)` through [`Post`]; if the first
/// step cannot be queued, buffers and handler come back in the `Err`.
pub fn async_write_vectored<S, T, F>(
    stream: &S, bufs: T, handler: F,
) -> core::result::Result<(), Rejected<(T, F)>>
where
    S: AsyncWriteSomeVectored + Post,
    T: IoBufs,
    F: FnOnce(Result<usize>, T) + Send + 'static,
{
    let op = GatherOp {
        rest: Consuming::new(bufs),
        stream: stream.clone(),
        handler,
    };
    let started = if op.rest.total_len() == 0 {
        stream.post_handler(op, |op| op.finish(Ok(0)))
    } else {
        op.issue()
    };
    started.map_err(|r| Rejected {
        error: r.error,
        handler: (r.handler.rest.into_inner(), r.handler.handler),
    })
}

/// [`async_write_vectored`]'s state machine, and the buffer list each
/// step writes from: the bytes not yet written.
struct GatherOp<S, T, F> {
    rest: Consuming<T>,
    stream: S,
    handler: F,
}

impl<S, T, F> GatherOp<S, T, F>
where
    S: AsyncWriteSomeVectored,
    T: IoBufs,
    F: FnOnce(Result<usize>, T) + Send + 'static,
{
    fn issue(self) -> core::result::Result<(), Rejected<Self>> {
        let stream = self.stream.clone();
        stream
            .async_write_some_vectored(self, Self::on_write)
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.0,
            })
    }

    fn on_write(res: Result<usize>, mut op: Self) {
        match res {
            Ok(0) => return op.finish(Err(Error::BrokenPipe)),
            Ok(n) => op.rest.consume(n),
            Err(e) => return op.finish(Err(e)),
        }
        if op.rest.total_len() == 0 {
            let total = op.rest.consumed();
            op.finish(Ok(total));
        } else if let Err(r) = op.issue() {
            r.handler.finish(Err(r.error));
        }
    }

    fn finish(self, res: Result<usize>) {
        (self.handler)(res, self.rest.into_inner())
    }
}

// SAFETY: `rest`'s iovecs, which it keeps valid and in place while it,
// and so this struct, moves.
unsafe impl<S: Send + 'static, T: IoBufs, F: Send + 'static> IoBufs for GatherOp<S, T, F> {
    type IoVecs = T::IoVecs;

    fn io_vecs(&self, skip: usize) -> T::IoVecs {
        self.rest.io_vecs(skip)
    }

    fn total_len(&self) -> usize {
        self.rest.total_len()
    }
}
