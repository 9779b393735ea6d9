//! async/await over the same operations the callback API starts.
//!
//! Every I/O future starts one backend operation the first time it is
//! polled, with a handler that meets the future at a
//! `rendezvous` (in an operation slot of the context, so
//! nothing is allocated). The future owns its buffer until it starts the
//! operation and gets it back in the output, as the callback API does:
//! results are `(Result<usize>, Buf)`.
//!
//! **Dropping a future cancels its operation** (that operation alone, not
//! the others on the same socket). What the kernel may still write into
//! stays with the operation until its completion arrives; then the
//! buffer is dropped, which gives it back to its owner or pool. A read
//! that had already completed when its future was dropped loses its bytes
//! (as with tokio-uring and monoio): these futures are not cancel-safe.
//! The `embedded-io-async` streams are (they wait for readiness first).

use core::future::Future;
use core::mem;
use core::pin::Pin;
use core::task::{Context, Poll};

use pinion_core::backend::{At, Backend, Key};
use pinion_core::Error;

use crate::context::IoContext;

mod net;
pub(crate) mod rendezvous;
mod time;

pub use net::{AcceptOne, ConnectTo, ReadSome, RecvOne, SendOne, WaitFor, WriteSome};
pub use pinion_core::backend::Readiness;

pub use net::{Accept, Connect, Read, Ready, RecvFrom, SendTo, Write};
#[cfg(feature = "embedded-io")]
mod eio;
pub use time::{sleep, sleep_until, timeout, Deadline, Interval, Sleep, Timeout, TimeoutIn};

pub(crate) use rendezvous::FromValue;
use rendezvous::{CellHandler, Looked, Waiting};

/// A refused start: the reason, the start itself and the handler, handed
/// back so nothing is lost.
pub type Refusal<'c, B, S> = (Error, S, CellHandler<B, <S as Start<'c, B>>::Value>);

/// One kind of operation a future can start (sealed: the module is
/// private to the crate).
pub trait Start<'c, B: Backend>: Sized {
    /// What the operation's handler leaves at the rendezvous.
    type Value: Send;
    /// What the future gives.
    type Output;

    /// Starts the operation with `h` as its handler; on refusal, hands
    /// everything back with the reason.
    fn start(
        self, at: At<'_, B>, h: CellHandler<B, Self::Value>,
    ) -> Result<(), Refusal<'c, B, Self>>;

    /// The output of a refused start (the buffer comes back).
    fn refused(self, error: Error) -> Self::Output;

    /// The output from the handler's value.
    fn output(ctx: &'c IoContext<B>, value: Self::Value) -> Self::Output;

    /// The future is dropped before giving its output (after any cancel).
    fn dropped(_ctx: &'c IoContext<B>, _key: Key) {}
}

enum State<S, V> {
    Idle(S),
    Waiting(Waiting<V>),
    Done,
}

/// A future of one operation on the descriptor `key`.
pub struct Op<'c, B: Backend, S: Start<'c, B>> {
    ctx: &'c IoContext<B>,
    key: Key,
    state: State<S, S::Value>,
}

// The state is never pinned: neither the start arguments nor the
// rendezvous handle are handed out as `Pin`.
impl<'c, B: Backend, S: Start<'c, B>> Unpin for Op<'c, B, S> {}

impl<'c, B: Backend, S: Start<'c, B>> Op<'c, B, S> {
    pub(crate) fn new(ctx: &'c IoContext<B>, key: Key, start: S) -> Self {
        Op {
            ctx,
            key,
            state: State::Idle(start),
        }
    }
}

impl<'c, B: Backend, S: Start<'c, B>> Future for Op<'c, B, S> {
    type Output = S::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S::Output> {
        let this = self.get_mut();
        let sched = this.ctx.sched();
        loop {
            match mem::replace(&mut this.state, State::Done) {
                State::Idle(args) => {
                    let (w, h) = match Waiting::new(sched, cx.waker()) {
                        Ok(pair) => pair,
                        Err(e) => return Poll::Ready(args.refused(e)),
                    };
                    match args.start(
                        At {
                            sched,
                            key: this.key,
                        },
                        h,
                    ) {
                        Ok(()) => this.state = State::Waiting(w),
                        Err((e, args, h)) => {
                            w.refused(h, sched);
                            return Poll::Ready(args.refused(e));
                        }
                    }
                }
                State::Waiting(mut w) => match w.look(cx.waker()) {
                    Looked::Pending => {
                        this.state = State::Waiting(w);
                        return Poll::Pending;
                    }
                    Looked::Ready(v) => {
                        w.release(sched);
                        return Poll::Ready(S::output(this.ctx, v));
                    }
                },
                State::Done => panic!("pinion: an I/O future was polled after it completed"),
            }
        }
    }
}

impl<'c, B: Backend, S: Start<'c, B>> Drop for Op<'c, B, S> {
    fn drop(&mut self) {
        match mem::replace(&mut self.state, State::Done) {
            State::Waiting(w) => {
                w.abandon(self.ctx.sched(), self.key);
                S::dropped(self.ctx, self.key);
            }
            State::Idle(_) => S::dropped(self.ctx, self.key),
            State::Done => {}
        }
    }
}
