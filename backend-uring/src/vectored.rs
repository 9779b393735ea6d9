//! Vectored reads and writes on a socket: `IORING_OP_RECVMSG`/`SENDMSG`
//! with one iovec per buffer of the list. The `msghdr` and the iovecs
//! live in the operation's slot beside the buffers, since the kernel may
//! read them after the call returns; the slot is freed only after the
//! CQE (the proactor's buffer-lifetime rule).

use core::mem::{align_of, size_of, zeroed, ManuallyDrop};
use core::ptr::{addr_of, addr_of_mut, NonNull};

use pinion_core::backend::{At, CompleteFn, Handler, Invoke, OpHooks, OpId, Operation, Started};
use pinion_core::buf::{IoBufs, IoBufsMut, IoVec};
use pinion_core::{Error, OpResult, Pool, Rejected, Result};
use pinion_sys::uring::Sqe;

use crate::proactor::{Proactor, Sched};

// The kernel reads pinion's `IoVec`s as its `struct iovec`s.
const _: () = assert!(
    size_of::<IoVec>() == size_of::<libc::iovec>()
        && align_of::<IoVec>() == align_of::<libc::iovec>()
);

#[repr(C)]
struct VecOp<T: IoBufs, H> {
    header: Operation,
    /// Names `iov`; read by the kernel when it issues the request.
    msg: libc::msghdr,
    /// The buffers' bytes (write) or room (read), read by the kernel.
    iov: T::IoVecs,
    bufs: ManuallyDrop<T>,
    handler: ManuallyDrop<H>,
}

/// Moves result, buffers and handler out of a completed `VecOp` and
/// frees its slot.
///
/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `VecOp<T, H>`.
unsafe fn take<'s, T: IoBufs, H: OpHooks>(
    op: NonNull<Operation>, owner: *const (), how: &Invoke<'_>,
) -> (OpResult, T, H, &'s Sched) {
    let p = op.cast::<VecOp<T, H>>();
    // SAFETY: `p` is live and ours; each field read once, then freed.
    let (res, bufs, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).bufs))),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    (res, bufs, handler, sched)
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `VecOp<T, H>` of a read.
unsafe fn complete_read<T: IoBufsMut, H: Handler<Proactor, (Result<usize>, T)>>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    // SAFETY: forwarded.
    let (res, mut bufs, handler, sched) = unsafe { take::<T, H>(op, owner, &how) };
    if how.is_run() {
        let r = match res {
            Ok(n) if n != 0 => {
                // SAFETY: the kernel filled the first `n` bytes of the
                // iovecs this op gave it, in order.
                unsafe { bufs.advance(n.min(bufs.total_spare())) };
                Ok(n)
            }
            // A read always has room (the facade refuses a list without):
            // 0 bytes is the peer's end of stream.
            Ok(_) => Err(Error::Eof),
            r => r,
        };
        handler.call(sched, (r, bufs))
    }
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `VecOp<T, H>` of a write.
unsafe fn complete_write<T: IoBufs, H: Handler<Proactor, (Result<usize>, T)>>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    // SAFETY: forwarded.
    let (res, bufs, handler, sched) = unsafe { take::<T, H>(op, owner, &how) };
    if how.is_run() {
        handler.call(sched, (res, bufs))
    }
}

/// `Backend::read_some_vectored` (`IORING_OP_RECVMSG`).
pub(crate) fn start_read<T: IoBufsMut, H: Handler<Proactor, (Result<usize>, T)>>(
    at: At<'_, Proactor>, mut bufs: T, handler: H,
) -> Started<(T, H)> {
    let iov = bufs.io_vecs_mut();
    start(at, bufs, iov, handler, complete_read::<T, H>, true)
}

/// `Backend::write_some_vectored` (`IORING_OP_SENDMSG`, no SIGPIPE).
pub(crate) fn start_write<T: IoBufs, H: Handler<Proactor, (Result<usize>, T)>>(
    at: At<'_, Proactor>, bufs: T, handler: H,
) -> Started<(T, H)> {
    let iov = bufs.io_vecs(0);
    start(at, bufs, iov, handler, complete_write::<T, H>, false)
}

fn start<T: IoBufs, H: Handler<Proactor, (Result<usize>, T)>>(
    at: At<'_, Proactor>, bufs: T, iov: T::IoVecs, handler: H, complete: CompleteFn, read: bool,
) -> Started<(T, H)> {
    let (sched, key) = (at.sched, at.key);
    let op = VecOp {
        header: Operation::new(complete),
        // SAFETY: all-zero is a valid msghdr; `msg_iov` is set once the
        // op is in its slot.
        msg: unsafe { zeroed() },
        iov,
        bufs: ManuallyDrop::new(bufs),
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler; the slot is freed by the
    // complete function or below, once.
    let p = match unsafe { sched.alloc_op_in(here, op) } {
        Ok(p) => p,
        Err(op) => {
            return Err(Rejected {
                error: sched.pool_error(Pool::Ops),
                handler: (
                    ManuallyDrop::into_inner(op.bufs),
                    ManuallyDrop::into_inner(op.handler),
                ),
            })
        }
    };
    let o = p.as_ptr();
    // SAFETY: ours, not yet visible to anyone; `msg` names the iovecs in
    // the same slot, which stays put until the CQE.
    let msg = unsafe {
        (*addr_of_mut!((*o).handler)).bind(OpId::new(p.cast()));
        let iov = (*o).iov.as_mut();
        (*o).msg.msg_iov = iov.as_mut_ptr().cast();
        // usize on glibc, i32 on musl.
        (*o).msg.msg_iovlen = iov.len() as _;
        addr_of_mut!((*o).msg)
    };
    // SAFETY: the msghdr, the iovecs and the buffers' bytes stay in (or
    // are owned by) the op's slot until its CQE has been reaped.
    let pushed = unsafe {
        sched.task().push_on(
            key,
            true,
            // SAFETY: counted once the key is checked, finished by the
            // op's completion.
            || sched.io_work_started(),
            |target| {
                if read {
                    Sqe::recvmsg(target, msg, 0)
                } else {
                    Sqe::sendmsg(target, msg, libc::MSG_NOSIGNAL as u32)
                }
                .user_data(o as u64)
            },
        )
    };
    pushed.map_err(|error| Rejected {
        error,
        // SAFETY: refused, the op was never queued: still ours; buffers
        // and handler move out once, then the slot is freed.
        handler: unsafe {
            let b = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).bufs)));
            let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
            sched.free_op_in(here, p);
            (b, h)
        },
    })
}
