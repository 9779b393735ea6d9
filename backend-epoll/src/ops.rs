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

use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::{Error, Invoke, OpResult, Operation, Rejected, Result};

use crate::net::TcpStream;
use crate::reactor::{ReactorOp, Status};
use crate::stats::stat;
use crate::sys::{self, syscall, Fd, RawAddr};
use crate::IoContext;
use pinion_core::pooled::{BufSource, PooledBuf};

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
pub(crate) trait OpState<F>: Sized {
    /// Tries the system call once on `fd`.
    fn perform(&mut self, fd: i32) -> Attempt;
    /// Hands the result to the handler.
    fn run(self, r: OpResult, handler: F);
}

/// A socket operation: reactor header, state and handler in one slot.
#[repr(C)]
pub(crate) struct SocketOp<S, F> {
    op: ReactorOp,
    state: ManuallyDrop<S>,
    handler: ManuallyDrop<F>,
}

impl<S: OpState<F>, F> SocketOp<S, F> {
    #[inline]
    pub(crate) fn new(state: S, handler: F) -> Self {
        SocketOp {
            op: ReactorOp::new(complete::<S, F>, perform::<S, F>),
            state: ManuallyDrop::new(state),
            handler: ManuallyDrop::new(handler),
        }
    }

    /// The state, to fill in before the op is started.
    #[inline]
    pub(crate) fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    #[inline]
    pub(crate) fn into_parts(self) -> (S, F) {
        (
            ManuallyDrop::into_inner(self.state),
            ManuallyDrop::into_inner(self.handler),
        )
    }
}

/// The type-erased perform function `perform_io` calls.
///
/// # Safety
/// See [`PerformFn`](crate::reactor::PerformFn); `op` is a `SocketOp<S, F>`.
unsafe fn perform<S: OpState<F>, F>(op: NonNull<ReactorOp>, fd: i32) -> Status {
    // SAFETY: forwarded.
    unsafe { perform_now(op.cast::<SocketOp<S, F>>(), fd) }
}

/// One attempt at `op`, its result written into its header.
///
/// # Safety
/// `op` is a live `SocketOp<S, F>` that nobody else touches meanwhile (it
/// is on a descriptor queue under that descriptor's lock, or being started).
#[inline(always)]
pub(crate) unsafe fn perform_now<S: OpState<F>, F>(op: NonNull<SocketOp<S, F>>, fd: i32) -> Status {
    let p = op.as_ptr();
    // SAFETY: per this function's contract.
    let (state, header) = unsafe { (&mut *addr_of_mut!((*p).state), &(*p).op.base) };
    match state.perform(fd) {
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

/// # Safety
/// See [`CompleteFn`](pinion_core::op::CompleteFn); `op` is a
/// `SocketOp<S, F>` allocated from the pool of the context `owner`.
unsafe fn complete<S: OpState<F>, F>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>) {
    let p = op.cast::<SocketOp<S, F>>();
    // SAFETY: `owner` is the scheduler of the IoContext that allocated `op`
    // (IoContext is a transparent wrapper of it).
    let ctx = unsafe { &*(owner as *const IoContext) };
    // SAFETY: `op` is live and dequeued; state and handler are moved out
    // once, then the slot is freed (Asio's "free before upcall").
    let take = || unsafe {
        let s = ManuallyDrop::into_inner(ptr::read(addr_of!((*p.as_ptr()).state)));
        let h = ManuallyDrop::into_inner(ptr::read(addr_of!((*p.as_ptr()).handler)));
        ctx.free_op_in(how.here(), p);
        (s, h)
    };
    match how {
        Invoke::Run(_) => {
            // SAFETY: as above; the result is read before the slot is freed.
            let r = unsafe { op.as_ref().result() };
            let (s, h) = take();
            stat!(ctx.task(), ops_completed);
            s.run(r, h);
        }
        // Dropping the state releases what it holds (an accepted fd).
        Invoke::Destroy => drop(take()),
    }
}

/// Allocates the operation and starts it on socket `(index, gen)`. On
/// rejection (pool full, stale handle) state and handler come back.
#[inline(always)]
pub(crate) fn start<const OP_TYPE: usize, S: OpState<F>, F>(
    ctx: &IoContext,
    index: u32,
    gen: u32,
    state: S,
    handler: F,
    allow_speculative: bool,
) -> core::result::Result<(), Rejected<(S, F)>> {
    // One thread lookup serves the allocation and the queueing.
    let here = ctx.here();
    // SAFETY: `here` is this context's.
    let op = unsafe {
        ctx.alloc_op_in_or_reject(here, SocketOp::new(state, handler), SocketOp::into_parts)
    }?;
    // SAFETY: `op` is ours and on no queue: start_op performs it under the
    // descriptor's lock only.
    let perform = |fd| unsafe { perform_now(op, fd) };
    // SAFETY: `here` is this thread's, looked up above.
    match unsafe {
        ctx.task()
            .start_op::<OP_TYPE>(ctx, here, index, gen, op.cast(), allow_speculative, perform)
    } {
        Ok(()) => Ok(()),
        Err(error) => Err(Rejected {
            error,
            // SAFETY: start_op handed `op` back untouched.
            handler: unsafe { take_back(ctx, op) },
        }),
    }
}

/// A fresh operation, or state and handler handed back.
pub(crate) type Allocated<S, F> = core::result::Result<NonNull<SocketOp<S, F>>, Rejected<(S, F)>>;

/// Allocates the operation, or hands state and handler back.
#[inline(always)]
pub(crate) fn alloc<S: OpState<F>, F>(ctx: &IoContext, state: S, handler: F) -> Allocated<S, F> {
    ctx.alloc_op_or_reject(SocketOp::new(state, handler), SocketOp::into_parts)
}

/// Queues an operation already completed with `r` (zero-length transfers,
/// connect results known at once). Its handler still runs from `run()`.
#[inline]
pub(crate) fn post_result<S: OpState<F>, F>(
    ctx: &IoContext,
    op: NonNull<SocketOp<S, F>>,
    r: OpResult,
) {
    // SAFETY: `op` is a fresh operation of this context, on no queue.
    unsafe {
        op.cast::<Operation>().as_ref().set_result(r);
        ctx.post_immediate_completion(op.cast());
    }
}

/// Takes state and handler back out of an operation that was never
/// queued, and frees its slot.
///
/// # Safety
/// `op` came from [`alloc`] on `ctx` and is on no queue.
pub(crate) unsafe fn take_back<S: OpState<F>, F>(
    ctx: &IoContext,
    op: NonNull<SocketOp<S, F>>,
) -> (S, F) {
    // SAFETY: live and ours (contract); read once, then freed.
    unsafe {
        let v = ptr::read(op.as_ptr());
        ctx.free_op(op);
        v.into_parts()
    }
}

// ---- stream read and write ---------------------------------------------

/// `call()` (a `recv` or `send`), as bytes moved or the error. The error
/// path, which reads errno, is kept out of line: the hot path is the call
/// and one sign test, with no spill of the call's arguments.
#[inline(always)]
fn stream_call(mut call: impl FnMut() -> isize) -> Result<usize> {
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

/// The error of a call that returned -1, or `None` for EINTR (retry).
#[cold]
#[inline(never)]
fn call_failed() -> Option<Error> {
    match sys::errno() {
        libc::EINTR => None,
        e => Some(Error::from_errno(e)),
    }
}

/// `recv` into the spare room of `buf` (Asio's `reactive_socket_recv_op`).
pub(crate) struct Recv<B> {
    pub(crate) buf: B,
}

impl<B: IoBufMut, F: FnOnce(Result<usize>, B)> OpState<F> for Recv<B> {
    #[inline(always)]
    fn perform(&mut self, fd: i32) -> Attempt {
        let len = self.buf.spare();
        let ptr = self.buf.write_ptr();
        // SAFETY: `ptr` is valid for `len = spare()` bytes (IoBufMut).
        match stream_call(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) }) {
            Ok(0) => Attempt::Done(Err(Error::Eof)),
            Ok(n) => {
                // SAFETY: the kernel wrote `n <= spare()` bytes.
                unsafe { self.buf.advance(n) };
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

    #[inline]
    fn run(self, r: OpResult, handler: F) {
        handler(r, self.buf)
    }
}

/// `send` of the bytes of `buf`, without SIGPIPE (`reactive_socket_send_op`).
pub(crate) struct Send<B> {
    pub(crate) buf: B,
}

impl<B: IoBuf, F: FnOnce(Result<usize>, B)> OpState<F> for Send<B> {
    #[inline(always)]
    fn perform(&mut self, fd: i32) -> Attempt {
        let len = self.buf.bytes_len();
        let ptr = self.buf.read_ptr();
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

    #[inline]
    fn run(self, r: OpResult, handler: F) {
        handler(r, self.buf)
    }
}

/// `recv` into a buffer taken from the context's read pool only when the
/// socket is readable ([`crate::TcpStream::async_read_pooled`]).
pub(crate) struct RecvPooled<'c> {
    pub(crate) ctx: &'c IoContext,
    /// The filled buffer, from a successful attempt until the handler runs
    /// (dropping the state, on destroy, returns it).
    pub(crate) buf: Option<PooledBuf<'c>>,
}

impl<'c, F: FnOnce(Result<PooledBuf<'c>>)> OpState<F> for RecvPooled<'c> {
    fn perform(&mut self, fd: i32) -> Attempt {
        // Taken now, not when the read was started: an idle connection
        // holds no buffer. Given back (dropped) unless bytes arrived.
        let Some(pool) = self.ctx.task().read_buffers() else {
            return Attempt::Done(Err(Error::OperationNotSupported));
        };
        let Some(i) = pool.take() else {
            // Data is waiting but every buffer is in use: say so now, as
            // io_uring does (ENOBUFS); the bytes stay in the socket.
            return Attempt::Done(Err(Error::PoolExhausted));
        };
        let (ptr, len) = (pool.buf_ptr(i), pool.buf_size());
        // SAFETY: `ptr` is valid for `len` bytes: buffer `i`, taken above.
        let r = stream_call(|| unsafe { libc::recv(fd, ptr.cast(), len, 0) });
        if let Ok(n @ 1..) = r {
            // SAFETY: taken above and handed over; the kernel wrote `n`.
            self.buf = Some(unsafe { PooledBuf::new(pool, i, n) });
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

    fn run(mut self, r: OpResult, handler: F) {
        let r = r.and_then(|_| self.buf.take().ok_or(Error::BadDescriptor));
        handler(r)
    }
}

// ---- datagrams -----------------------------------------------------------

/// `recvfrom` (`reactive_socket_recvfrom_op`).
pub(crate) struct RecvFrom<B> {
    pub(crate) buf: B,
    pub(crate) from: RawAddr,
}

impl<B: IoBufMut, F: FnOnce(Result<(usize, SocketAddr)>, B)> OpState<F> for RecvFrom<B> {
    fn perform(&mut self, fd: i32) -> Attempt {
        let len = self.buf.spare();
        loop {
            let mut alen = RawAddr::CAPACITY;
            // SAFETY: `write_ptr()` is valid for `spare()` bytes; `from` is
            // writable for `alen` bytes.
            match syscall!(recvfrom(
                fd,
                self.buf.write_ptr().cast(),
                len,
                0,
                self.from.as_mut_ptr(),
                &mut alen
            )) {
                Ok(n) => {
                    // SAFETY: the kernel wrote `n <= spare()` bytes.
                    unsafe { self.buf.advance(n as usize) };
                    return Attempt::Done(Ok(n as usize));
                }
                Err(Error::WouldBlock) => return Attempt::NotDone,
                Err(Error::Os(libc::EINTR)) => continue,
                Err(e) => return Attempt::Done(Err(e)),
            }
        }
    }

    fn run(self, r: OpResult, handler: F) {
        let r = r.and_then(|n| Ok((n, self.from.socket_addr()?)));
        handler(r, self.buf)
    }
}

/// `sendto` (`reactive_socket_sendto_op`).
pub(crate) struct SendTo<B> {
    pub(crate) buf: B,
    pub(crate) to: RawAddr,
    pub(crate) to_len: libc::socklen_t,
}

impl<B: IoBuf, F: FnOnce(Result<usize>, B)> OpState<F> for SendTo<B> {
    fn perform(&mut self, fd: i32) -> Attempt {
        loop {
            // SAFETY: `read_ptr()` is valid for `bytes_len()` bytes; `to`
            // holds `to_len` initialised bytes.
            match syscall!(sendto(
                fd,
                self.buf.read_ptr().cast(),
                self.buf.bytes_len(),
                libc::MSG_NOSIGNAL,
                self.to.as_ptr(),
                self.to_len
            )) {
                Ok(n) => return Attempt::Done(Ok(n as usize)),
                Err(Error::WouldBlock) => return Attempt::NotDone,
                Err(Error::Os(libc::EINTR)) => continue,
                Err(e) => return Attempt::Done(Err(e)),
            }
        }
    }

    fn run(self, r: OpResult, handler: F) {
        handler(r, self.buf)
    }
}

// ---- accept and connect --------------------------------------------------

/// `accept4` (`reactive_socket_accept_op`); the new socket is registered
/// when the handler is about to run (Asio's `do_assign`).
pub(crate) struct Accept<'c> {
    pub(crate) ctx: &'c IoContext,
    pub(crate) peer: RawAddr,
    /// The accepted descriptor, owned by the op until the handler runs.
    pub(crate) accepted: Option<Fd>,
}

impl<'c, F: FnOnce(Result<(TcpStream<'c>, SocketAddr)>)> OpState<F> for Accept<'c> {
    fn perform(&mut self, fd: i32) -> Attempt {
        loop {
            let mut alen = RawAddr::CAPACITY;
            // SAFETY: `peer` is writable for `alen` bytes.
            match syscall!(accept4(
                fd,
                self.peer.as_mut_ptr(),
                &mut alen,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
            )) {
                Ok(new_fd) => {
                    // SAFETY: accept4 just returned this descriptor.
                    self.accepted = Some(unsafe { Fd::from_raw(new_fd) });
                    return Attempt::Done(Ok(0));
                }
                Err(Error::WouldBlock) => return Attempt::NotDone,
                // The connection died in the backlog: take the next one.
                Err(Error::Os(libc::EINTR | libc::ECONNABORTED | libc::EPROTO)) => continue,
                Err(e) => return Attempt::Done(Err(e)),
            }
        }
    }

    fn run(self, r: OpResult, handler: F) {
        let r = r.and_then(|_| {
            let fd = self.accepted.ok_or(Error::BadDescriptor)?;
            let peer = self.peer.socket_addr()?;
            let (index, gen) = self.ctx.task().register(fd)?;
            Ok((TcpStream::new(self.ctx, index, gen), peer))
        });
        handler(r)
    }
}

/// Waits for a non-blocking connect (`reactive_socket_connect_op`). The
/// socket is registered before the op starts; on failure it is closed
/// before the handler runs. `index == u32::MAX`: no socket (the connect
/// failed at once).
pub(crate) struct Connect<'c> {
    pub(crate) ctx: &'c IoContext,
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

impl<'c, F: FnOnce(Result<TcpStream<'c>>)> OpState<F> for Connect<'c> {
    fn perform(&mut self, fd: i32) -> Attempt {
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
            Err(e) => return Attempt::Done(Err(e)),
        }
        match sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
            Ok(0) => Attempt::Done(Ok(0)),
            Ok(e) => Attempt::Done(Err(Error::from_errno(e))),
            Err(e) => Attempt::Done(Err(e)),
        }
    }

    fn run(self, r: OpResult, handler: F) {
        match r {
            Ok(_) => handler(Ok(TcpStream::new(self.ctx, self.index, self.gen))),
            Err(e) => {
                if self.index != u32::MAX {
                    let _ = self.ctx.task().close(self.ctx, self.index, self.gen);
                }
                handler(Err(e))
            }
        }
    }
}
