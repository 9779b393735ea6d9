//! UDP on the proactor: `IORING_OP_SENDMSG`/`RECVMSG`, with the `msghdr`,
//! its `iovec` and the peer address living in the operation's slot (the
//! kernel reads them at issue and writes the source address back), so
//! nothing is allocated per datagram.

use core::mem::{zeroed, ManuallyDrop};
use core::net::SocketAddr;
use core::ptr::{addr_of, addr_of_mut, NonNull};

use io_uring::opcode;
use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::{Error, Invoke, Operation, Rejected, Result};

use crate::proactor::{with_target, Sched};
use crate::sys::{self, RawAddr};
use crate::IoContext;

/// A UDP socket. `Copy`: a handle into the context's descriptor table.
#[derive(Clone, Copy)]
pub struct UdpSocket<'c> {
    ctx: &'c IoContext,
    index: u32,
    gen: u32,
}

#[repr(C)]
struct MsgOp<B, F> {
    header: Operation,
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: RawAddr,
    buf: ManuallyDrop<B>,
    handler: ManuallyDrop<F>,
}

// SAFETY (for the raw pointers inside `msg`/`iov`): they point into the
// op's own slot and its buffer, which move with nothing; the op as a whole
// travels between threads like every operation (handler and buffer are
// `Send`).

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `MsgOp<B, F>` of a receive.
unsafe fn complete_recv_from<B, F>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    B: IoBufMut,
    F: FnOnce(Result<(usize, SocketAddr)>, B) + Send + 'static,
{
    let p = op.cast::<MsgOp<B, F>>();
    // SAFETY: `p` is live and ours; fields read once, then freed.
    let (res, addr, mut buf, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            (*o).addr.to_socket_addr(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf))),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        let r = res.and_then(|n| {
            let n = n.min(buf.spare());
            // SAFETY: the kernel wrote `n` bytes into the spare room.
            unsafe { buf.advance(n) };
            Ok((n, addr.ok_or(Error::OperationNotSupported)?))
        });
        handler(r, buf)
    }
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `MsgOp<B, F>` of a send.
unsafe fn complete_send_to<B, F>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    B: IoBuf,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    let p = op.cast::<MsgOp<B, F>>();
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
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        handler(res, buf)
    }
}

impl<'c> UdpSocket<'c> {
    /// A socket bound to `addr`.
    pub fn bind(ctx: &'c IoContext, addr: SocketAddr) -> Result<Self> {
        let fd = sys::socket(&addr, libc::SOCK_DGRAM)?;
        if let Err(e) = sys::bind(fd, &addr) {
            sys::close(fd);
            return Err(e);
        }
        let (index, gen) = ctx
            .proactor()
            .open_desc(fd)
            .inspect_err(|_| sys::close(fd))?;
        Ok(UdpSocket { ctx, index, gen })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.ctx
            .proactor()
            .descs
            .with_fd(self.index, self.gen, sys::local_addr)
    }

    /// Sends `buf` as one datagram to `to`.
    pub fn async_send_to<B, F>(
        &self,
        buf: B,
        to: SocketAddr,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + Send + 'static,
    {
        let (ptr, len) = (buf.read_ptr() as *mut u8, buf.bytes_len());
        let (addr, alen) = RawAddr::from_std(to);
        self.start(
            buf,
            handler,
            complete_send_to::<B, F>,
            ptr,
            len,
            addr,
            alen,
            false,
        )
    }

    /// Receives one datagram into `buf`'s spare room; the handler gets its
    /// length and sender.
    pub fn async_receive_from<B, F>(
        &self,
        mut buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<(usize, SocketAddr)>, B) + Send + 'static,
    {
        let (ptr, len) = (buf.write_ptr(), buf.spare());
        let addr = RawAddr::zeroed();
        self.start(
            buf,
            handler,
            complete_recv_from::<B, F>,
            ptr,
            len,
            addr,
            RawAddr::CAPACITY,
            true,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start<B: Send + 'static, F: Send + 'static>(
        &self,
        buf: B,
        handler: F,
        func: pinion_core::op::CompleteFn,
        ptr: *mut u8,
        len: usize,
        addr: RawAddr,
        alen: libc::socklen_t,
        recv: bool,
    ) -> core::result::Result<(), Rejected<(B, F)>> {
        let op = MsgOp {
            header: Operation::new(func),
            // SAFETY: msghdr and iovec are plain C structs; zero is valid.
            msg: unsafe { zeroed() },
            // SAFETY: as above.
            iov: unsafe { zeroed() },
            addr,
            buf: ManuallyDrop::new(buf),
            handler: ManuallyDrop::new(handler),
        };
        let sched: &Sched = self.ctx;
        let here = sched.here();
        // SAFETY: `here` came from this scheduler.
        let p = unsafe {
            sched.alloc_op_in_or_reject(here, op, |op| {
                (
                    ManuallyDrop::into_inner(op.buf),
                    ManuallyDrop::into_inner(op.handler),
                )
            })
        }?;
        let o = p.as_ptr();
        // The msghdr points at the iovec and address in the same slot and
        // the iovec at the buffer's bytes; all stay put until the CQE has
        // been reaped (only the complete function frees the slot).
        // SAFETY: `o` is our fresh op, laid out as described above.
        unsafe {
            (*o).iov.iov_base = ptr as *mut libc::c_void;
            (*o).iov.iov_len = len;
            (*o).msg.msg_name = addr_of_mut!((*o).addr) as *mut libc::c_void;
            (*o).msg.msg_namelen = alen;
            (*o).msg.msg_iov = addr_of_mut!((*o).iov);
            (*o).msg.msg_iovlen = 1;
        }
        // SAFETY: as above, the SQE points only into the op's slot and its
        // buffer; a table index; `here` came from this scheduler.
        let pushed = unsafe {
            self.ctx.proactor().push_on(
                self.index,
                self.gen,
                true,
                || sched.compensating_work_started_in(here),
                |target| {
                    let e = if recv {
                        with_target!(target, |t| opcode::RecvMsg::new(t, addr_of_mut!((*o).msg))
                            .build())
                    } else {
                        with_target!(target, |t| opcode::SendMsg::new(t, addr_of!((*o).msg))
                            .flags(libc::MSG_NOSIGNAL as u32)
                            .build())
                    };
                    e.user_data(o as u64)
                },
            )
        };
        pushed.map_err(|error| {
            // SAFETY: refused, never queued: the op is ours; each field
            // is read once, then the slot freed.
            let (buf, handler) = unsafe {
                let b = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf)));
                let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
                sched.free_op_in(here, p);
                (b, h)
            };
            Rejected {
                error,
                handler: (buf, handler),
            }
        })
    }

    /// Every pending operation completes with `OperationAborted`.
    pub fn cancel(&self) -> Result<()> {
        self.ctx
            .proactor()
            .cancel_desc(self.ctx, self.index, self.gen)
    }

    /// Cancels pending operations, closes the socket, frees its slot.
    pub fn close(&self) -> Result<()> {
        self.ctx
            .proactor()
            .close_desc(self.ctx, self.index, self.gen)
    }
}
