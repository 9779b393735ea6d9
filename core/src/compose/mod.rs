//! Composed operations, written once over `read_some`/`write_some` for
//! every backend (Asio's `read.hpp`, `read_until.hpp`, `write.hpp`).
//!
//! A backend's stream implements [`AsyncReadSome`] and [`AsyncWriteSome`];
//! the composed operations are state machines that re-issue the primitive
//! from its own completion (the walkthrough's "tricky switch"), never
//! recursion on the stack and never an allocation: each step is one
//! operation slot, reused as the previous one completes.
//!
//! - [`async_read`]: until a [`Completion`] condition holds (Asio's
//!   `async_read` with `transfer_all`, `transfer_at_least`,
//!   `transfer_exactly`);
//! - [`async_read_until`] / [`async_read_until_byte`]: until the buffer
//!   holds a delimiter;
//! - [`async_write`]: every byte, across partial writes;
//! - [`async_write_vectored`]: every byte of a buffer list (gather);
//! - [`Post`]: how an operation with nothing to transfer still completes
//!   from the run loop, never inside the call that started it; backends
//!   implement it with [`post_value`].
//!
//! # The operation is the buffer
//!
//! Whenever the stream refuses a step (a full pool), the caller's buffer
//! and handler must come back, to the caller ([`Rejected`]) or, mid-way,
//! to the handler. A closure's captures can never be taken out again, so
//! each state machine (`ReadOp`, `ReadUntilOp`, `WriteOp`, private) is a
//! plain struct that wraps the caller's buffer and implements
//! [`IoBufMut`] / [`IoBuf`] by delegation, with its room capped per step
//! (Asio's `prepare(max_size)`). The struct is handed to the primitive *as
//! its buffer*, with a zero-sized `fn` item as its handler; the primitive
//! gives it back in the completion or in the refusal.
//!
//! ```text
//!  async_read(stream, buf, cond, h)
//!    │  op = ReadOp { buf, stream, h, cond, total: 0 }
//!    ├─ nothing to do ─► stream.post_handler(op, ..) ─(run loop)─► h(Ok(0), buf)
//!    └─► stream.async_read_some(op, ReadOp::on_read)       op is the buffer
//!           │ (run loop)
//!           ▼
//!        on_read(result, op) ─ error, EOF, done ─────────────► h(result, buf)
//!           └─ more to read ─► stream.async_read_some(op, ReadOp::on_read)
//!                                 └─ refused ────────────────► h(Err(why), buf)
//! ```
//!
//! Each step is issued from the previous step's completion, which the
//! stream runs from its context's run loop, so the stack never grows with
//! the number of steps. A step's state is the buffer, a clone of the
//! stream (cloned once per step: a stream handle is a few words), the
//! handler and at most 24 bytes of counters.

use pinion_sync::SyncKit;

use crate::backend::Task;
use crate::buf::{IoBuf, IoBufMut};
use crate::scheduler::{Bound, Scheduler};
use crate::{Rejected, Result};

mod read;
mod read_until;
#[cfg(any(test, all(fuzzing, feature = "std")))]
pub(crate) mod script;
#[cfg(test)]
mod tests;
mod write;
mod write_vectored;

pub use read::{async_read, Completion};
pub use read_until::{async_read_until, async_read_until_byte, byte_delim, DelimSearch};
pub use write::async_write;
pub use write_vectored::async_write_vectored;

/// A stream that can read some bytes into an owned buffer.
///
/// Contract for implementations: read at most `buf.spare()` bytes at
/// `buf.write_ptr()`, `advance` by the count, then call the handler once
/// with `Ok(n)` (`n > 0`), `Err(Error::Eof)` when the peer closed its side,
/// or another error; `Ok(0)` only when `spare() == 0`. The buffer always
/// comes back. A full pool hands buffer and handler back at once.
pub trait AsyncReadSome: Clone + Send + 'static {
    /// Starts a read.
    fn async_read_some<B, F>(
        &self, buf: B, handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
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
    fn async_write_some<B, F>(
        &self, buf: B, handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + Send + 'static;
}

/// A stream that can write some bytes from several owned buffers at once
/// (a gather write).
///
/// Contract for implementations: write at most `bufs.total_len()` bytes
/// of the iovecs `bufs.io_vecs(0)` lists, in order, then call the handler
/// once with the count or an error. The buffers always come back; a full
/// pool hands buffers and handler back at once.
pub trait AsyncWriteSomeVectored: Clone + Send + 'static {
    /// Starts a gather write.
    fn async_write_some_vectored<T, F>(
        &self, bufs: T, handler: F,
    ) -> core::result::Result<(), Rejected<(T, F)>>
    where
        T: crate::buf::IoBufs,
        F: FnOnce(Result<usize>, T) + Send + 'static;
}

/// Most bytes one step asks of the stream: Asio's
/// `default_max_transfer_size`. Bounding a step bounds the time one
/// connection's completion holds a thread before others get theirs.
pub const MAX_TRANSFER_SIZE: usize = 65536;

/// Queues `run(value)` on the context a stream belongs to: how a composed
/// operation that has nothing to transfer still completes from the run
/// loop, never inside the call that started it.
///
/// Contract for implementations: never call `run` inline; queue it so that
/// it runs where the stream's own completions run. When it cannot be
/// queued, hand `value` back in [`Rejected`] (`PoolFull(Ops)`,
/// `BadDescriptor`, ...). A context destroyed with the call still queued drops
/// `value` without running `run`.
///
/// The argument travels apart from the function, instead of captured in a
/// closure, so that a refusal can give the caller back the buffer and
/// handler inside `value`. A stream whose context is a [`Scheduler`]
/// implements it in one line with [`post_value`]:
///
/// ```
/// use pinion_core::compose::{post_value, Post};
/// use pinion_core::backend::NoTask;
/// use pinion_core::{Rejected, Scheduler};
/// use pinion_sync::SpinKit;
///
/// #[derive(Clone)]
/// struct MyStream {
///     sched: &'static Scheduler<NoTask, SpinKit>,
///     // ... the descriptor
/// }
///
/// impl Post for MyStream {
///     fn post_handler<T: Send + 'static>(
///         &self,
///         value: T,
///         run: fn(T),
///     ) -> Result<(), Rejected<T>> {
///         post_value(self.sched, value, run)
///     }
/// }
/// ```
pub trait Post {
    /// Queues `run(value)`; hands `value` back if it cannot.
    fn post_handler<T: Send + 'static>(
        &self, value: T, run: fn(T),
    ) -> core::result::Result<(), Rejected<T>>;
}

/// Queues `run(value)` on `sched` as new work, like [`Scheduler::post`],
/// but hands `value` back (with `PoolFull(Ops)`) when no operation slot is
/// free: the [`Post`] implementation for a stream on a scheduler.
///
/// `value`, `run` and the operation header must fit one operation slot
/// (checked at compile time). If the scheduler is destroyed first, `value`
/// is dropped without running `run`.
pub fn post_value<T: Task, K: SyncKit, V: Send + 'static>(
    sched: &Scheduler<T, K>, value: V, run: fn(V),
) -> core::result::Result<(), Rejected<V>> {
    sched
        .post_runnable(Bound { value, run })
        .map_err(|r| Rejected {
            error: r.error,
            handler: r.handler.value,
        })
}
