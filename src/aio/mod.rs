//! async/await over the same operations the callback API starts.
//!
//! Every I/O future starts one backend operation the first time it is
//! polled. The future owns its buffer until it starts the operation and
//! gets it back in the output, as the callback API does: results are
//! `(Result<usize>, Buf)`.
//!
//! Where the result goes depends on who polls the future:
//! - **A task of the same context** (the usual case): the result is
//!   written into the future itself, which is pinned, and the completion
//!   polls the task at once when it is idle (`pinion_core::task::io`). No
//!   operation slot besides the operation's own, no lock, no trip through
//!   the queue.
//! - **Anything else** (`block_on`, another executor, a combinator with
//!   wakers of its own, a task with two operations of this kind in flight
//!   already): the result meets the future at a `rendezvous` in an
//!   operation slot of the context, and the waker is woken.
//!
//! The futures are `!Unpin`: `.await` pins them; to poll one by hand or
//! give it to a combinator that needs `Unpin`, pin it (`core::pin::pin!`).
//!
//! **Dropping a future cancels its operation** (that operation alone, not
//! the others on the same socket). What the kernel may still write into
//! stays with the operation until its completion arrives; then the
//! buffer is dropped, which gives it back to its owner or pool. A read
//! that had already completed when its future was dropped loses its bytes
//! (as with tokio-uring and monoio): these futures are not cancel-safe.
//! The `embedded-io-async` streams are (they wait for readiness first).

use core::future::Future;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::task::{Context, Poll};

use pinion_core::backend::{At, Backend, Handler, Here, Key, OpHooks, OpId, Sched};
use pinion_core::task::io::{IoSlot, TaskLink};
use pinion_core::Error;

use crate::context::IoContext;

mod net;
pub(crate) mod rendezvous;
mod time;
mod vectored;

pub use net::{
    AcceptOne, ConnectTo, ReadSome, RecvOne, RecvOnly, SendConnected, SendOne, WaitFor, WriteSome,
};
pub use pinion_core::backend::Readiness;

pub use net::{Accept, Connect, Read, Ready, Recv, RecvFrom, SendDatagram, SendTo, Write};
pub use vectored::{
    PooledOne, PooledRead, ReadPooled, ReadSomeVectored, ReadVectored, WriteSomeVectored,
    WriteVectored,
};
#[cfg(feature = "embedded-io")]
mod eio;
pub use time::{sleep, sleep_until, timeout, Deadline, Interval, Sleep, Timeout, TimeoutIn};

pub(crate) use rendezvous::FromValue;
use rendezvous::{CellHandler, Looked, Waiting};

/// A refused start: the reason, the start itself and the handler, handed
/// back so nothing is lost.
pub type Refusal<'c, B, S> = (Error, S, Waiter<B, <S as Start<'c, B>>::Value>);

/// One kind of operation a future can start (only this crate's futures
/// start them).
pub trait Start<'c, B: Backend>: Sized {
    /// What the operation's handler delivers to the future.
    type Value: Send;
    /// What the future gives.
    type Output;

    /// Starts the operation with `h` as its handler; on refusal, hands
    /// everything back with the reason.
    fn start(self, at: At<'_, B>, h: Waiter<B, Self::Value>) -> Result<(), Refusal<'c, B, Self>>;

    /// Whether [`now`](Self::now) may complete the operation.
    const NOW: bool = false;

    /// Performs the operation at once if the backend can without starting
    /// it ([`Backend::write_now`]); else hands the arguments back.
    #[inline(always)]
    fn now(self, _at: At<'_, B>) -> Result<Self::Value, Self> {
        Err(self)
    }

    /// The output of a refused start (the buffer comes back).
    fn refused(self, error: Error) -> Self::Output;

    /// The output from the handler's value.
    fn output(ctx: &'c IoContext<B>, value: Self::Value) -> Self::Output;

    /// The future is dropped before giving its output (after any cancel).
    fn dropped(_ctx: &'c IoContext<B>, _key: Key) {}
}

/// The handler of an operation a future awaits: the link into the future
/// itself (a task of the context polls it), or a rendezvous slot.
pub enum Waiter<B: Backend, T> {
    /// Delivers into the future and polls its task.
    Task(TaskLink<T>),
    /// Delivers at a rendezvous and wakes the waker.
    Cell(CellHandler<B, T>),
}

impl<B: Backend, T> OpHooks for Waiter<B, T> {
    #[inline(always)]
    fn bind(&mut self, op: OpId) {
        match self {
            Waiter::Task(l) => l.bind(op),
            Waiter::Cell(c) => c.bind(op),
        }
    }

    #[inline(always)]
    fn completing(&self) {
        match self {
            Waiter::Task(l) => l.completing(),
            Waiter::Cell(c) => c.completing(),
        }
    }
}

impl<B: Backend, V: Send, T: FromValue<B, V> + Send> Handler<B, V> for Waiter<B, T> {
    #[inline(always)]
    fn call(self, sched: &Sched<B>, value: V) {
        let value = T::from_value(sched, value);
        match self {
            // SAFETY: backends call handlers from a completion on a run
            // thread of `sched`, which the future's context owns (the
            // link was armed for its scheduler).
            Waiter::Task(l) => unsafe { l.deliver(value, sched.here()) },
            Waiter::Cell(c) => c.deliver(sched, value),
        }
    }

    #[inline(always)]
    fn call_here(self, sched: &Sched<B>, here: Option<Here<'_>>, value: V) {
        let value = T::from_value(sched, value);
        match self {
            // SAFETY: as in `call`; `here` is the completion's own, from
            // `sched` (the trait's contract).
            Waiter::Task(l) => unsafe { l.deliver(value, here) },
            Waiter::Cell(c) => c.deliver(sched, value),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not started: the slot holds the arguments.
    Idle,
    /// Started, the result comes into `slot`.
    Task,
    /// Started, the result comes to the rendezvous in `cell`.
    Cell,
    /// The output was given (or the start refused).
    Done,
}

/// A future of one operation on the descriptor `key`.
#[must_use = "futures do nothing unless awaited"]
pub struct Op<'c, B: Backend, S: Start<'c, B>> {
    ctx: &'c IoContext<B>,
    key: Key,
    mode: Mode,
    /// The arguments while `Idle`; armed, and then the result, in `Task`
    /// mode. Pinned there.
    slot: IoSlot<S::Value, S>,
    /// The rendezvous in `Cell` mode.
    cell: Option<Waiting<S::Value>>,
    _pin: PhantomPinned,
}

impl<'c, B: Backend, S: Start<'c, B>> Op<'c, B, S> {
    #[inline(always)]
    pub(crate) fn new(ctx: &'c IoContext<B>, key: Key, start: S) -> Self {
        Op {
            ctx,
            key,
            mode: Mode::Idle,
            slot: IoSlot::new(start),
            cell: None,
            _pin: PhantomPinned,
        }
    }

    /// Starts the operation (first poll).
    #[inline(always)]
    fn begin(&mut self, cx: &mut Context<'_>) -> Poll<S::Output> {
        let sched = self.ctx.sched();
        let at = At {
            sched,
            key: self.key,
        };
        self.mode = Mode::Done;
        // SAFETY: `Idle`: the slot holds the arguments; taken once (the
        // mode moved on).
        let mut args = unsafe { self.slot.take_args() };
        // Done at once if the backend can (epoll: the socket is ready), as
        // long as this turn has budget left for it.
        if S::NOW && B::COMPLETES_NOW && sched.here().is_some_and(|h| h.consume_budget()) {
            match args.now(at) {
                Ok(v) => return Poll::Ready(S::output(self.ctx, v)),
                Err(a) => args = a,
            }
        }
        // SAFETY: the slot lives in this pinned future, which abandons it
        // when dropped; never armed before (`Idle`), arguments taken.
        if let Some(link) = unsafe { self.slot.arm(cx.waker(), sched.owner()) } {
            return match args.start(at, Waiter::Task(link)) {
                Ok(()) => {
                    self.mode = Mode::Task;
                    Poll::Pending
                }
                Err((e, args, h)) => {
                    if let Waiter::Task(l) = h {
                        l.refused();
                    }
                    Poll::Ready(args.refused(e))
                }
            };
        }
        self.begin_cell(args, at, cx)
    }

    /// Starts the operation with a rendezvous (the poller is not a task of
    /// this context, or its task has no entry free).
    #[inline(never)]
    fn begin_cell(&mut self, args: S, at: At<'_, B>, cx: &mut Context<'_>) -> Poll<S::Output> {
        let (w, h) = match Waiting::new(at.sched, cx.waker()) {
            Ok(pair) => pair,
            Err(e) => return Poll::Ready(args.refused(e)),
        };
        match args.start(at, Waiter::Cell(h)) {
            Ok(()) => {
                self.cell = Some(w);
                self.mode = Mode::Cell;
                Poll::Pending
            }
            Err((e, args, h)) => {
                match h {
                    Waiter::Cell(h) => w.refused(h, at.sched),
                    Waiter::Task(_) => unreachable!(),
                }
                Poll::Ready(args.refused(e))
            }
        }
    }
}

impl<'c, B: Backend, S: Start<'c, B>> Future for Op<'c, B, S> {
    type Output = S::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S::Output> {
        // SAFETY: nothing is moved out of the pinned future; `slot` stays
        // where it is.
        let this = unsafe { self.get_unchecked_mut() };
        match this.mode {
            Mode::Task => {
                // SAFETY: armed, result not taken (`Task`).
                let v = core::task::ready!(unsafe { this.slot.take(cx.waker()) });
                this.mode = Mode::Done;
                Poll::Ready(S::output(this.ctx, v))
            }
            Mode::Idle => this.begin(cx),
            Mode::Cell => {
                let w = this.cell.as_mut().expect("a rendezvous");
                match w.look(cx.waker()) {
                    Looked::Pending => Poll::Pending,
                    Looked::Ready(v) => {
                        this.mode = Mode::Done;
                        if let Some(w) = this.cell.take() {
                            w.release(this.ctx.sched());
                        }
                        Poll::Ready(S::output(this.ctx, v))
                    }
                }
            }
            Mode::Done => panic!("pinion: an I/O future was polled after it completed"),
        }
    }
}

impl<'c, B: Backend, S: Start<'c, B>> Drop for Op<'c, B, S> {
    /// A future that gave its output (the usual case, after every
    /// `.await`) has nothing to give back: one test, inlined where it is
    /// dropped; the rest is out of line.
    #[inline(always)]
    fn drop(&mut self) {
        if self.mode != Mode::Done {
            self.drop_pending();
        }
    }
}

impl<'c, B: Backend, S: Start<'c, B>> Op<'c, B, S> {
    /// Dropped before it gave its output: gives back the arguments, or
    /// cancels the operation.
    #[cold]
    #[inline(never)]
    fn drop_pending(&mut self) {
        let mode = core::mem::replace(&mut self.mode, Mode::Done);
        match mode {
            Mode::Idle => {
                // SAFETY: `Idle`: the arguments are there; dropped once.
                unsafe { self.slot.drop_args() };
                S::dropped(self.ctx, self.key);
            }
            Mode::Task => {
                let at = At {
                    sched: self.ctx.sched(),
                    key: self.key,
                };
                // SAFETY: armed, result not taken; the cancel runs while
                // the entry holds off `completing`, as `cancel_op` needs.
                unsafe { self.slot.abandon(|op| B::cancel_op(at, op)) };
                S::dropped(self.ctx, self.key);
            }
            Mode::Cell => {
                if let Some(w) = self.cell.take() {
                    w.abandon(self.ctx.sched(), self.key);
                }
                S::dropped(self.ctx, self.key);
            }
            Mode::Done => {}
        }
    }
}
