//! Socket operations (Asio's `reactive_socket_*_op`): one generic
//! operation type holding a per-kind state and the handler, inline in one
//! operation slot.
//!
//! A state says how to attempt its system call once ([`OpState::perform`])
//! and how to hand the result to the handler ([`OpState::run`]); the
//! generic [`SocketOp`] supplies the type-erased perform and complete
//! functions the reactor and scheduler call.

use core::mem::ManuallyDrop;
use core::net::SocketAddr;
use core::ptr::{self, addr_of, addr_of_mut, NonNull};

use pinion_core::backend::{
    At, ConnectHandler, Fd, Handler, Here, Invoke, Key, OpHooks, OpId, OpResult, Operation, Sched,
    Started,
};
use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::pooled::{BufSource, PooledBuf};
use pinion_core::{Error, Pool, Rejected, Result};
use pinion_sys::addr::{RawAddr, SockAddr};
use pinion_sys::fault::{self, Site};
use pinion_sys::{socket, syscall, Errno};

use crate::reactor::perform::{FirstAttempt, ReactorOp, Status};
use crate::reactor::Reactor;
use crate::stats::stat;

/// What one attempt achieved, with the result when it completed.
pub(crate) enum Attempt {
    /// Would block.
    NotDone,
    /// Completed with this result.
    Done(OpResult),
    /// Completed, and the descriptor is drained for this direction.
    Exhausted(OpResult),
}

/// The per-kind part of a socket operation.
pub(crate) trait OpState<H>: Sized {
    /// Tries the system call once on `fd`.
    fn perform(&mut self, reactor: &Reactor, fd: i32) -> Attempt;
    /// Hands the result to the handler.
    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H);
    /// [`run`](Self::run) on the run thread `here` (from `sched`), for
    /// states whose handler can use it.
    #[inline(always)]
    fn run_here(self, sched: &Sched<Reactor>, here: Option<Here<'_>>, r: OpResult, handler: H) {
        let _ = here;
        self.run(sched, r, handler)
    }
    /// Destroyed at shutdown without running: give back what is held.
    fn destroy(self, _sched: &Sched<Reactor>) {}
}

/// A socket operation: reactor header, state and handler in one slot.
#[repr(C)]
pub(crate) struct SocketOp<S, H> {
    op: ReactorOp,
    state: ManuallyDrop<S>,
    handler: ManuallyDrop<H>,
}

impl<S: OpState<H>, H: OpHooks> SocketOp<S, H> {
    #[inline]
    fn new(state: S, handler: H) -> Self {
        SocketOp {
            op: ReactorOp::new(complete::<S, H>, perform::<S, H>),
            state: ManuallyDrop::new(state),
            handler: ManuallyDrop::new(handler),
        }
    }

    /// Tells the handler which operation it is (for `cancel_op`).
    ///
    /// # Safety
    /// `op` is live and not yet visible to another thread.
    #[inline(always)]
    unsafe fn bind(op: NonNull<Self>) {
        // SAFETY: per contract, the handler is ours to touch.
        unsafe { (*addr_of_mut!((*op.as_ptr()).handler)).bind(OpId::new(op.cast())) }
    }

    #[inline]
    fn into_parts(self) -> (S, H) {
        (
            ManuallyDrop::into_inner(self.state),
            ManuallyDrop::into_inner(self.handler),
        )
    }
}

/// The type-erased perform function `perform_io` calls.
///
/// # Safety
/// See [`PerformFn`](crate::reactor::perform::PerformFn); `op` is a
/// `SocketOp<S, H>`.
unsafe fn perform<S: OpState<H>, H: OpHooks>(
    op: NonNull<ReactorOp>, reactor: &Reactor, fd: i32,
) -> Status {
    // SAFETY: forwarded.
    unsafe { perform_now(op.cast::<SocketOp<S, H>>(), reactor, fd) }
}

/// One attempt at `op`, its result written into its header.
///
/// # Safety
/// `op` is a live `SocketOp<S, H>` that nobody else touches meanwhile (it
/// is on a descriptor queue under that descriptor's lock, or being started).
#[inline(always)]
unsafe fn perform_now<S: OpState<H>, H: OpHooks>(
    op: NonNull<SocketOp<S, H>>, reactor: &Reactor, fd: i32,
) -> Status {
    let p = op.as_ptr();
    // SAFETY: per this function's contract.
    let (state, header) = unsafe { (&mut *addr_of_mut!((*p).state), &(*p).op.base) };
    match state.perform(reactor, fd) {
        Attempt::NotDone => Status::NotDone,
        Attempt::Done(r) => {
            header.set_result(r);
            Status::Done
        }
        Attempt::Exhausted(r) => {
            header.set_result(r);
            Status::DoneAndExhausted
        }
    }
}

/// An operation being started by its owner, for `start_op`'s speculative
/// attempt.
struct Starting<'r, S, H> {
    /// Live, on no queue, touched by nobody else until `start_op` returns.
    op: NonNull<SocketOp<S, H>>,
    reactor: &'r Reactor,
}

impl<S: OpState<H>, H: OpHooks> FirstAttempt for Starting<'_, S, H> {
    #[inline(always)]
    fn attempt(self, fd: i32) -> Status {
        // SAFETY: `op` is live and nobody else touches it while it is
        // being started (the field's invariant).
        unsafe { perform_now(self.op, self.reactor, fd) }
    }
}

/// # Safety
/// See [`CompleteFn`](pinion_core::op::CompleteFn); `op` is a
/// `SocketOp<S, H>` allocated from the pool of the scheduler `owner`.
unsafe fn complete<S: OpState<H>, H: OpHooks>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let p = op.cast::<SocketOp<S, H>>();
    // SAFETY: `owner` is the scheduler that allocated `op`.
    let sched = unsafe { &*(owner as *const Sched<Reactor>) };
    // SAFETY: `op` is live and dequeued; the result is read, state and
    // handler are moved out once, then the slot is freed (Asio's "free
    // before upcall").
    let (r, s, h) = unsafe {
        let r = op.as_ref().result();
        let s = ManuallyDrop::into_inner(ptr::read(addr_of!((*p.as_ptr()).state)));
        let h = ManuallyDrop::into_inner(ptr::read(addr_of!((*p.as_ptr()).handler)));
        // Before the slot goes: from here the op's id names nothing.
        h.completing();
        sched.free_op_in(how.here(), p);
        (r, s, h)
    };
    match how {
        Invoke::Run(here) => {
            stat!(sched.task(), ops_completed);
            s.run_here(sched, Some(here), r, h);
        }
        Invoke::Destroy => {
            s.destroy(sched);
            drop(h);
        }
    }
}

/// A fresh operation, or state and handler handed back.
type Allocated<S, H> = core::result::Result<NonNull<SocketOp<S, H>>, Rejected<(S, H)>>;

/// Allocates the operation, or hands state and handler back.
#[inline(always)]
fn alloc<S: OpState<H>, H: OpHooks>(
    sched: &Sched<Reactor>, state: S, handler: H,
) -> Allocated<S, H> {
    // SAFETY: the slot is freed by `complete` or `take_back`, once.
    unsafe { sched.alloc_op_or_reject(SocketOp::new(state, handler), SocketOp::into_parts) }
}

/// Takes state and handler back out of an operation that was never
/// queued, and frees its slot.
///
/// # Safety
/// `op` came from [`alloc`] on `sched` and is on no queue.
unsafe fn take_back<S: OpState<H>, H: OpHooks>(
    sched: &Sched<Reactor>, op: NonNull<SocketOp<S, H>>,
) -> (S, H) {
    // SAFETY: live and ours (contract); read once, then freed.
    unsafe {
        let v = ptr::read(op.as_ptr());
        sched.free_op(op);
        v.into_parts()
    }
}

/// Queues an operation already completed with `r` (connect results known
/// at once). Its handler still runs from `run()`.
fn post_result<S: OpState<H>, H: OpHooks>(
    sched: &Sched<Reactor>, op: NonNull<SocketOp<S, H>>, r: OpResult,
) {
    // SAFETY: `op` is a fresh operation of this scheduler, on no queue.
    unsafe {
        op.cast::<Operation>().as_ref().set_result(r);
        sched.post_immediate_completion(op.cast());
    }
}

/// Allocates the operation and starts it on socket `key` in queue
/// `OP_TYPE`. On refusal (pool full, stale key) state and handler come
/// back.
#[inline(always)]
pub(crate) fn start<const OP_TYPE: usize, S: OpState<H>, H: OpHooks>(
    at: At<'_, Reactor>, state: S, handler: H, allow_speculative: bool,
) -> Started<(S, H)> {
    let (sched, key) = (at.sched, at.key);
    // One thread lookup serves the allocation and the queueing.
    let here = sched.here();
    // SAFETY: `here` is this scheduler's; the slot is freed by `complete`
    // or `take_back`, once.
    let op = unsafe {
        sched.alloc_op_in_or_reject(here, SocketOp::new(state, handler), SocketOp::into_parts)
    }?;
    // SAFETY: ours, on no queue yet.
    unsafe { SocketOp::bind(op) };
    let reactor = sched.task();
    // `op` is ours and on no queue: start_op performs it under the
    // descriptor's lock only.
    let perform = Starting { op, reactor };
    // SAFETY: `here` is this thread's, looked up above; `op` is live, on
    // no queue, and completes with `sched`.
    match unsafe {
        reactor.start_op::<OP_TYPE>(sched, here, key, op.cast(), allow_speculative, perform)
    } {
        Ok(()) => Ok(()),
        Err(error) => Err(Rejected {
            error,
            // SAFETY: start_op handed `op` back untouched.
            handler: unsafe { take_back(sched, op) },
        }),
    }
}

// ---- stream read and write ---------------------------------------------

/// `call()` (a `recv` or `send`), as bytes moved or the error. The error
/// path, which reads errno, is kept out of line: the hot path is the call
/// and one sign test, with no spill of the call's arguments.
#[inline(always)]
pub(crate) fn stream_call(mut call: impl FnMut() -> isize) -> Result<usize> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as usize);
        }
        if let Some(e) = call_failed() {
            return Err(e);
        }
    }
}

/// The length a stream call at `site` asks for: `len`, or what the fault
/// injector makes of it (a shorter length, or an error the call fails
/// with, `EINTR` retried as `stream_call` does). Just `Ok(len)` without
/// the `fault-injection` feature.
#[inline(always)]
fn faulted_len(site: Site, fd: i32, len: usize) -> Result<usize> {
    loop {
        match fault::stream_on(site, fd, len) {
            Ok(len) => return Ok(len),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::from_errno(e)),
        }
    }
}

/// The error of a call that returned -1, or `None` for EINTR (retry).
#[cold]
#[inline(never)]
fn call_failed() -> Option<Error> {
    match Errno::last() {
        Errno::INTR => None,
        e => Some(Error::from_errno(e)),
    }
}

/// One `recv` into the spare room of `buf`.
#[inline(always)]
fn recv_into<B: IoBufMut>(buf: &mut B, fd: i32) -> Attempt {
    let len = match faulted_len(Site::StreamRecv, fd, buf.spare()) {
        Ok(len) => len,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let ptr = buf.write_ptr();
    // SAFETY: `ptr` is valid for `len = spare()` bytes (IoBufMut).
    match stream_call(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) }) {
        // `len > 0` (the facade refuses a buffer with no room), so 0
        // bytes is the peer's end of stream.
        Ok(0) => Attempt::Done(Err(Error::Eof)),
        Ok(n) => {
            // SAFETY: the kernel wrote `n <= spare()` bytes.
            unsafe { buf.advance(n) };
            if n < len {
                Attempt::Exhausted(Ok(n))
            } else {
                Attempt::Done(Ok(n))
            }
        }
        Err(Error::WouldBlock) => Attempt::NotDone,
        Err(e) => Attempt::Done(Err(e)),
    }
}

/// One `send` of the bytes of `buf`, without SIGPIPE.
#[inline(always)]
fn send_from<B: IoBuf>(buf: &B, fd: i32) -> Attempt {
    let len = match faulted_len(Site::StreamSend, fd, buf.bytes_len()) {
        Ok(len) => len,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let ptr = buf.read_ptr();
    // SAFETY: `ptr` is valid for `len = bytes_len()` bytes (IoBuf).
    match stream_call(|| unsafe { libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL) }) {
        Ok(n) => {
            if n < len {
                Attempt::Exhausted(Ok(n))
            } else {
                Attempt::Done(Ok(n))
            }
        }
        Err(Error::WouldBlock) => Attempt::NotDone,
        Err(e) => Attempt::Done(Err(e)),
    }
}

/// An attempt made outside any operation (`Backend::write_now`): the
/// result goes to `out`.
pub(crate) struct Now<'a, F: FnOnce(i32) -> Attempt> {
    pub(crate) attempt: F,
    pub(crate) out: &'a mut Option<OpResult>,
}

impl<F: FnOnce(i32) -> Attempt> FirstAttempt for Now<'_, F> {
    #[inline(always)]
    fn attempt(self, fd: i32) -> Status {
        match (self.attempt)(fd) {
            Attempt::NotDone => Status::NotDone,
            Attempt::Done(r) => {
                *self.out = Some(r);
                Status::Done
            }
            Attempt::Exhausted(r) => {
                *self.out = Some(r);
                Status::DoneAndExhausted
            }
        }
    }
}

/// `Backend::write_now`: a stream write performed at once when the
/// reactor would have tried it speculatively.
#[inline(always)]
pub(crate) fn write_now<B: IoBuf>(at: At<'_, Reactor>, buf: &B) -> Option<Result<usize>> {
    let mut out = None;
    let now = Now {
        attempt: |fd| send_from(buf, fd),
        out: &mut out,
    };
    at.sched
        .task()
        .perform_now::<{ crate::reactor::WRITE_OP }>(at.key, now);
    out
}

/// `recv` into the spare room of `buf` (Asio's `reactive_socket_recv_op`).
pub(crate) struct Recv<B> {
    pub(crate) buf: B,
}

impl<B: IoBufMut, H: Handler<Reactor, (Result<usize>, B)>> OpState<H> for Recv<B> {
    #[inline(always)]
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        recv_into(&mut self.buf, fd)
    }

    // Inlined into `complete` so that the user's handler lands there too.
    #[inline(always)]
    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, (r, self.buf))
    }

    #[inline(always)]
    fn run_here(self, sched: &Sched<Reactor>, here: Option<Here<'_>>, r: OpResult, handler: H) {
        handler.call_here(sched, here, (r, self.buf))
    }
}

/// `send` of the bytes of `buf`, without SIGPIPE (`reactive_socket_send_op`).
pub(crate) struct Send<B> {
    pub(crate) buf: B,
}

impl<B: IoBuf, H: Handler<Reactor, (Result<usize>, B)>> OpState<H> for Send<B> {
    #[inline(always)]
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        send_from(&self.buf, fd)
    }

    // Inlined into `complete` so that the user's handler lands there too.
    #[inline(always)]
    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, (r, self.buf))
    }

    #[inline(always)]
    fn run_here(self, sched: &Sched<Reactor>, here: Option<Here<'_>>, r: OpResult, handler: H) {
        handler.call_here(sched, here, (r, self.buf))
    }
}

/// `recv` into a buffer taken from the context's read pool only when the
/// socket is readable (pooled reads).
pub(crate) struct RecvPooled {
    /// The filled buffer (index, length), from a successful attempt until
    /// the handler runs.
    pub(crate) got: Option<(u32, usize)>,
}

impl<H: for<'p> Handler<Reactor, Result<PooledBuf<'p>>>> OpState<H> for RecvPooled {
    fn perform(&mut self, reactor: &Reactor, fd: i32) -> Attempt {
        // Taken now, not when the read was started: an idle connection
        // holds no buffer. Given back unless bytes arrived.
        let Some(pool) = reactor.read_buffers.as_ref() else {
            return Attempt::Done(Err(Error::NoPool(Pool::ReadBuffers)));
        };
        let Some(i) = pool.take() else {
            // Data is waiting but every buffer is in use: say so now, as
            // io_uring does (ENOBUFS); the bytes stay in the socket.
            return Attempt::Done(Err(Error::PoolFull(Pool::ReadBuffers)));
        };
        let ptr = pool.buf_ptr(i);
        let (len, r) = match faulted_len(Site::StreamRecv, fd, pool.buf_size()) {
            // SAFETY: `ptr` is valid for `buf_size() >= len` bytes: buffer
            // `i`, taken above.
            Ok(len) => (
                len,
                stream_call(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) }),
            ),
            Err(e) => (0, Err(e)),
        };
        if let Ok(n @ 1..) = r {
            self.got = Some((i, n));
        } else {
            // SAFETY: taken above, unused.
            unsafe { pool.give_back(i) };
        }
        match r {
            Ok(0) => Attempt::Done(Err(Error::Eof)),
            Ok(n) if n < len => Attempt::Exhausted(Ok(n)),
            Ok(n) => Attempt::Done(Ok(n)),
            Err(Error::WouldBlock) => Attempt::NotDone,
            Err(e) => Attempt::Done(Err(e)),
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        let pool = sched.task().read_buffers.as_ref();
        let r = r.map(|_| {
            let (Some((i, n)), Some(pool)) = (self.got, pool) else {
                unreachable!("a pooled read completed with data but no buffer");
            };
            // SAFETY: buffer `i` was taken by this read, holds `n` received
            // bytes, and is handed over here, once.
            unsafe { PooledBuf::new(pool, i, n) }
        });
        handler.call(sched, r)
    }

    fn destroy(self, sched: &Sched<Reactor>) {
        if let (Some((i, _)), Some(pool)) = (self.got, sched.task().read_buffers.as_ref()) {
            // SAFETY: taken by this read and never handed over.
            unsafe { pool.give_back(i) };
        }
    }
}

// ---- datagrams -----------------------------------------------------------

/// `recvfrom` (`reactive_socket_recvfrom_op`) of a datagram and its
/// sender, an address of family `A`.
pub(crate) struct RecvFrom<B, A: SockAddr> {
    pub(crate) buf: B,
    pub(crate) from: A::Raw,
    pub(crate) from_len: libc::socklen_t,
}

impl<B: IoBufMut, A: SockAddr, H: Handler<Reactor, (Result<(usize, A)>, B)>> OpState<H>
    for RecvFrom<B, A>
{
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        let len = self.buf.spare();
        self.from_len = A::capacity();
        // SAFETY: `write_ptr()` is valid for `spare()` bytes; `from` is
        // writable for `from_len` bytes; retried on EINTR.
        match pinion_sys::syscall_retry!(recvfrom(
            fd,
            self.buf.write_ptr().cast(),
            len,
            0,
            (&mut self.from as *mut A::Raw).cast(),
            &mut self.from_len
        )) {
            Ok(n) => {
                // SAFETY: the kernel wrote `n <= spare()` bytes.
                unsafe { self.buf.advance(n as usize) };
                Attempt::Done(Ok(n as usize))
            }
            Err(Errno::AGAIN) => Attempt::NotDone,
            Err(e) => Attempt::Done(Err(e.into())),
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        let r = r.and_then(|n| Ok((n, A::from_raw(&self.from, self.from_len)?)));
        handler.call(sched, (r, self.buf))
    }
}

/// `sendto` (`reactive_socket_sendto_op`), to an address in its kernel
/// form `R`.
pub(crate) struct SendTo<B, R> {
    pub(crate) buf: B,
    pub(crate) to: R,
    pub(crate) to_len: libc::socklen_t,
}

impl<B: IoBuf, R, H: Handler<Reactor, (Result<usize>, B)>> OpState<H> for SendTo<B, R> {
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        // SAFETY: `read_ptr()` is valid for `bytes_len()` bytes; `to`
        // holds `to_len` initialised bytes of a sockaddr; retried on EINTR.
        match pinion_sys::syscall_retry!(sendto(
            fd,
            self.buf.read_ptr().cast(),
            self.buf.bytes_len(),
            libc::MSG_NOSIGNAL,
            (&self.to as *const R).cast(),
            self.to_len
        )) {
            Ok(n) => Attempt::Done(Ok(n as usize)),
            Err(Errno::AGAIN) => Attempt::NotDone,
            Err(e) => Attempt::Done(Err(e.into())),
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, (r, self.buf))
    }
}

// ---- accept and connect --------------------------------------------------

/// The peer an accept reports when it has no IP address (a Unix socket).
const UNSPECIFIED: SocketAddr = SocketAddr::V4(core::net::SocketAddrV4::new(
    core::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// `accept4` (`reactive_socket_accept_op`) into a descriptor slot reserved
/// first: with the table full the connection stays in the listen backlog
/// and the handler gets `PoolFull(Descriptors)`. The new socket is
/// registered when the handler is about to run (Asio's `do_assign`).
pub(crate) struct Accept {
    pub(crate) peer: RawAddr,
    /// The accepted descriptor and the slot reserved for it, owned by the
    /// op until the handler runs.
    pub(crate) accepted: Option<(Fd, Key)>,
}

impl Accept {
    /// Gives back the slot of a connection that was never handed over.
    fn unreserve(reactor: &Reactor, key: Key) {
        // SAFETY: the slot was taken for this accept and its key never
        // handed out, so nothing refers to it.
        unsafe { reactor.table.release(key.index()) };
    }
}

impl<H: Handler<Reactor, Result<(Key, SocketAddr)>>> OpState<H> for Accept {
    fn perform(&mut self, reactor: &Reactor, fd: i32) -> Attempt {
        let Some((key, _)) = reactor.table.insert() else {
            return Attempt::Done(Err(Error::PoolFull(Pool::Descriptors)));
        };
        loop {
            let mut alen = RawAddr::CAPACITY;
            let r = match fault::fail(Site::Accept) {
                Some(e) => Err(e),
                // SAFETY: `peer` is writable for `alen` bytes.
                None => syscall!(accept4(
                    fd,
                    self.peer.as_mut_ptr(),
                    &mut alen,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
                )),
            };
            match r {
                Ok(new_fd) => {
                    // SAFETY: accept4 just returned this descriptor.
                    self.accepted = Some((unsafe { Fd::from_raw(new_fd) }, key));
                    return Attempt::Done(Ok(0));
                }
                // The connection died in the backlog: take the next one.
                Err(Errno::INTR | Errno::CONNABORTED | Errno::PROTO) => continue,
                Err(e) => {
                    Self::unreserve(reactor, key);
                    return match e {
                        Errno::AGAIN => Attempt::NotDone,
                        e => Attempt::Done(Err(e.into())),
                    };
                }
            }
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        let reactor = sched.task();
        let r = r.and_then(|_| {
            let (fd, key) = self.accepted.ok_or(Error::BadDescriptor)?;
            // A Unix-domain peer has no IP address: the facade asks the
            // new socket for its own kind of address (as io_uring's
            // multishot accept does for every peer).
            let peer = self.peer.to_socket_addr().unwrap_or(UNSPECIFIED);
            Ok((reactor.register_in(key, fd)?, peer))
        });
        handler.call(sched, r)
    }

    fn destroy(self, sched: &Sched<Reactor>) {
        if let Some((fd, key)) = self.accepted {
            drop(fd);
            Self::unreserve(sched.task(), key);
        }
    }
}

/// Waits for a non-blocking connect (`reactive_socket_connect_op`).
pub(crate) struct Connect;

impl<H: Handler<Reactor, Result<()>>> OpState<H> for Connect {
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        // Writable means connected or failed (Asio's non_blocking_connect).
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd; zero timeout.
        match syscall!(poll(&mut pfd, 1, 0)) {
            Ok(0) => return Attempt::NotDone,
            Ok(_) => {}
            Err(e) => return Attempt::Done(Err(e.into())),
        }
        match socket::socket_error(fd) {
            Ok(None) => Attempt::Done(Ok(0)),
            Ok(Some(e)) | Err(e) => Attempt::Done(Err(e.into())),
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, r.map(drop))
    }
}

/// A readiness wait (Asio's `reactive_wait_op`): started without a
/// speculative attempt (the queue re-arms the descriptor, so readiness that
/// is already there is reported at once), done when epoll reports it.
pub(crate) struct Wait;

impl<H: Handler<Reactor, Result<()>>> OpState<H> for Wait {
    fn perform(&mut self, _: &Reactor, _: i32) -> Attempt {
        Attempt::Done(Ok(0))
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, r.map(drop))
    }
}

/// Starts a connect of socket `key` to `addr`: the non-blocking
/// `connect`, then a wait for writability unless it finished at once.
pub(crate) fn connect_nonblocking<H: ConnectHandler<Reactor>>(
    at: At<'_, Reactor>, addr: SocketAddr, handler: H,
) -> Started<H> {
    let (sched, key) = (at.sched, at.key);
    let op = alloc(sched, Connect, handler).map_err(|r| r.map(|(_, h)| h))?;
    // SAFETY: ours, on no queue yet.
    unsafe { SocketOp::bind(op) };
    let reactor = sched.task();
    stat!(reactor, op_attempts);
    let pending = match reactor.with_fd(key, |fd| Ok(socket::connect(fd, &addr))) {
        Ok(Ok(())) => false,
        Ok(Err(Errno::INPROGRESS)) => true,
        // Failed at once (loopback refuses synchronously): the handler gets
        // the error, from `run()`.
        Ok(Err(e)) => {
            post_result(sched, op, Err(e.into()));
            return Ok(());
        }
        Err(error) => {
            return Err(Rejected {
                error,
                // SAFETY: `op` was allocated above and never queued.
                handler: unsafe { take_back(sched, op) }.1,
            });
        }
    };
    if !pending {
        post_result(sched, op, Ok(0));
        return Ok(());
    }
    // Not speculative: readiness comes from the EPOLL_CTL_MOD that
    // start_op makes for a connect (Asio's start_connect_op).
    // `op` is ours; never performed here (not speculative).
    let perform = Starting { op, reactor };
    // SAFETY: `here` is this thread's; `op` is live, on no queue.
    let started = unsafe {
        reactor.start_op::<{ crate::reactor::CONNECT_OP }>(
            sched,
            sched.here(),
            key,
            op.cast(),
            false,
            perform,
        )
    };
    started.map_err(|error| Rejected {
        error,
        // SAFETY: start_op handed `op` back untouched.
        handler: unsafe { take_back(sched, op) }.1,
    })
}

#[cfg(test)]
mod tests {
    use super::{SendTo, SocketOp};

    /// The room a Unix-domain datagram send leaves in its slot for its
    /// buffer and handler together (documented on `UnixDatagram`): the
    /// reactor's header and the 110-byte `sockaddr_un` take the rest.
    #[test]
    fn a_unix_datagram_op_leaves_room_for_buffer_and_handler() {
        let fixed = core::mem::size_of::<SocketOp<SendTo<(), libc::sockaddr_un>, ()>>();
        let room = pinion_core::OP_SLOT_SIZE - fixed.next_multiple_of(8);
        println!("epoll Unix datagram op: {fixed} bytes fixed, {room} left");
        if cfg!(target_pointer_width = "64") {
            assert_eq!(room, 96);
        }
    }
}
