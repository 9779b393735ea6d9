//! Accepts, both ways, with the same back-pressure and order as epoll.
//!
//! - **Single-shot** (the default): one `IORING_OP_ACCEPT` in flight per
//!   listener, into a descriptor slot reserved before the SQE is queued;
//!   further `async_accept`s wait on the listener in the order they were
//!   started, and each completion issues the next. With the table full the
//!   accept completes with `PoolFull(Descriptors)` and the connection stays
//!   in the kernel's listen backlog, exactly as on epoll; the reserved slot
//!   becomes the new socket's when the accept succeeds.
//! - **Multishot** (`Options::multishot_accept`): a listener keeps one
//!   multishot accept armed while an `async_accept` waits. Connections it
//!   accepts with nobody waiting are registered in the descriptor table and
//!   queued on the listener; past a high-water mark the request is
//!   cancelled until the next `async_accept`. The kernel accepts before it
//!   asks, so a connection that finds the table full has to be closed
//!   (`Stats::accepts_dropped`): the price of one SQE for many accepts.

use core::cell::Cell;
use core::mem::ManuallyDrop;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::ptr::{addr_of, addr_of_mut, NonNull};

use pinion_core::backend::{
    AcceptHandler, At, DescKind, Fd, Invoke, Key, OpId, Operation, Started,
};
use pinion_core::{Error, OpQueue, Rejected, Result};
use pinion_sys::addr::RawAddr;
use pinion_sys::socket;
use pinion_sys::uring::abi::IOSQE_CQE_SKIP_SUCCESS;
use pinion_sys::uring::Sqe;

use crate::desc::{DescTable, NIL};
use crate::proactor::{stat, Proactor, Sched, TAG_ACCEPT, TAG_ZC, UD_IGNORE};

/// Accepted connections a listener holds for `async_accept` before its
/// multishot accept is stopped (until the next `async_accept`); the
/// kernel's listen queue holds the rest.
const ACCEPT_HIGH_WATER: usize = 16;

/// A listener's multishot accept state (under the descriptor's lock).
///
/// Connections the kernel accepted while nobody waited in `async_accept`
/// are registered in the descriptor table at once and queued here, linked
/// through their descriptors' `pending_next`.
pub(crate) struct ListenerState {
    /// A multishot accept is in the kernel.
    pub(crate) armed: bool,
    /// A single-shot accept is in the kernel (one at a time, in order).
    inflight: bool,
    cancel_sent: bool,
    waiters: OpQueue,
    pend_head: u32,
    pend_tail: u32,
    len: usize,
}

impl ListenerState {
    pub(crate) const fn new() -> Self {
        ListenerState {
            armed: false,
            inflight: false,
            cancel_sent: false,
            waiters: OpQueue::new(),
            pend_head: NIL,
            pend_tail: NIL,
            len: 0,
        }
    }

    fn push_pending(&mut self, descs: &DescTable, idx: u32) {
        let at = |i: u32| descs.at(i).expect("a table index");
        at(idx).pending_next.set(NIL);
        if self.pend_tail == NIL {
            self.pend_head = idx;
        } else {
            at(self.pend_tail).pending_next.set(idx);
        }
        self.pend_tail = idx;
        self.len += 1;
    }

    /// The oldest pending connection's index.
    pub(crate) fn pop_pending(&mut self, descs: &DescTable) -> Option<u32> {
        if self.pend_head == NIL {
            return None;
        }
        let idx = self.pend_head;
        self.pend_head = descs.at(idx).expect("a table index").pending_next.get();
        if self.pend_head == NIL {
            self.pend_tail = NIL;
        }
        self.len -= 1;
        Some(idx)
    }
}

/// Hands every parked accept to `aborted` with `OperationAborted`.
pub(crate) fn take_waiters(ls: &mut ListenerState, aborted: &mut OpQueue) {
    while let Some(w) = ls.waiters.pop() {
        // SAFETY: parked accept ops are live and their work counted.
        unsafe {
            w.as_ref().set_result(Err(Error::OperationAborted));
            aborted.push(w);
        }
    }
}

/// Where `queue_accept` put an accept.
enum Queued {
    /// Multishot: a connection was waiting; this is its key.
    Ready(Key),
    /// Waiting on the listener.
    Parked,
    /// Single-shot: issued as the listener's one accept in flight.
    Issued,
}

/// No slot reserved (`AcceptHdr::key`).
const NO_KEY: u64 = u64::MAX;

/// The start of every accept operation, the same for every handler type:
/// what the proactor needs to issue its SQE later (it may wait on the
/// listener first) and to hand its result on.
#[repr(C)]
pub(crate) struct AcceptHdr {
    op: Operation,
    /// The descriptor the accept fills: the slot reserved for a
    /// single-shot accept, or the one the reaper registered for a
    /// multishot one; [`NO_KEY`] before either. 64 bits on every target.
    key: Cell<u64>,
    /// The listener.
    listener: Key,
    multishot: bool,
    /// Written by the kernel (single-shot accept only).
    addr: RawAddr,
    addrlen: libc::socklen_t,
}

#[repr(C)]
struct AcceptOp<H> {
    hdr: AcceptHdr,
    handler: ManuallyDrop<H>,
}

fn unspecified() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is an `AcceptOp<H>` of the
/// scheduler `owner`.
unsafe fn complete_accept<H: AcceptHandler<Proactor>>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let p = op.cast::<AcceptOp<H>>();
    // SAFETY: `owner` is the scheduler that allocated the op.
    let sched = unsafe { &*(owner as *const Sched) };
    // SAFETY: `p` is live and ours; fields are read once, then the slot is
    // freed and never touched again.
    let (res, multishot, addr, key, listener, handler) = unsafe {
        let o = p.as_ptr();
        let h = &(*o).hdr;
        let addr = if h.multishot {
            None
        } else {
            h.addr.to_socket_addr().ok()
        };
        let r = (
            h.op.result(),
            h.multishot,
            addr,
            h.key.get(),
            h.listener,
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        );
        r.5.completing();
        sched.free_op_in(how.here(), p);
        r
    };
    let proactor = sched.task();
    let reserved = (!multishot && key != NO_KEY).then(|| Key::from_bits(key));
    match how {
        // A multishot result is already a registered descriptor, which the
        // context closes as it goes down.
        Invoke::Destroy => {
            if let (Ok(fd), Some(k)) = (res, reserved) {
                // SAFETY: the kernel gave this op a new fd, nobody else has it.
                drop(unsafe { Fd::from_raw(fd as i32) });
                proactor.unreserve_desc(k);
            } else if let Some(k) = reserved {
                proactor.unreserve_desc(k);
            }
        }
        Invoke::Run(_) => {
            let r = match (res, reserved) {
                (Ok(fd), Some(k)) => {
                    // SAFETY: the kernel gave this op a new fd.
                    let fd = unsafe { Fd::from_raw(fd as i32) };
                    proactor.open_reserved(k, fd, DescKind::Stream)
                }
                (Ok(_), None) => Ok(Key::from_bits(key)),
                (Err(e), k) => {
                    if let Some(k) = k {
                        proactor.unreserve_desc(k);
                    }
                    Err(e)
                }
            };
            let r = r.map(|k| {
                let addr = addr
                    .or_else(|| {
                        proactor
                            .with_desc_fd(k, |fd| Ok(socket::peer_addr(fd)?))
                            .ok()
                    })
                    .unwrap_or_else(unspecified);
                (k, addr)
            });
            if !multishot {
                // The next accept waiting on the listener goes to the kernel.
                proactor.accept_done(sched, listener);
            }
            handler.call(sched, r)
        }
    }
}

/// `Backend::accept`: one accept on listener `key`.
pub(crate) fn start<H: AcceptHandler<Proactor>>(at: At<'_, Proactor>, handler: H) -> Started<H> {
    let (sched, key) = (at.sched, at.key);
    let proactor = sched.task();
    let multishot = proactor.info.multishot_accept;
    let op = AcceptOp {
        hdr: AcceptHdr {
            op: Operation::new(complete_accept::<H>),
            key: Cell::new(NO_KEY),
            listener: key,
            multishot,
            addr: RawAddr::zeroed(),
            addrlen: RawAddr::CAPACITY,
        },
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler; the slot is freed by
    // `complete_accept` or below, once.
    let p = unsafe {
        sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
    }?;
    // SAFETY: ours, not yet visible to anyone.
    unsafe { (*addr_of_mut!((*p.as_ptr()).handler)).bind(OpId::new(p.cast())) };
    // SAFETY: a live accept op on no queue, an `AcceptHdr` at offset 0.
    let queued = unsafe { proactor.queue_accept(sched, key, p.cast()) };
    queued.map_err(|error| Rejected {
        error,
        // SAFETY: refused, the op was never queued: still ours; the handler
        // moves out once, then the slot is freed.
        handler: unsafe {
            let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*p.as_ptr()).handler)));
            sched.free_op_in(here, p);
            h
        },
    })
}

impl Proactor {
    /// Arms listener `idx`'s multishot accept. Called under the listener's
    /// lock with the socket open, so no close can come between
    /// (`close_desc` needs that lock to retire the key).
    fn arm_accept(&self, key: Key) {
        // SAFETY: a multishot accept carries no pointer; its descriptor slot
        // is not reused before its final CQE (`DescState::holds`).
        let armed = unsafe {
            self.push_on(
                key,
                true,
                || {},
                |t| {
                    Sqe::accept_multishot(t, libc::SOCK_CLOEXEC)
                        .user_data(((key.index() as u64) << 4) | TAG_ACCEPT)
                },
            )
        };
        debug_assert!(armed.is_ok(), "an open listener refused its accept");
    }

    /// One CQE of a listener's multishot accept. An accepted connection is
    /// registered in the descriptor table here, then handed to the oldest
    /// waiting `async_accept` or queued on the listener.
    pub(crate) fn on_accept(
        &self, idx: u32, res: i32, more: bool, shutting_down: bool, ops: &mut OpQueue,
    ) {
        let d = self.descs.at(idx).expect("a table index");
        let mut close_fd = None;
        let free = d.with(|st| {
            let ls = &mut st.listener;
            if !more {
                ls.armed = false;
                ls.cancel_sent = false;
            }
            let outcome = if res >= 0 {
                // SAFETY: the kernel gave us this new fd.
                let fd = unsafe { Fd::from_raw(res) };
                if !st.open {
                    close_fd = Some(fd);
                    None
                } else {
                    match self.open_desc(fd, DescKind::Stream) {
                        Ok(k) => Some(Ok(k)),
                        Err(e) => {
                            stat!(self, accepts_dropped);
                            Some(Err(e))
                        }
                    }
                }
            } else if res != -libc::ECANCELED && st.open {
                Some(Err(Error::from_errno(pinion_sys::Errno(-res))))
            } else {
                None
            };
            match (outcome, ls.waiters.pop()) {
                (Some(r), Some(w)) => {
                    // SAFETY: waiters are live accept ops (an `AcceptHdr`
                    // at offset 0), their work counted, now off the list.
                    unsafe {
                        if let Ok(k) = r {
                            w.cast::<AcceptHdr>().as_ref().key.set(k.to_bits());
                        }
                        w.as_ref().set_result(r.map(|_| 0));
                        ops.push(w);
                    }
                }
                (Some(Ok(k)), None) => ls.push_pending(&self.descs, k.index()),
                // An error with nobody waiting: the next accept re-arms and
                // meets the condition again if it persists.
                (_, Some(w)) => {
                    // SAFETY: `w` was popped just above and is live.
                    unsafe { ls.waiters.push_front(w) }
                }
                _ => {}
            }
            if more
                && ls.armed
                && ls.waiters.is_empty()
                && ls.len >= ACCEPT_HIGH_WATER
                && !ls.cancel_sent
            {
                ls.cancel_sent = true;
                let e = Sqe::cancel_user_data(((idx as u64) << 4) | TAG_ACCEPT)
                    .with_flags(IOSQE_CQE_SKIP_SUCCESS)
                    .user_data(UD_IGNORE);
                // SAFETY: a cancel carries no pointer.
                unsafe { self.push(&e, false) };
            }
            if !more && !st.open {
                // Closed while armed: the close counted this CQE as a hold.
                return true;
            }
            if !more && st.open && !shutting_down && !ls.waiters.is_empty() {
                ls.armed = true;
                if let Some(k) = self.descs.key_of(idx) {
                    self.arm_accept(k);
                }
            }
            false
        });
        drop(close_fd);
        if free {
            self.release_hold(idx);
        }
    }

    /// Queues accept `op` on listener `key`. Multishot: completed from the
    /// listener's accepted connections if one waits, else parked until the
    /// multishot accept delivers one (armed if it is not). Single-shot:
    /// issued now if no accept of the listener is in flight, else parked in
    /// order. A stale key is `BadDescriptor`, the op untouched and still the
    /// caller's.
    ///
    /// # Safety
    /// `op` is a live accept operation (an `AcceptHdr` at offset 0) on no
    /// queue, of `sched`'s pool.
    unsafe fn queue_accept(&self, sched: &Sched, key: Key, op: NonNull<Operation>) -> Result<()> {
        let d = self.desc(key)?;
        // SAFETY: per contract.
        let multishot = unsafe { op.cast::<AcceptHdr>().as_ref().multishot };
        let ready = d.with(|st| {
            if !st.open || self.descs.gen(key.index()) != Some(key.gen()) {
                return Err(Error::BadDescriptor);
            }
            // SAFETY: counted once, finished by the op's completion.
            unsafe { sched.io_work_started() };
            let ls = &mut st.listener;
            if multishot {
                if let Some(k) = ls
                    .pop_pending(&self.descs)
                    .and_then(|i| self.descs.key_of(i))
                {
                    return Ok(Queued::Ready(k));
                }
            } else if !ls.inflight {
                ls.inflight = true;
                // Issued under the listener's lock, so that `cancel_op`,
                // which takes it too, finds the accept either parked or in
                // the SQ, never in between.
                // SAFETY: per contract; its work is counted.
                unsafe { self.issue_accept(sched, key, op) };
                return Ok(Queued::Issued);
            }
            // SAFETY: per contract.
            unsafe { ls.waiters.push(op) };
            if multishot && !ls.armed {
                ls.armed = true;
                ls.cancel_sent = false;
                self.arm_accept(key);
            }
            Ok(Queued::Parked)
        })?;
        match ready {
            Queued::Ready(k) => {
                // SAFETY: per contract; the op is on no queue, its work
                // counted.
                unsafe {
                    op.cast::<AcceptHdr>().as_ref().key.set(k.to_bits());
                    op.as_ref().set_result(Ok(0));
                    sched.post_deferred_completion(op);
                }
            }
            Queued::Parked | Queued::Issued => {}
        }
        Ok(())
    }

    /// Issues single-shot accept `op` on listener `key` into a freshly
    /// reserved slot; with the table full, completes it with
    /// `PoolFull(Descriptors)` (the connection stays in the backlog) and
    /// moves on to the next waiting accept.
    ///
    /// # Safety
    /// `op` is a live accept op on no queue, its work counted, and it is
    /// the listener's accept in flight (`ListenerState::inflight`).
    unsafe fn issue_accept(&self, sched: &Sched, key: Key, op: NonNull<Operation>) {
        let h = op.cast::<AcceptHdr>().as_ptr();
        let reserved = match self.reserve_desc() {
            Ok(k) => k,
            Err(e) => {
                // SAFETY: per contract.
                unsafe {
                    op.as_ref().set_result(Err(e));
                    sched.post_deferred_completion(op);
                }
                return;
            }
        };
        // SAFETY: ours until pushed; `addr`/`addrlen` live in the op's slot,
        // which stays allocated until the CQE has been reaped.
        let pushed = unsafe {
            (*h).key.set(reserved.to_bits());
            self.push_on(
                key,
                true,
                || {},
                |target| {
                    Sqe::accept(
                        target,
                        (*h).addr.as_mut_ptr(),
                        addr_of_mut!((*h).addrlen),
                        libc::SOCK_CLOEXEC,
                    )
                    .user_data(h as u64)
                },
            )
        };
        if let Err(e) = pushed {
            // Closed meanwhile: the close took the other waiters already.
            // SAFETY: per contract; never queued in the kernel.
            unsafe {
                (*h).key.set(NO_KEY);
                self.unreserve_desc(reserved);
                op.as_ref().set_result(Err(e));
                sched.post_deferred_completion(op);
            }
        }
    }

    /// A single-shot accept of listener `key` completed: issue the next one
    /// waiting, if the listener is still open.
    fn accept_done(&self, sched: &Sched, key: Key) {
        let Ok(d) = self.desc(key) else { return };
        d.with(|st| {
            let ls = &mut st.listener;
            let next = if st.open && self.descs.gen(key.index()) == Some(key.gen()) {
                ls.waiters.pop()
            } else {
                None
            };
            ls.inflight = next.is_some();
            if let Some(op) = next {
                // Under the listener's lock, as in `queue_accept`.
                // SAFETY: a parked accept op, off the list, its work
                // counted; now the listener's accept in flight.
                unsafe { self.issue_accept(sched, key, op) };
            }
        });
    }

    /// `Backend::cancel_op` for any operation on `key`: a parked accept
    /// leaves its listener's queue and completes with `OperationAborted`;
    /// anything else is asked of the kernel (`IORING_OP_ASYNC_CANCEL` by
    /// its `user_data`: the op's address with the tag its kind was
    /// submitted with, which `op` carries, e.g. a pooled read's). Both
    /// under the descriptor's lock, which accepts are issued under, so a
    /// single-shot accept is found parked or already in the SQ ahead of
    /// the cancel.
    ///
    /// # Safety
    /// As for `Backend::cancel_op`: `op` is still that operation's slot,
    /// so the cancel cannot reach another one (a reused slot's new SQE
    /// would be queued after this cancel).
    pub(crate) unsafe fn cancel_one(&self, sched: &Sched, key: Key, id: OpId) {
        let Ok(d) = self.desc(key) else { return };
        let op = id.as_ptr();
        // What the op's SQE carried: its address and its kind's tag.
        let user_data = op.as_ptr() as u64 | id.tag() as u64;
        d.with(|st| {
            if !st.open || self.descs.gen(key.index()) != Some(key.gen()) {
                return;
            }
            if st.listener.waiters.remove(op) {
                // SAFETY: a parked accept: live, its work counted, now on
                // no queue.
                unsafe {
                    op.as_ref().set_result(Err(Error::OperationAborted));
                    sched.post_deferred_completion(op);
                }
                return;
            }
            #[cfg(feature = "fault-injection")]
            self.cancelled.note(user_data);
            // SAFETY: a cancel carries no pointer; its CQE is ignored.
            let _ = unsafe {
                self.push_on(
                    key,
                    false,
                    || {},
                    |_| Sqe::cancel_user_data(user_data).user_data(UD_IGNORE),
                )
            };
            if self.zc_min != u32::MAX {
                // A write may have gone out as a zero-copy send, whose
                // user_data is tagged. A cancel that finds nothing is
                // harmless; one after the result leaves the write waiting
                // for its notification (the buffer stays with it).
                // SAFETY: as above.
                let _ = unsafe {
                    self.push_on(
                        key,
                        false,
                        || {},
                        |_| Sqe::cancel_user_data(op.as_ptr() as u64 | TAG_ZC).user_data(UD_IGNORE),
                    )
                };
            }
        });
    }
}
