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

use crate::buf::{IoBuf, IoBufMut, Slice};

use crate::backend::Task;
use crate::scheduler::{Bound, Scheduler};
use crate::{Error, Rejected, Result};

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
        &self,
        buf: B,
        handler: F,
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
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + Send + 'static;
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
/// `Shutdown`, ...). A context destroyed with the call still queued drops
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
        &self,
        value: T,
        run: fn(T),
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
    sched: &Scheduler<T, K>,
    value: V,
    run: fn(V),
) -> core::result::Result<(), Rejected<V>> {
    sched
        .post_runnable(Bound { value, run })
        .map_err(|r| Rejected {
            error: r.error,
            handler: r.handler.value,
        })
}

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
    stream: &S,
    buf: B,
    cond: Completion,
    handler: F,
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
struct ReadOp<S, B, F> {
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

/// Reads into `buf` until its initialised bytes contain `delim` (Asio's
/// `async_read_until` with a string delimiter).
///
/// `handler` gets `Ok(n)`, `n` being the index just past the first
/// occurrence of `delim` in the buffer. Bytes after it may already be in
/// the buffer; they stay there for the next call, as in Asio. The search
/// covers the bytes already in the buffer when this is called; if they
/// hold the delimiter, nothing is read and `Ok(n)` comes through [`Post`].
/// Errors, with the buffer and every byte read so far in it:
/// - `Err(NotFound)`: the buffer filled up without the delimiter;
/// - `Err(Eof)`: the peer closed first;
/// - any error of the stream's read, or `PoolFull(Ops)` when a later step
///   cannot be queued.
///
/// Each search resumes where the last one stopped, less `delim.len() - 1`
/// bytes, so a delimiter split across reads is found without rescanning
/// (Asio's partial-match search). Each read asks for
/// `min(spare, MAX_TRANSFER_SIZE)` bytes: Asio's `read_size_helper`,
/// `min(max(512, capacity - size), min(65536, max_size - size))`, with
/// `capacity == max_size` for a fixed-capacity buffer.
///
/// An empty `delim` is found at once, at offset 0. The handler never runs
/// inside this call; if the first step cannot be queued, buffer and
/// handler come back in the `Err`.
pub fn async_read_until<S, B, F>(
    stream: &S,
    buf: B,
    delim: &'static [u8],
    handler: F,
) -> core::result::Result<(), Rejected<(B, F)>>
where
    S: AsyncReadSome + Post,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    let mut op = ReadUntilOp {
        buf,
        stream: stream.clone(),
        handler,
        delim,
        search: 0,
    };
    let started = match op.outcome() {
        Some(res) => stream
            .post_handler((op, res), |(op, res)| op.finish(res))
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.0,
            }),
        None => op.issue(),
    };
    started.map_err(|r| Rejected {
        error: r.error,
        handler: (r.handler.buf, r.handler.handler),
    })
}

/// [`async_read_until`] with a one-byte delimiter (Asio's `char` overload).
pub fn async_read_until_byte<S, B, F>(
    stream: &S,
    buf: B,
    delim: u8,
    handler: F,
) -> core::result::Result<(), Rejected<(B, F)>>
where
    S: AsyncReadSome + Post,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    let delim = core::slice::from_ref(&BYTE_VALUES[delim as usize]);
    async_read_until(stream, buf, delim, handler)
}

/// Every byte value at its own index, so that any one-byte delimiter is a
/// `'static` slice.
static BYTE_VALUES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// [`async_read_until`]'s state machine, and the buffer each step reads
/// into.
struct ReadUntilOp<S, B, F> {
    buf: B,
    stream: S,
    handler: F,
    delim: &'static [u8],
    /// Where the next search starts: no match begins before it.
    search: usize,
}

impl<S, B, F> ReadUntilOp<S, B, F>
where
    S: AsyncReadSome,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    /// Searches the bytes not yet searched. `Some` ends the operation
    /// (found, or full); `None` asks for another read.
    fn outcome(&mut self) -> Option<Result<usize>> {
        let hay = self.buf.as_slice();
        let start = self.search.min(hay.len());
        if let Some(i) = find(&hay[start..], self.delim) {
            return Some(Ok(start + i + self.delim.len()));
        }
        // A match not yet whole can start no earlier than the last
        // `delim.len() - 1` bytes.
        let tail = self.delim.len().saturating_sub(1);
        self.search = hay.len().saturating_sub(tail).max(start);
        if self.buf.spare() == 0 {
            return Some(Err(Error::NotFound));
        }
        None
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

    /// Each read's completion: Asio's `read_until_delim_string_op` past
    /// `default:`.
    fn on_read(res: Result<usize>, mut op: Self) {
        match res {
            // No step asks for 0 bytes, so 0 means the peer closed.
            Ok(0) => return op.finish(Err(Error::Eof)),
            Ok(_) => {}
            Err(e) => return op.finish(Err(e)),
        }
        match op.outcome() {
            Some(res) => op.finish(res),
            None => {
                if let Err(r) = op.issue() {
                    r.handler.finish(Err(r.error));
                }
            }
        }
    }

    fn finish(self, res: Result<usize>) {
        (self.handler)(res, self.buf)
    }
}

/// Index of the first `needle` in `hay`; an empty needle is at 0.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [] => Some(0),
        [b] => hay.iter().position(|x| x == b),
        _ => hay.windows(needle.len()).position(|w| w == needle),
    }
}

// SAFETY: the bytes are `buf`'s, which keeps them valid and in place while
// it, and so this struct, moves.
unsafe impl<S: Send + 'static, B: IoBufMut, F: Send + 'static> IoBuf for ReadUntilOp<S, B, F> {
    fn read_ptr(&self) -> *const u8 {
        self.buf.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.buf.bytes_len()
    }
}

// SAFETY: the room is a prefix of `buf`'s (`spare()` never exceeds
// `buf.spare()`), so `buf`'s guarantees cover it.
unsafe impl<S: Send + 'static, B: IoBufMut, F: Send + 'static> IoBufMut for ReadUntilOp<S, B, F> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.buf.write_ptr()
    }
    fn spare(&self) -> usize {
        self.buf.spare().min(MAX_TRANSFER_SIZE)
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
    stream: &S,
    buf: B,
    handler: F,
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
struct WriteOp<S, B, F> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NoTask;
    use crate::pool::OpSlot;
    use crate::scheduler::HandlerOp;
    use crate::StaticArray;
    use crate::Storage;
    use pinion_sync::SpinKit;
    use std::boxed::Box;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// One scripted result of `read_some`.
    #[derive(Debug)]
    enum Step {
        /// Bytes the peer sent; a read takes as many as fit, the rest
        /// stays for the next read.
        Data(&'static [u8]),
        Eof,
        Err(Error),
    }

    type Job = Box<dyn FnOnce() + Send>;

    #[derive(Default)]
    struct Script {
        reads: VecDeque<Step>,
        /// `spare()` of every accepted `read_some`.
        read_spares: Vec<usize>,
        written: Vec<u8>,
        /// `bytes_len()` of every accepted `write_some`.
        write_lens: Vec<usize>,
        /// Most bytes each write takes, cycling; empty: no limit.
        write_max: Vec<usize>,
        /// The write with this index (0-based) fails with this error.
        write_error: Option<(usize, Error)>,
        /// Refuse the read/write issued after this many accepted ones.
        refuse_read_at: Option<usize>,
        refuse_write_at: Option<usize>,
        refuse_posts: bool,
        posts: usize,
        /// Completions, run by `drive` (never inline).
        queue: VecDeque<Job>,
    }

    /// An in-memory stream following a script; its completions are queued
    /// and run by `drive`, like a context's run loop.
    #[derive(Clone, Default)]
    struct ScriptStream(Arc<Mutex<Script>>);

    impl ScriptStream {
        fn with_reads(reads: impl IntoIterator<Item = Step>) -> Self {
            let s = ScriptStream::default();
            s.0.lock().unwrap().reads.extend(reads);
            s
        }
        fn script(&self) -> std::sync::MutexGuard<'_, Script> {
            self.0.lock().unwrap()
        }
        /// Runs queued completions until none is left; returns how many.
        fn drive(&self) -> usize {
            let mut ran = 0;
            loop {
                let job = self.script().queue.pop_front();
                match job {
                    Some(job) => job(),
                    None => return ran,
                }
                ran += 1;
                assert!(ran < 1_000_000, "runaway operation");
            }
        }
        fn queued(&self) -> usize {
            self.script().queue.len()
        }
    }

    /// Copies `src` into `buf`'s room and marks it initialised.
    fn fill<B: IoBufMut>(buf: &mut B, src: &[u8]) {
        assert!(src.len() <= buf.spare());
        // SAFETY: `src.len() <= spare()` bytes are written at write_ptr,
        // then exactly those are marked initialised.
        unsafe {
            buf.write_ptr()
                .copy_from_nonoverlapping(src.as_ptr(), src.len());
            buf.advance(src.len());
        }
    }

    impl AsyncReadSome for ScriptStream {
        fn async_read_some<B, F>(
            &self,
            mut buf: B,
            handler: F,
        ) -> core::result::Result<(), Rejected<(B, F)>>
        where
            B: IoBufMut,
            F: FnOnce(Result<usize>, B) + Send + 'static,
        {
            let mut s = self.script();
            if s.refuse_read_at == Some(s.read_spares.len()) {
                return Err(Rejected {
                    error: Error::PoolFull(crate::Pool::Ops),
                    handler: (buf, handler),
                });
            }
            let spare = buf.spare();
            assert!(spare > 0, "composed operations never ask for 0 bytes");
            s.read_spares.push(spare);
            let res = match s.reads.pop_front().expect("unscripted read_some") {
                Step::Data(d) => {
                    let n = d.len().min(spare);
                    fill(&mut buf, &d[..n]);
                    if n < d.len() {
                        s.reads.push_front(Step::Data(&d[n..]));
                    }
                    Ok(n)
                }
                Step::Eof => Err(Error::Eof),
                Step::Err(e) => Err(e),
            };
            s.queue.push_back(Box::new(move || handler(res, buf)));
            Ok(())
        }
    }

    impl AsyncWriteSome for ScriptStream {
        fn async_write_some<B, F>(
            &self,
            buf: B,
            handler: F,
        ) -> core::result::Result<(), Rejected<(B, F)>>
        where
            B: IoBuf,
            F: FnOnce(Result<usize>, B) + Send + 'static,
        {
            let mut s = self.script();
            let call = s.write_lens.len();
            if s.refuse_write_at == Some(call) {
                return Err(Rejected {
                    error: Error::PoolFull(crate::Pool::Ops),
                    handler: (buf, handler),
                });
            }
            let len = buf.bytes_len();
            assert!(len > 0, "composed operations never write 0 bytes");
            s.write_lens.push(len);
            let res = match s.write_error {
                Some((at, e)) if at == call => Err(e),
                _ => {
                    let max = match s.write_max.len() {
                        0 => usize::MAX,
                        k => s.write_max[call % k],
                    };
                    let n = len.min(max);
                    s.written.extend_from_slice(&buf.as_slice()[..n]);
                    Ok(n)
                }
            };
            s.queue.push_back(Box::new(move || handler(res, buf)));
            Ok(())
        }
    }

    impl Post for ScriptStream {
        fn post_handler<T: Send + 'static>(
            &self,
            value: T,
            run: fn(T),
        ) -> core::result::Result<(), Rejected<T>> {
            let mut s = self.script();
            if s.refuse_posts {
                return Err(Rejected {
                    error: Error::PoolFull(crate::Pool::Ops),
                    handler: value,
                });
            }
            s.posts += 1;
            s.queue.push_back(Box::new(move || run(value)));
            Ok(())
        }
    }

    /// A fixed-capacity read buffer (works without the `alloc` feature).
    struct TestBuf {
        v: Vec<u8>,
        cap: usize,
    }

    impl TestBuf {
        fn new(cap: usize) -> Self {
            Self::with(b"", cap)
        }
        fn with(init: &[u8], cap: usize) -> Self {
            let mut v = Vec::with_capacity(cap);
            v.extend_from_slice(init);
            TestBuf { v, cap }
        }
    }

    // SAFETY: a Vec's heap block does not move when the Vec moves.
    unsafe impl IoBuf for TestBuf {
        fn read_ptr(&self) -> *const u8 {
            self.v.as_ptr()
        }
        fn bytes_len(&self) -> usize {
            self.v.len()
        }
    }

    // SAFETY: the room is the Vec's spare capacity, up to `cap`.
    unsafe impl IoBufMut for TestBuf {
        fn write_ptr(&mut self) -> *mut u8 {
            self.v.spare_capacity_mut().as_mut_ptr().cast()
        }
        fn spare(&self) -> usize {
            self.cap - self.v.len()
        }
        unsafe fn advance(&mut self, n: usize) {
            assert!(n <= self.spare());
            // SAFETY: the caller wrote `n` bytes of spare capacity.
            unsafe { self.v.set_len(self.v.len() + n) }
        }
        fn clear(&mut self) {
            self.v.clear()
        }
    }

    type Out<B> = Arc<Mutex<Option<(Result<usize>, B)>>>;

    /// A handler that stores what it is given.
    fn catcher<B: Send + 'static>() -> (Out<B>, impl FnOnce(Result<usize>, B) + Send + 'static) {
        let out: Out<B> = Arc::new(Mutex::new(None));
        let o = out.clone();
        (out, move |res, buf| *o.lock().unwrap() = Some((res, buf)))
    }

    /// Starts an operation and checks its handler did not run inline, then
    /// drives the stream to the end and returns what the handler got.
    fn run_op<B: Send + 'static>(
        s: &ScriptStream,
        start: impl FnOnce(
            Box<dyn FnOnce(Result<usize>, B) + Send>,
        ) -> core::result::Result<
            (),
            Rejected<(B, Box<dyn FnOnce(Result<usize>, B) + Send>)>,
        >,
    ) -> (Result<usize>, B) {
        let (out, h) = catcher::<B>();
        start(Box::new(h)).expect("operation refused at initiation");
        assert!(out.lock().unwrap().is_none(), "handler ran inline");
        s.drive();
        let got = out.lock().unwrap().take();
        got.expect("handler never ran")
    }

    fn read_until(
        s: &ScriptStream,
        buf: TestBuf,
        delim: &'static [u8],
    ) -> (Result<usize>, Vec<u8>) {
        let (r, b) = run_op(s, |h| async_read_until(s, buf, delim, h));
        (r, b.v)
    }

    fn read(s: &ScriptStream, buf: TestBuf, cond: Completion) -> (Result<usize>, Vec<u8>) {
        let (r, b) = run_op(s, |h| async_read(s, buf, cond, h));
        (r, b.v)
    }

    // ---- read_until ------------------------------------------------------

    /// `msg` split into two reads at every position finds the first
    /// delimiter, with no more reads than needed.
    fn split_everywhere(msg: &'static [u8], delim: &'static [u8]) {
        let end = find(msg, delim).unwrap() + delim.len();
        for p in 1..msg.len() {
            let s = ScriptStream::with_reads([Step::Data(&msg[..p]), Step::Data(&msg[p..])]);
            let (r, buf) = read_until(&s, TestBuf::new(64), delim);
            assert_eq!(r, Ok(end), "split at {p}");
            let reads = if p >= end { 1 } else { 2 };
            let got = if p >= end { p } else { msg.len() };
            assert_eq!(
                buf,
                &msg[..got],
                "split at {p}: bytes after the delimiter stay"
            );
            assert_eq!(s.script().read_spares.len(), reads, "split at {p}");
        }
    }

    #[test]
    fn read_until_crlf_split_at_every_position() {
        split_everywhere(b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n");
        split_everywhere(b"a\r\r\rb\r\nc", b"\r\n");
    }

    #[test]
    fn read_until_four_byte_delim_split_at_every_position() {
        split_everywhere(b"head\r\n\r\nbody", b"\r\n\r\n");
        // Overlapping partial matches: "abab" then "abac".
        split_everywhere(b"xabababacyy", b"abac");
    }

    #[test]
    fn read_until_one_byte_reads() {
        let msg = b"key: value\r\n\r\nrest";
        let s = ScriptStream::with_reads(msg.chunks(1).map(Step::Data));
        let (r, buf) = read_until(&s, TestBuf::new(64), b"\r\n\r\n");
        assert_eq!(r, Ok(14));
        assert_eq!(buf, &msg[..14]);
        assert_eq!(s.script().reads.len(), 4, "nothing read past the delimiter");
    }

    #[test]
    fn read_until_byte_finds_newline() {
        let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"c\nd")]);
        let (r, b) = run_op(&s, |h| {
            async_read_until_byte(&s, TestBuf::new(16), b'\n', h)
        });
        assert_eq!(r, Ok(4));
        assert_eq!(b.v, b"abc\nd");
    }

    #[test]
    fn read_until_delim_already_in_buffer_completes_via_post() {
        let s = ScriptStream::default(); // any read would panic
        let (r, buf) = read_until(&s, TestBuf::with(b"one\r\ntwo\r\n", 32), b"\r\n");
        assert_eq!(r, Ok(5));
        assert_eq!(buf, b"one\r\ntwo\r\n");
        assert_eq!(s.script().posts, 1);
        assert!(s.script().read_spares.is_empty());
    }

    #[test]
    fn read_until_searches_bytes_already_in_buffer_then_reads() {
        // "\r" already there, "\n" arrives: found across the old/new border.
        let s = ScriptStream::with_reads([Step::Data(b"\nmore")]);
        let (r, buf) = read_until(&s, TestBuf::with(b"line\r", 32), b"\r\n");
        assert_eq!(r, Ok(6));
        assert_eq!(buf, b"line\r\nmore");
        assert_eq!(s.script().posts, 0);
    }

    #[test]
    fn read_until_not_found_at_buffer_limit() {
        let s = ScriptStream::with_reads([Step::Data(b"abcde"), Step::Data(b"fghij\n")]);
        let (r, buf) = read_until(&s, TestBuf::new(8), b"\n");
        assert_eq!(r, Err(Error::NotFound));
        assert_eq!(buf, b"abcdefgh");
        assert_eq!(s.script().read_spares, [8, 3]);
    }

    #[test]
    fn read_until_not_found_in_full_buffer_completes_via_post() {
        let s = ScriptStream::default();
        let (r, buf) = read_until(&s, TestBuf::with(b"abcd", 4), b"\n");
        assert_eq!(r, Err(Error::NotFound));
        assert_eq!(buf, b"abcd");
        assert_eq!(s.script().posts, 1);
    }

    #[test]
    fn read_until_eof_before_delimiter_keeps_partial_bytes() {
        let s = ScriptStream::with_reads([Step::Data(b"abc\r"), Step::Eof]);
        let (r, buf) = read_until(&s, TestBuf::new(32), b"\r\n");
        assert_eq!(r, Err(Error::Eof));
        assert_eq!(buf, b"abc\r");
    }

    #[test]
    fn read_until_stream_error_passes_through() {
        let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Err(Error::ConnectionReset)]);
        let (r, buf) = read_until(&s, TestBuf::new(32), b"\n");
        assert_eq!(r, Err(Error::ConnectionReset));
        assert_eq!(buf, b"ab");
    }

    #[test]
    fn read_until_read_size_is_capped() {
        static BIG: [u8; 70_000] = [b'x'; 70_000];
        let s = ScriptStream::with_reads([Step::Data(&BIG), Step::Data(b"\n")]);
        let (r, buf) = read_until(&s, TestBuf::new(70_010), b"\n");
        assert_eq!(r, Ok(70_001));
        assert_eq!(buf.len(), 70_001);
        assert_eq!(s.script().read_spares, [65_536, 70_010 - 65_536, 10]);
    }

    #[test]
    fn read_until_empty_delimiter_is_found_at_once() {
        let s = ScriptStream::default();
        let (r, _) = read_until(&s, TestBuf::new(8), b"");
        assert_eq!(r, Ok(0));
    }

    #[test]
    fn read_until_refusals_hand_everything_back() {
        // At initiation, by the stream.
        let s = ScriptStream::default();
        s.script().refuse_read_at = Some(0);
        let (out, h) = catcher::<TestBuf>();
        let e = async_read_until(&s, TestBuf::with(b"ab", 8), b"\n", h).unwrap_err();
        assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
        let (buf, h) = e.handler;
        assert_eq!(buf.v, b"ab");
        h(Ok(7), buf);
        assert_eq!(out.lock().unwrap().as_ref().unwrap().0, Ok(7));

        // At initiation, by post (delimiter already there).
        let s = ScriptStream::default();
        s.script().refuse_posts = true;
        let (_, h) = catcher::<TestBuf>();
        let e = async_read_until(&s, TestBuf::with(b"a\nb", 8), b"\n", h).unwrap_err();
        assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
        assert_eq!(e.handler.0.v, b"a\nb");

        // Mid-way: the second read is refused; the handler gets the error.
        let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"\n")]);
        s.script().refuse_read_at = Some(1);
        let (r, buf) = read_until(&s, TestBuf::new(8), b"\n");
        assert_eq!(r, Err(Error::PoolFull(crate::Pool::Ops)));
        assert_eq!(buf, b"ab");
    }

    // ---- read ------------------------------------------------------------

    #[test]
    fn read_exactly_one_byte_reads_never_over_read() {
        let s = ScriptStream::with_reads(b"0123456789".chunks(1).map(Step::Data));
        let (r, buf) = read(&s, TestBuf::new(16), Completion::Exactly(5));
        assert_eq!(r, Ok(5));
        assert_eq!(buf, b"01234");
        assert_eq!(s.script().read_spares, [5, 4, 3, 2, 1]);
        assert_eq!(s.script().reads.len(), 5, "the script's rest is unread");
    }

    #[test]
    fn read_exactly_never_asks_past_the_count() {
        let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"cdefghij")]);
        let (r, buf) = read(&s, TestBuf::new(16), Completion::Exactly(4));
        assert_eq!(r, Ok(4));
        assert_eq!(buf, b"abcd");
        assert_eq!(s.script().read_spares, [4, 2]);
        assert!(matches!(
            s.script().reads.front(),
            Some(Step::Data(b"efghij"))
        ));
    }

    #[test]
    fn read_exactly_more_than_room_ends_full() {
        let s = ScriptStream::with_reads([Step::Data(b"abcdefgh")]);
        let (r, buf) = read(&s, TestBuf::new(3), Completion::Exactly(5));
        assert_eq!(r, Ok(3));
        assert_eq!(buf, b"abc");
    }

    #[test]
    fn read_at_least() {
        let s =
            ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"cdef"), Step::Data(b"zz")]);
        let (r, buf) = read(&s, TestBuf::new(16), Completion::AtLeast(3));
        assert_eq!(r, Ok(6), "the second read may bring more than needed");
        assert_eq!(buf, b"abcdef");
        assert_eq!(s.script().read_spares, [16, 14]);
        assert_eq!(s.script().reads.len(), 1);
    }

    #[test]
    fn read_transfer_all_until_full() {
        let s = ScriptStream::with_reads([Step::Data(b"abc"), Step::Data(b"defgh")]);
        // Bytes already there are kept and not counted.
        let (r, buf) = read(&s, TestBuf::with(b"xy", 8), Completion::TransferAll);
        assert_eq!(r, Ok(6));
        assert_eq!(buf, b"xyabcdef");
        assert!(matches!(s.script().reads.front(), Some(Step::Data(b"gh"))));
    }

    #[test]
    fn read_transfer_all_caps_each_step() {
        static BIG: [u8; 70_000] = [7; 70_000];
        let s = ScriptStream::with_reads([Step::Data(&BIG)]);
        let (r, _) = read(&s, TestBuf::new(70_000), Completion::TransferAll);
        assert_eq!(r, Ok(70_000));
        assert_eq!(s.script().read_spares, [65_536, 70_000 - 65_536]);
    }

    #[test]
    fn read_eof_mid_read() {
        let s = ScriptStream::with_reads([Step::Data(b"abc"), Step::Eof]);
        let (r, buf) = read(&s, TestBuf::new(16), Completion::Exactly(6));
        assert_eq!(r, Err(Error::Eof));
        assert_eq!(buf, b"abc");
    }

    #[test]
    fn read_nothing_to_do_completes_via_post() {
        for (buf, cond) in [
            (TestBuf::new(8), Completion::Exactly(0)),
            (TestBuf::new(8), Completion::AtLeast(0)),
            (TestBuf::with(b"full", 4), Completion::TransferAll),
            (TestBuf::with(b"full", 4), Completion::Exactly(3)),
        ] {
            let s = ScriptStream::default();
            let (r, _) = read(&s, buf, cond);
            assert_eq!(r, Ok(0), "{cond:?}");
            assert_eq!(s.script().posts, 1);
        }
    }

    #[test]
    fn read_refusals_hand_everything_back() {
        let s = ScriptStream::default();
        s.script().refuse_read_at = Some(0);
        let (_, h) = catcher::<TestBuf>();
        let e = async_read(&s, TestBuf::with(b"q", 8), Completion::TransferAll, h).unwrap_err();
        assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
        assert_eq!(e.handler.0.v, b"q");

        let s = ScriptStream::default();
        s.script().refuse_posts = true;
        let (_, h) = catcher::<TestBuf>();
        let e = async_read(&s, TestBuf::new(8), Completion::Exactly(0), h).unwrap_err();
        assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));

        let s = ScriptStream::with_reads(b"abcd".chunks(1).map(Step::Data));
        s.script().refuse_read_at = Some(2);
        let (r, buf) = read(&s, TestBuf::new(8), Completion::Exactly(4));
        assert_eq!(r, Err(Error::PoolFull(crate::Pool::Ops)));
        assert_eq!(buf, b"ab");
    }

    #[test]
    fn steps_run_from_the_loop_one_at_a_time() {
        // Each completion queues exactly the next step: no nesting.
        let s = ScriptStream::with_reads(b"abc".chunks(1).map(Step::Data));
        let (out, h) = catcher::<TestBuf>();
        async_read(&s, TestBuf::new(8), Completion::Exactly(3), h).unwrap();
        for _ in 0..3 {
            assert_eq!(s.queued(), 1);
            let job = s.script().queue.pop_front().unwrap();
            job();
        }
        assert_eq!(s.queued(), 0);
        assert_eq!(out.lock().unwrap().as_ref().unwrap().0, Ok(3));
    }

    // ---- write -----------------------------------------------------------

    fn write(s: &ScriptStream, data: &'static [u8]) -> (Result<usize>, &'static [u8]) {
        run_op(s, |h| async_write(s, data, h))
    }

    #[test]
    fn write_partial_writes_complete_in_order() {
        static DATA: [u8; 300] = {
            let mut d = [0u8; 300];
            let mut i = 0;
            while i < 300 {
                d[i] = (i * 7) as u8;
                i += 1;
            }
            d
        };
        let data: &'static [u8] = &DATA;
        for max in 1..=7 {
            let s = ScriptStream::default();
            s.script().write_max = std::vec![max];
            let (r, buf) = write(&s, data);
            assert_eq!(r, Ok(300), "max {max}");
            assert!(core::ptr::eq(buf, data), "the same buffer comes back");
            assert_eq!(s.script().written, data, "max {max}");
            assert_eq!(s.script().write_lens.len(), 300usize.div_ceil(max));
        }
        // Varying sizes 1..7 in one operation.
        let s = ScriptStream::default();
        s.script().write_max = (1..=7).collect();
        let (r, _) = write(&s, data);
        assert_eq!(r, Ok(300));
        assert_eq!(s.script().written, data);
        let lens = s.script().write_lens.clone();
        assert_eq!(&lens[..3], [300, 299, 297], "each step offers the rest");
    }

    #[test]
    fn write_error_midway_returns_error_and_buffer() {
        let s = ScriptStream::default();
        s.script().write_max = std::vec![3];
        s.script().write_error = Some((2, Error::BrokenPipe));
        let (r, buf) = write(&s, b"abcdefghijkl");
        assert_eq!(r, Err(Error::BrokenPipe));
        assert_eq!(buf, b"abcdefghijkl");
        assert_eq!(s.script().written, b"abcdef");
        assert_eq!(s.script().write_lens.len(), 3, "no write after the error");
    }

    #[test]
    fn write_that_makes_no_progress_fails() {
        let s = ScriptStream::default();
        s.script().write_max = std::vec![2, 0];
        let (r, _) = write(&s, b"abcdef");
        assert_eq!(r, Err(Error::BrokenPipe));
        assert_eq!(s.script().written, b"ab");
    }

    #[test]
    fn write_empty_completes_via_post() {
        let s = ScriptStream::default();
        let (r, _) = write(&s, b"");
        assert_eq!(r, Ok(0));
        assert_eq!(s.script().posts, 1);
        assert!(s.script().write_lens.is_empty());
    }

    #[test]
    fn write_caps_each_step() {
        static BIG: [u8; 70_000] = [9; 70_000];
        let s = ScriptStream::default();
        let (r, _) = write(&s, &BIG);
        assert_eq!(r, Ok(70_000));
        assert_eq!(s.script().write_lens, [65_536, 70_000 - 65_536]);
    }

    #[test]
    fn write_refusals_hand_everything_back() {
        let s = ScriptStream::default();
        s.script().refuse_write_at = Some(0);
        let (_, h) = catcher::<&'static [u8]>();
        let e = async_write(&s, b"abc" as &'static [u8], h).unwrap_err();
        assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
        assert_eq!(e.handler.0, b"abc");

        let s = ScriptStream::default();
        s.script().write_max = std::vec![1];
        s.script().refuse_write_at = Some(1);
        let (r, buf) = write(&s, b"abc");
        assert_eq!(r, Err(Error::PoolFull(crate::Pool::Ops)));
        assert_eq!(buf, b"abc");
        assert_eq!(s.script().written, b"a");
    }

    // ---- post_value and sizes --------------------------------------------

    #[test]
    fn post_value_runs_from_the_loop_and_hands_back_when_full() {
        static SLOTS: StaticArray<OpSlot, 2> = StaticArray::new([OpSlot::EMPTY; 2]);
        let sched: Scheduler<NoTask, SpinKit> =
            Scheduler::new(NoTask, Storage::from_static(SLOTS.take().unwrap()), 1);
        let hits = Arc::new(AtomicUsize::new(0));
        let bump: fn(Arc<AtomicUsize>) = |h| {
            h.fetch_add(1, Ordering::Relaxed);
        };
        post_value(&sched, hits.clone(), bump).unwrap();
        post_value(&sched, hits.clone(), bump).unwrap();
        let e = post_value(&sched, hits.clone(), bump).unwrap_err();
        assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
        assert!(Arc::ptr_eq(&e.handler, &hits), "the value comes back");
        drop(e);
        assert_eq!(hits.load(Ordering::Relaxed), 0, "never inline");
        assert_eq!(sched.run(), 2);
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert_eq!(Arc::strong_count(&hits), 1);
        assert_eq!(sched.ops_in_use().0, 0);
    }

    #[test]
    fn post_value_dropped_unrun_when_scheduler_dies() {
        static SLOTS: StaticArray<OpSlot, 1> = StaticArray::new([OpSlot::EMPTY; 1]);
        let sched: Scheduler<NoTask, SpinKit> =
            Scheduler::new(NoTask, Storage::from_static(SLOTS.take().unwrap()), 1);
        let hits = Arc::new(AtomicUsize::new(0));
        post_value(&sched, hits.clone(), |h| {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        drop(sched);
        assert_eq!(hits.load(Ordering::Relaxed), 0);
        assert_eq!(Arc::strong_count(&hits), 1, "dropped, not leaked");
    }

    #[test]
    fn op_states_fit_a_slot_beside_a_backend_header() {
        // A 16-byte stream handle, a Vec-sized buffer, a 16-byte handler.
        type Stream = [usize; 2];
        type Buf = [usize; 3];
        type Handler = [usize; 2];
        let budget = crate::OP_SLOT_SIZE - 64;
        assert!(size_of::<ReadOp<Stream, Buf, Handler>>() <= budget);
        assert!(size_of::<ReadUntilOp<Stream, Buf, Handler>>() <= budget);
        assert!(size_of::<WriteOp<Stream, Buf, Handler>>() <= budget);
        // The posted form: header + value + fn pointer.
        assert!(size_of::<HandlerOp<Bound<ReadOp<Stream, Buf, Handler>>>>() <= crate::OP_SLOT_SIZE);
        std::println!(
            "ReadOp {} ReadUntilOp {} WriteOp {} HandlerOp<Bound<ReadOp>> {}",
            size_of::<ReadOp<Stream, Buf, Handler>>(),
            size_of::<ReadUntilOp<Stream, Buf, Handler>>(),
            size_of::<WriteOp<Stream, Buf, Handler>>(),
            size_of::<HandlerOp<Bound<ReadOp<Stream, Buf, Handler>>>>(),
        );
    }
}
