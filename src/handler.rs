//! How the user's handlers ride through a backend: each closure is
//! wrapped in a small struct that implements the backend's
//! [`Handler`](pinion_core::backend::Handler) trait, turning what the
//! backend delivers (a [`Key`], a pooled buffer) into the user's types, and
//! the closure is taken back out of the struct when an operation is
//! refused, so the caller always gets its own handler back.
//!
//! This is the only module of the facade with `unsafe`: a completion
//! rebuilds the `&'c IoContext` its operation was started on from the
//! scheduler pointer it runs with.

use core::marker::PhantomData;
use core::net::SocketAddr;

use pinion_core::backend::{At, Backend, Handler, Key, OpHooks, Sched};
use pinion_core::pooled::PooledBuf;
use pinion_core::{Rejected, Result};

use crate::aio::{FromValue, PooledRead};
use crate::context::IoContext;
use crate::net::{Family, StreamSocket};
use crate::owned::Owned;

/// The context of `'c` an operation was started on, from the scheduler it
/// completes with.
#[inline(always)]
fn context<'c, B: Backend>(sched: &Sched<B>) -> &'c IoContext<B> {
    // SAFETY: every wrapper below is made by an initiating call on a
    // `&'c IoContext<B>`, and its operation completes from that context's
    // `run()`, while it lives; it lives for `'c`.
    unsafe { IoContext::from_sched(sched) }
}

/// An accepted connection kept at a future's rendezvous: a stream that
/// closes if its future is gone before it takes it.
pub(crate) type AcceptedConn<'c, B, P> =
    Result<(Owned<StreamSocket<'c, B, P>>, <P as Family>::Addr)>;

impl<'c, B: Backend, P: Family> FromValue<B, Result<(Key, SocketAddr)>> for AcceptedConn<'c, B, P> {
    fn from_value(sched: &Sched<B>, v: Result<(Key, SocketAddr)>) -> Self {
        // The accept future was started on a `&'c IoContext` (see `context`).
        let ctx: &'c IoContext<B> = context(sched);
        v.map(|(key, addr)| {
            let peer = P::accepted_peer(addr, sched, key);
            (Owned::new(StreamSocket::from_key(ctx, key)), peer)
        })
    }
}

/// A read or write handler: `(result, buffer)` as two arguments.
pub(crate) struct Io<F>(pub(crate) F);

impl<B: Backend, Buf, T, F: FnOnce(T, Buf) + Send> Handler<B, (T, Buf)> for Io<F> {
    #[inline(always)]
    fn call(self, _: &Sched<B>, (result, buf): (T, Buf)) {
        (self.0)(result, buf)
    }
}

impl<F> OpHooks for Io<F> {}

/// A one-buffer write started as a one-element list: a connected
/// datagram socket's send, so that an empty datagram is sent as one
/// (`sendmsg`) on every backend (a plain write of nothing is `Ok(0)`
/// without a system call on io_uring, right for streams only).
pub(crate) struct Single<F>(pub(crate) F);

impl<B: Backend, Buf, F: FnOnce(Result<usize>, Buf) + Send> Handler<B, (Result<usize>, [Buf; 1])>
    for Single<F>
{
    fn call(self, _: &Sched<B>, (result, [buf]): (Result<usize>, [Buf; 1])) {
        (self.0)(result, buf)
    }
}

impl<F> OpHooks for Single<F> {}

/// Gives a refused read or write its buffer and handler back.
#[inline(always)]
pub(crate) fn io_back<Buf, F>(r: Rejected<(Buf, Io<F>)>) -> Rejected<(Buf, F)> {
    r.map(|(buf, h)| (buf, h.0))
}

/// What a handler of a socket of family `P` on a context of `'c` carries
/// only as types.
pub(crate) type Marker<'c, B, P> = PhantomData<fn() -> (&'c IoContext<B>, P)>;

/// An accept handler: the backend's key becomes a stream of family `P`.
pub(crate) struct Accepted<'c, B: Backend, P, F> {
    pub(crate) f: F,
    pub(crate) _c: Marker<'c, B, P>,
}

impl<B: Backend, P, F> OpHooks for Accepted<'_, B, P, F> {}

impl<'c, B, P, F> Handler<B, Result<(Key, SocketAddr)>> for Accepted<'c, B, P, F>
where
    B: Backend,
    P: Family,
    F: FnOnce(Result<(StreamSocket<'c, B, P>, P::Addr)>) + Send,
{
    fn call(self, sched: &Sched<B>, r: Result<(Key, SocketAddr)>) {
        let ctx: &'c IoContext<B> = context(sched);
        (self.f)(r.map(|(key, addr)| {
            let peer = P::accepted_peer(addr, sched, key);
            (StreamSocket::from_key(ctx, key), peer)
        }))
    }
}

/// A connect handler: on success the stream, on failure the socket is
/// closed before the handler hears of it.
pub(crate) struct Connected<'c, B: Backend, P, F> {
    pub(crate) f: F,
    pub(crate) key: Key,
    pub(crate) _c: Marker<'c, B, P>,
}

impl<B: Backend, P, F> Connected<'_, B, P, F> {
    pub(crate) fn new(f: F, key: Key) -> Self {
        Connected {
            f,
            key,
            _c: PhantomData,
        }
    }

    /// The user's handler, from a refused start.
    pub(crate) fn into_inner(self) -> F {
        self.f
    }
}

impl<B: Backend, P, F> OpHooks for Connected<'_, B, P, F> {}

impl<'c, B, P, F> Handler<B, Result<()>> for Connected<'c, B, P, F>
where
    B: Backend,
    P: Family,
    F: FnOnce(Result<StreamSocket<'c, B, P>>) + Send,
{
    fn call(self, sched: &Sched<B>, r: Result<()>) {
        let ctx: &'c IoContext<B> = context(sched);
        let r = match r {
            Ok(()) => Ok(StreamSocket::from_key(ctx, self.key)),
            Err(e) => {
                let _ = B::close(At {
                    sched,
                    key: self.key,
                });
                Err(e)
            }
        };
        (self.f)(r)
    }
}

/// A pooled read's handler: the buffer, with the context's lifetime.
pub(crate) struct Pooled<'c, B: Backend, F> {
    pub(crate) f: F,
    pub(crate) _c: PhantomData<fn() -> &'c IoContext<B>>,
}

impl<B: Backend, F> OpHooks for Pooled<'_, B, F> {}

impl<'c, 'p, B, F> Handler<B, Result<PooledBuf<'p>>> for Pooled<'c, B, F>
where
    B: Backend,
    F: FnOnce(Result<PooledBuf<'c>>) + Send,
{
    fn call(self, _: &Sched<B>, r: Result<PooledBuf<'p>>) {
        // SAFETY: the buffer borrows the read pool of the context this
        // read was started on, which lives for `'c` (see `context`); the
        // two types differ only in that lifetime.
        let r = unsafe { core::mem::transmute::<Result<PooledBuf<'p>>, Result<PooledBuf<'c>>>(r) };
        (self.f)(r)
    }
}

impl<'c, 'p, B: Backend> FromValue<B, Result<PooledBuf<'p>>> for PooledRead<'c> {
    fn from_value(_: &Sched<B>, r: Result<PooledBuf<'p>>) -> Self {
        // SAFETY: as in `Pooled::call`: the buffer borrows the read pool of
        // the context the future's read was started on, which lives for
        // `'c`; the two types differ only in that lifetime.
        PooledRead(unsafe {
            core::mem::transmute::<Result<PooledBuf<'p>>, Result<PooledBuf<'c>>>(r)
        })
    }
}
