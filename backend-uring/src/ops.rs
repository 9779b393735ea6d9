//! The socket operations on the proactor (Asio's
//! `io_uring_socket_{recv,send,connect,sendto,recvfrom}_op`).
//!
//! Each operation is one `#[repr(C)]` struct in one pool slot: the
//! [`Operation`] header, whatever the kernel reads or writes (address,
//! `msghdr`, buffer handle), and the handler. Its SQE's `user_data` is the
//! slot. The complete function moves buffer and handler out, frees the
//! slot, then runs (or, at shutdown, drops) the handler.

use core::mem::{zeroed, ManuallyDrop};
use core::net::SocketAddr;
use core::ptr::{addr_of, addr_of_mut, NonNull};

use core::sync::atomic::Ordering;
use pinion_core::backend::{
    At, ConnectHandler, Handler, Here, Invoke, OpHooks, OpId, Operation, Readiness, Started,
    WaitHandler,
};
use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::{Error, Pool, Rejected, Result};
use pinion_sys::addr::{RawAddr, SockAddr};

use pinion_core::backend::Key;
use pinion_sys::uring::Sqe;

use crate::proactor::{stat, Proactor, Sched, TAG_ZC};

// ---- read / write -------------------------------------------------------

/// An `IoBuf` going out: no commit.
pub(crate) struct WriteOnly<B>(pub(crate) B);

// SAFETY: forwards to `B`, which is an `IoBuf`.
unsafe impl<B: IoBuf> IoBuf for WriteOnly<B> {
    fn read_ptr(&self) -> *const u8 {
        self.0.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.0.bytes_len()
    }
}

/// Hands a write's buffer to its handler unwrapped.
pub(crate) struct WriteBack<H>(pub(crate) H);

impl<H: OpHooks> OpHooks for WriteBack<H> {
    #[inline(always)]
    fn bind(&mut self, op: OpId) {
        self.0.bind(op)
    }
    #[inline(always)]
    fn completing(&self) {
        self.0.completing()
    }
}

impl<B, H: Handler<Proactor, (Result<usize>, B)>> Handler<Proactor, (Result<usize>, WriteOnly<B>)>
    for WriteBack<H>
{
    #[inline(always)]
    fn call(self, sched: &Sched, (r, b): (Result<usize>, WriteOnly<B>)) {
        self.0.call(sched, (r, b.0))
    }
}

#[repr(C)]
struct BufOp<B, H> {
    header: Operation,
    buf: ManuallyDrop<B>,
    handler: ManuallyDrop<H>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `BufOp<B, H>`.
unsafe fn complete_buf<B: BufLike, H: Handler<Proactor, (Result<usize>, B)>, const READ: bool>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let p = op.cast::<BufOp<B, H>>();
    // SAFETY: `p` is live and ours; each field read once, then freed.
    let (res, mut buf, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf))),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        let r = if READ {
            match res {
                // Data first: the room is only looked at for 0 bytes.
                Ok(n) if n != 0 => {
                    // SAFETY: the kernel reported `n` bytes received into
                    // the region this op gave it.
                    unsafe { buf.commit_read(n) };
                    Ok(n)
                }
                // A read always has room (the facade refuses one without):
                // 0 bytes is the peer's end of stream.
                Ok(_) => Err(Error::Eof),
                r => r,
            }
        } else {
            res
        };
        handler.call_here(sched, how.here(), (r, buf))
    }
}

/// What `complete_buf` needs of a buffer of either direction.
pub(crate) trait BufLike: Send + 'static {
    fn ptr_for_op(&mut self) -> *mut u8;
    fn len_for_op(&self) -> usize;
    /// # Safety
    /// `n` bytes were written at `ptr_for_op()` (reads only).
    unsafe fn commit_read(&mut self, n: usize);
}

impl<B: IoBufMut> BufLike for B {
    #[inline]
    fn ptr_for_op(&mut self) -> *mut u8 {
        self.write_ptr()
    }
    #[inline]
    fn len_for_op(&self) -> usize {
        self.spare()
    }
    #[inline]
    unsafe fn commit_read(&mut self, n: usize) {
        let n = n.min(self.spare());
        // SAFETY: the kernel wrote `n <= spare()` bytes (per contract).
        unsafe { self.advance(n) }
    }
}

impl<B: IoBuf> BufLike for WriteOnly<B> {
    #[inline]
    fn ptr_for_op(&mut self) -> *mut u8 {
        self.0.read_ptr() as *mut u8
    }
    #[inline]
    fn len_for_op(&self) -> usize {
        self.0.bytes_len()
    }
    unsafe fn commit_read(&mut self, _: usize) {}
}

/// Starts a read (`READ`) or a write with `buf` on the socket `key` names;
/// `ZC`: a write of at least `Options::send_zc` bytes (`send_zc`).
#[inline(always)]
pub(crate) fn start_buf_op<
    B: BufLike,
    H: Handler<Proactor, (Result<usize>, B)>,
    const READ: bool,
    const ZC: bool,
>(
    at: At<'_, Proactor>, mut buf: B, handler: H,
) -> Started<(B, H)> {
    let (sched, key) = (at.sched, at.key);
    let (ptr, len) = (buf.ptr_for_op(), buf.len_for_op());
    let len = len.min(u32::MAX as usize) as u32;
    let op = BufOp {
        header: Operation::new(complete_buf::<B, H, READ>),
        buf: ManuallyDrop::new(buf),
        handler: ManuallyDrop::new(handler),
    };
    // The thread is looked up once for the whole initiation.
    let here = sched.here();
    // Spelled out, not `alloc_op_in_or_reject`: with the helper LLVM
    // tests `here` twice on this, the hottest start (+3 instr/op).
    // SAFETY: `here` came from this scheduler; the slot is freed by
    // `complete_buf` or `refuse_buf_op`, once.
    let p = match unsafe { sched.alloc_op_in(here, op) } {
        Ok(p) => p,
        Err(op) => {
            return Err(Rejected {
                error: sched.pool_error(Pool::Ops),
                handler: (
                    ManuallyDrop::into_inner(op.buf),
                    ManuallyDrop::into_inner(op.handler),
                ),
            })
        }
    };
    // SAFETY: ours, not yet visible to anyone.
    unsafe { (*addr_of_mut!((*p.as_ptr()).handler)).bind(OpId::new(p.cast())) };
    let proactor = sched.task();
    if len == 0 {
        // A write of nothing: `Ok(0)`, through the queue (reads always
        // have room). The key still has to be current.
        if let Err(error) = proactor.descs.get(key).ok_or(Error::BadDescriptor) {
            // SAFETY: never queued: still ours.
            return Err(unsafe { refuse_buf_op(sched, here, p, error) });
        }
        // SAFETY: a fresh op, on no queue, completing with this scheduler;
        // `here` is this scheduler's.
        unsafe { sched.post_immediate_completion_in(here, p.cast()) };
        return Ok(());
    }
    // Under a fault schedule: a shorter length in the SQE, or the error
    // the kernel's CQE would carry, without an SQE.
    #[cfg(feature = "fault-injection")]
    let len = match faulted_len(proactor, key, READ, len) {
        Ok(len) => len,
        Err(error) => {
            if proactor.descs.get(key).is_none() {
                // SAFETY: never queued: still ours.
                return Err(unsafe { refuse_buf_op(sched, here, p, Error::BadDescriptor) });
            }
            // SAFETY: a fresh op, on no queue, completing with this
            // scheduler; `here` is this scheduler's.
            unsafe {
                (*p.as_ptr()).header.set_result(Err(error));
                sched.post_immediate_completion_in(here, p.cast());
            }
            return Ok(());
        }
    };
    // IORING_OP_RECV / IORING_OP_SEND (or SEND_ZC for a large write),
    // written in place (only the fields they use: `Sq::push_lean`).
    let user_data = p.as_ptr() as u64;
    // SAFETY: the buffer's bytes stay put while the buffer value sits in
    // the op's slot (IoBuf/IoBufMut contract), and the slot stays
    // allocated until this SQE's CQE has been reaped.
    let pushed = unsafe {
        // The large-write instance (`ZC`, started by `start_large_write`)
        // pushes out of line; the others write their SQE straight into
        // the ring.
        if ZC {
            push_large_write(
                proactor,
                key,
                || sched.io_work_started(),
                ptr,
                len,
                user_data,
            )
        } else {
            proactor.push_sqe_on(
                key,
                // SAFETY: counted once the key is checked, finished by the
                // op's completion.
                || sched.io_work_started(),
                |target| {
                    if READ {
                        Sqe::recv(target, ptr, len)
                    } else {
                        Sqe::send(target, ptr, len, libc::MSG_NOSIGNAL as u32)
                    }
                    .user_data(user_data)
                },
            )
        }
    };
    match pushed {
        Ok(()) => Ok(()),
        // SAFETY: refused, the op was never queued: still ours.
        Err(error) => Err(unsafe { refuse_buf_op(sched, here, p, error) }),
    }
}

/// A write of at least `Options::send_zc` bytes (`Backend::write_some`
/// tests the length): out of line and cold, so the plain write's path
/// stays as it was without zero-copy sends.
#[cold]
#[inline(never)]
pub(crate) fn start_large_write<B: BufLike, H: Handler<Proactor, (Result<usize>, B)>>(
    at: At<'_, Proactor>, buf: B, handler: H,
) -> Started<(B, H)> {
    start_buf_op::<B, H, false, true>(at, buf, handler)
}

/// Pushes a write of at least `Options::send_zc` bytes: `SEND_ZC`
/// (tagged, so the reaper waits for its notification) on a socket that
/// takes it, else a plain `SEND`. The socket's `zc` flag is read under
/// `sq_lock` after the key check, so it is the current socket's.
///
/// # Safety
/// As for `Proactor::push_sqe_on`, for `len` bytes at `ptr` owned by the
/// operation `user_data` names.
#[inline(never)]
unsafe fn push_large_write(
    proactor: &Proactor, key: Key, started: impl FnOnce(), ptr: *mut u8, len: u32, user_data: u64,
) -> Result<()> {
    let flags = libc::MSG_NOSIGNAL as u32;
    // SAFETY: forwarded; both SQEs are lean.
    unsafe {
        proactor.push_sqe_on(key, started, |target| {
            let zc = proactor
                .descs
                .at(key.index())
                .is_some_and(|d| d.zc.load(Ordering::Relaxed));
            if !zc {
                return Sqe::send(target, ptr, len, flags).user_data(user_data);
            }
            stat!(proactor, zc_sends);
            Sqe::send_zc(target, ptr, len, flags).user_data(user_data | TAG_ZC)
        })
    }
}

/// The length a stream `recv`/`send` SQE asks for under the fault
/// schedule (`pinion_sys::fault::stream_on`): `len`, fewer bytes, or an
/// error (`EINTR` is retried, as the kernel's io_uring does).
#[cfg(feature = "fault-injection")]
#[cold]
fn faulted_len(
    proactor: &Proactor, key: pinion_core::backend::Key, read: bool, len: u32,
) -> Result<u32> {
    use pinion_sys::fault::{self, Site};
    let site = if read {
        Site::StreamRecv
    } else {
        Site::StreamSend
    };
    // A stale key: any fd; the push refuses it.
    let fd = proactor.with_desc_fd(key, Ok).unwrap_or(-1);
    loop {
        match fault::stream_on(site, fd, len as usize) {
            Ok(n) => return Ok(n as u32),
            Err(pinion_sys::Errno::INTR) => continue,
            Err(e) => return Err(Error::from_errno(e)),
        }
    }
}

/// Hands buffer and handler of an op that was never queued back to the
/// caller and frees its slot: a stale key's refusal, off the hot path.
///
/// # Safety
/// `p` is a live `BufOp` of `sched`'s pool, on no queue; `here` came from
/// `sched`.
#[cold]
#[inline(never)]
unsafe fn refuse_buf_op<B, H>(
    sched: &Sched, here: Option<Here<'_>>, p: NonNull<BufOp<B, H>>, error: Error,
) -> Rejected<(B, H)> {
    // SAFETY: per contract; each field read once, then the slot freed.
    unsafe {
        let o = p.as_ptr();
        let buf = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf)));
        let handler = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
        sched.free_op_in(here, p);
        Rejected {
            error,
            handler: (buf, handler),
        }
    }
}

// ---- connect ------------------------------------------------------------

#[repr(C)]
struct ConnectOp<H> {
    header: Operation,
    /// Read by the kernel when the SQE is issued.
    addr: RawAddr,
    handler: ManuallyDrop<H>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `ConnectOp<H>`.
unsafe fn complete_connect<H: Handler<Proactor, Result<()>>>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let p = op.cast::<ConnectOp<H>>();
    // SAFETY: `p` is live and ours; fields read once, then the slot freed.
    let (res, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: the owner is the scheduler that allocated the op.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        handler.call(sched, res.map(drop))
    }
}

/// `Backend::connect` (`IORING_OP_CONNECT`).
pub(crate) fn start_connect<H: ConnectHandler<Proactor>>(
    at: At<'_, Proactor>, addr: SocketAddr, handler: H,
) -> Started<H> {
    let (sched, key) = (at.sched, at.key);
    let (raw, len) = RawAddr::from_socket_addr(&addr);
    let op = ConnectOp {
        header: Operation::new(complete_connect::<H>),
        addr: raw,
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler; the slot is freed by
    // `complete_connect` or below, once.
    let p = unsafe {
        sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
    }?;
    let o = p.as_ptr();
    // SAFETY: ours, not yet visible to anyone.
    unsafe { (*addr_of_mut!((*o).handler)).bind(OpId::new(p.cast())) };
    // SAFETY: the address lives in the op's slot until the CQE.
    let pushed = unsafe {
        sched.task().push_on(
            key,
            true,
            // SAFETY: counted once the key is checked, finished by the
            // op's completion.
            || sched.io_work_started(),
            |target| Sqe::connect(target, (*o).addr.as_ptr(), len).user_data(o as u64),
        )
    };
    pushed.map_err(|error| Rejected {
        error,
        // SAFETY: refused, the op was never queued: still ours; the handler
        // moves out once, then the slot is freed.
        handler: unsafe {
            let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
            sched.free_op_in(here, p);
            h
        },
    })
}

// ---- readiness --------------------------------------------------------------

#[repr(C)]
struct WaitOp<H> {
    header: Operation,
    handler: ManuallyDrop<H>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `WaitOp<H>`.
unsafe fn complete_wait<H: Handler<Proactor, Result<()>>>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let p = op.cast::<WaitOp<H>>();
    // SAFETY: `p` is live and ours; fields read once, then the slot freed.
    let (res, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: the owner is the scheduler that allocated the op.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        // The result is the ready events; any of them (POLLERR, POLLHUP
        // included) means the next call will not block.
        handler.call(sched, res.map(drop))
    }
}

/// `Backend::wait` (`IORING_OP_POLL_ADD`, single-shot).
pub(crate) fn start_wait<H: WaitHandler<Proactor>>(
    at: At<'_, Proactor>, what: Readiness, handler: H,
) -> Started<H> {
    let (sched, key) = (at.sched, at.key);
    let op = WaitOp {
        header: Operation::new(complete_wait::<H>),
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler; the slot is freed by
    // `complete_wait` or below, once.
    let p = unsafe {
        sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
    }?;
    let o = p.as_ptr();
    // SAFETY: ours, not yet visible to anyone.
    unsafe { (*addr_of_mut!((*o).handler)).bind(OpId::new(p.cast())) };
    let mask = match what {
        Readiness::Readable => libc::POLLIN | libc::POLLRDHUP,
        Readiness::Writable => libc::POLLOUT,
    } as u32;
    // SAFETY: a poll carries no pointer but the op's slot (user_data),
    // which stays allocated until its CQE.
    let pushed = unsafe {
        sched.task().push_on(
            key,
            true,
            // SAFETY: counted once the key is checked, finished by the
            // op's completion.
            || {
                sched.io_work_started();
                // A fault schedule may report a cancelled poll as cancelled
                // whatever it found: a poll consumes nothing.
                #[cfg(feature = "fault-injection")]
                sched.task().cancelled.note_poll(o as u64);
            },
            |target| Sqe::poll_add(target, mask).user_data(o as u64),
        )
    };
    pushed.map_err(|error| Rejected {
        error,
        // SAFETY: refused, never queued: still ours; moved out once, then
        // the slot is freed.
        handler: unsafe {
            let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
            sched.free_op_in(here, p);
            h
        },
    })
}

// ---- datagrams ------------------------------------------------------------

/// `IORING_OP_SENDMSG`/`RECVMSG`, with the `msghdr`, its `iovec` and the
/// peer address (kernel form `R`: IP or Unix) in the operation's slot (the
/// kernel reads them at issue and writes the source address and its length
/// back), so nothing is allocated per datagram.
#[repr(C)]
struct MsgOp<B, H, R> {
    header: Operation,
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: R,
    buf: ManuallyDrop<B>,
    handler: ManuallyDrop<H>,
}

// SAFETY (for the raw pointers inside `msg`/`iov`): they point into the
// op's own slot and its buffer, which move with nothing; the op as a whole
// travels between threads like every operation (handler and buffer are
// `Send`).

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `MsgOp<B, H, A::Raw>` of a
/// receive.
unsafe fn complete_recv_from<A, B, H>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    A: SockAddr,
    B: IoBufMut,
    H: Handler<Proactor, (Result<(usize, A)>, B)>,
{
    let p = op.cast::<MsgOp<B, H, A::Raw>>();
    // SAFETY: `p` is live and ours; fields read once, then freed.
    let (res, addr, mut buf, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            // The kernel wrote the sender and its length back.
            A::from_raw(&(*o).addr, (*o).msg.msg_namelen),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf))),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        let r = res.and_then(|n| {
            let n = n.min(buf.spare());
            // SAFETY: the kernel wrote `n` bytes into the spare room.
            unsafe { buf.advance(n) };
            Ok((n, addr?))
        });
        handler.call(sched, (r, buf))
    }
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `MsgOp<B, H, R>` of a send.
unsafe fn complete_send_to<B, H, R>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    B: IoBuf,
    H: Handler<Proactor, (Result<usize>, B)>,
{
    let p = op.cast::<MsgOp<B, H, R>>();
    // SAFETY: as in `complete_recv_from`.
    let (res, buf, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf))),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        handler.call(sched, (res, buf))
    }
}

/// One datagram operation: what to send or where to receive.
pub(crate) struct Msg<R> {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    pub(crate) addr: R,
    pub(crate) alen: libc::socklen_t,
    pub(crate) recv: bool,
}

/// `Backend::send_to` and `recv_from`.
pub(crate) fn start_msg<B: Send + 'static, H: Send + OpHooks, R>(
    at: At<'_, Proactor>, buf: B, handler: H, func: pinion_core::op::CompleteFn, m: Msg<R>,
) -> Started<(B, H)> {
    let (sched, key) = (at.sched, at.key);
    let op = MsgOp {
        header: Operation::new(func),
        // SAFETY: msghdr and iovec are plain C structs; zero is valid.
        msg: unsafe { zeroed() },
        // SAFETY: as above.
        iov: unsafe { zeroed() },
        addr: m.addr,
        buf: ManuallyDrop::new(buf),
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler; the slot is freed by the
    // complete function or below, once.
    let p = unsafe {
        sched.alloc_op_in_or_reject(here, op, |op| {
            (
                ManuallyDrop::into_inner(op.buf),
                ManuallyDrop::into_inner(op.handler),
            )
        })
    }?;
    let o = p.as_ptr();
    // SAFETY: ours, not yet visible to anyone.
    unsafe { (*addr_of_mut!((*o).handler)).bind(OpId::new(p.cast())) };
    // The msghdr points at the iovec and address in the same slot and the
    // iovec at the buffer's bytes; all stay put until the CQE has been
    // reaped (only the complete function frees the slot).
    // SAFETY: `o` is our fresh op, laid out as described above.
    unsafe {
        (*o).iov.iov_base = m.ptr as *mut libc::c_void;
        (*o).iov.iov_len = m.len;
        (*o).msg.msg_name = addr_of_mut!((*o).addr) as *mut libc::c_void;
        (*o).msg.msg_namelen = m.alen;
        (*o).msg.msg_iov = addr_of_mut!((*o).iov);
        (*o).msg.msg_iovlen = 1;
    }
    // SAFETY: as above, the SQE points only into the op's slot and its
    // buffer.
    let pushed = unsafe {
        sched.task().push_on(
            key,
            true,
            // SAFETY: counted once the key is checked, finished by the
            // op's completion.
            || sched.io_work_started(),
            |target| {
                let e = if m.recv {
                    Sqe::recvmsg(target, addr_of_mut!((*o).msg), 0)
                } else {
                    Sqe::sendmsg(target, addr_of!((*o).msg), libc::MSG_NOSIGNAL as u32)
                };
                e.user_data(o as u64)
            },
        )
    };
    pushed.map_err(|error| {
        // SAFETY: refused, never queued: the op is ours; each field is read
        // once, then the slot freed.
        let handler = unsafe {
            let b = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf)));
            let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
            sched.free_op_in(here, p);
            (b, h)
        };
        Rejected { error, handler }
    })
}

/// The complete function of a receive of `B` from an `A` to `H`.
pub(crate) fn recv_fn<A, B, H>() -> pinion_core::op::CompleteFn
where
    A: SockAddr,
    B: IoBufMut,
    H: Handler<Proactor, (Result<(usize, A)>, B)>,
{
    complete_recv_from::<A, B, H>
}

/// The complete function of a send of `B` (to an address of kernel form
/// `R`) to `H`.
pub(crate) fn send_fn<B, H, R>() -> pinion_core::op::CompleteFn
where
    B: IoBuf,
    H: Handler<Proactor, (Result<usize>, B)>,
{
    complete_send_to::<B, H, R>
}

#[cfg(test)]
mod tests {
    use super::MsgOp;

    /// The room a Unix-domain datagram operation leaves in its slot for
    /// its buffer and handler together (documented on `UnixDatagram`):
    /// header, `msghdr`, iovec and the 110-byte `sockaddr_un` take the
    /// rest.
    #[test]
    fn a_unix_datagram_op_leaves_40_bytes_for_buffer_and_handler_on_64_bit() {
        let fixed = core::mem::size_of::<MsgOp<(), (), libc::sockaddr_un>>();
        // Buffers and handlers are 8-aligned on 64-bit: they start at the
        // next multiple of 8.
        let room = pinion_core::OP_SLOT_SIZE - fixed.next_multiple_of(8);
        println!("io_uring Unix datagram op: {fixed} bytes fixed, {room} left");
        if cfg!(target_pointer_width = "64") {
            assert_eq!(room, 40);
        }
    }
}
