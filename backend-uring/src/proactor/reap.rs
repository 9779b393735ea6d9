//! Reaping: the CQ, read in place by the one thread running the task, and
//! what each CQE hands on.

use core::ptr::NonNull;

use pinion_core::{Error, OpQueue, Operation};
use pinion_sys::uring::abi::IORING_CQE_F_BUFFER;
use pinion_sys::uring::{cqe_more, cqe_notif, Cqe};

use super::{
    stat, Proactor, RunnerState, TAG_ACCEPT, TAG_MASK, TAG_OP, TAG_POOLED, TAG_ZC, UD_INTERRUPT,
};
use crate::bufs::PooledHdr;

/// Stores a negative CQE result as the error, out of the reaping loop.
#[cold]
#[inline(never)]
fn set_errno_result(op: &Operation, res: i32) {
    op.set_result(Err(Error::from_errno(pinion_sys::Errno(-res))))
}

impl Proactor {
    /// Reaps every CQE, handing completed operations to `ops`. Runner
    /// only. Returns how many CQEs were reaped.
    #[inline(always)]
    pub(crate) fn reap(&self, rs: &mut RunnerState, ops: &mut OpQueue) -> usize {
        // CQEs a fault schedule held back on an earlier pass come first.
        #[cfg(feature = "fault-injection")]
        let late = self.release_held(rs, ops);
        #[cfg(not(feature = "fault-injection"))]
        let late = 0;
        // SAFETY: runner only (as `reap_some`).
        if unsafe { self.cq.head() } == self.cq.tail() {
            // An empty CQ (often, before the wait) costs no call.
            return late;
        }
        late + self.reap_some(rs, ops)
    }

    /// [`reap`](Self::reap) when the CQ holds something.
    #[inline(never)]
    fn reap_some(&self, rs: &mut RunnerState, ops: &mut OpQueue) -> usize {
        let cq = &self.cq;
        let entries = cq.entries();
        // Completed operations gather here (in registers) and join `ops`
        // in one splice, in CQ order.
        let mut local = OpQueue::new();
        let mut internal = 0usize;
        let mut n = 0usize;
        // CQEs a fault schedule held back (`faults`).
        #[cfg(feature = "fault-injection")]
        let mut held = 0usize;
        #[cfg(not(feature = "fault-injection"))]
        let held = 0usize;
        // SAFETY: only the thread running the task (one at a time) or
        // shutdown reaps; each entry is read, through a pointer inside the
        // stretch `run` gave, before the head passes it.
        unsafe {
            let mut head = cq.head();
            loop {
                let tail = cq.tail();
                if head == tail {
                    break;
                }
                crate::tsan::reaping();
                n += tail.wrapping_sub(head) as usize;
                while head != tail {
                    // One stretch of the array at a time (two when the
                    // published entries wrap), walked by pointer.
                    let (mut p, len) = entries.run(head, tail);
                    head = head.wrapping_add(len);
                    let end = p.add(len as usize);
                    while p != end {
                        let cqe = *p;
                        p = p.add(1);
                        #[cfg(feature = "fault-injection")]
                        let Some(cqe) = self.fault_cqe(rs, cqe) else {
                            held += 1;
                            continue;
                        };
                        if cqe.user_data & TAG_MASK == TAG_OP {
                            // SAFETY: a TAG_OP user_data is a live operation
                            // that waits for exactly this CQE and is on no
                            // queue (push's contract).
                            local.push(Self::op_cqe(cqe));
                        } else if cqe.user_data & TAG_MASK == TAG_POOLED {
                            // SAFETY: as for TAG_OP, the op being a pooled read.
                            local.push(self.pooled_cqe(cqe));
                        } else if cqe.user_data & TAG_MASK == TAG_ZC {
                            // SAFETY: a zero-copy write waiting for this CQE
                            // (and, until its last, for more).
                            match self.zc_cqe(cqe) {
                                Some(op) => local.push(op),
                                // Not its final CQE: not a completion.
                                None => internal += 1,
                            }
                        } else {
                            internal += 1;
                            // Keep CQ order: what came before goes first.
                            ops.push_queue(&mut local);
                            self.dispatch_internal(rs, cqe.user_data, cqe.res, cqe.flags, ops);
                        }
                    }
                }
                cq.set_head(head);
            }
        }
        ops.push_queue(&mut local);
        let done = (n - internal - held) as u64;
        rs.completed += done;
        stat!(self, ops_completed, done);
        stat!(self, cqes_reaped, n);
        n
    }

    /// A user operation's CQE: its result, stored in the operation.
    ///
    /// # Safety
    /// `cqe.user_data` is a `TAG_OP` operation that waits for exactly this
    /// CQE and is on no queue (push's contract).
    #[inline(always)]
    pub(crate) unsafe fn op_cqe(cqe: Cqe) -> NonNull<Operation> {
        let op = cqe.user_data as *mut Operation;
        // SAFETY: per contract, `op` is live and ours until queued.
        unsafe {
            if cqe.res >= 0 {
                (*op).set_result(Ok(cqe.res as usize));
            } else {
                set_errno_result(&*op, cqe.res);
            }
            NonNull::new_unchecked(op)
        }
    }

    /// A pooled read's CQE: its result, and its flags (the buffer the
    /// kernel picked, now out of the ring and owned by the operation).
    ///
    /// # Safety
    /// `cqe.user_data` is a `TAG_POOLED` pooled read that waits for
    /// exactly this CQE and is on no queue (push's contract).
    #[inline]
    pub(crate) unsafe fn pooled_cqe(&self, cqe: Cqe) -> NonNull<Operation> {
        let op = (cqe.user_data & !TAG_MASK) as *mut PooledHdr;
        // SAFETY: per contract, `op` is live and ours until queued.
        unsafe {
            if cqe.res >= 0 {
                (*op).op.set_result(Ok(cqe.res as usize));
            } else {
                set_errno_result(&(*op).op, cqe.res);
            }
            (*op).cqe_flags.set(cqe.flags);
        }
        if cqe.flags & IORING_CQE_F_BUFFER != 0 {
            if let Some(b) = &self.read_bufs {
                b.picked_by_kernel();
            }
        }
        // SAFETY: `op` came from a non-null user_data.
        unsafe { NonNull::new_unchecked(op.cast()) }
    }

    /// A CQE of a zero-copy write: the first stores the result; the last
    /// (the notification, or a first one without `IORING_CQE_F_MORE`
    /// when the kernel never took the pages) hands the operation on. Out
    /// of line: zero-copy writes are large, so rare per byte.
    ///
    /// # Safety
    /// `cqe.user_data` is a `TAG_ZC` write that waits for this CQE and is
    /// on no queue (push's contract); after its result it waits for its
    /// notification, still on no queue.
    #[inline(never)]
    unsafe fn zc_cqe(&self, cqe: Cqe) -> Option<NonNull<Operation>> {
        let op = (cqe.user_data & !TAG_MASK) as *mut Operation;
        if cqe_notif(cqe.flags) {
            stat!(self, zc_notifs);
            // The result came with the first CQE; the kernel is done with
            // the buffer now.
            // SAFETY: `op` came from a non-null user_data.
            return Some(unsafe { NonNull::new_unchecked(op) });
        }
        // SAFETY: per contract, `op` is live and ours until queued.
        unsafe {
            if cqe.res >= 0 {
                (*op).set_result(Ok(cqe.res as usize));
            } else {
                set_errno_result(&*op, cqe.res);
            }
        }
        if cqe_more(cqe.flags) {
            return None;
        }
        // SAFETY: as above.
        Some(unsafe { NonNull::new_unchecked(op) })
    }

    /// A CQE of one of the proactor's own requests (rare: cold, so the
    /// reaping loop tests for a user operation first).
    #[cold]
    #[inline(never)]
    fn dispatch_internal(
        &self, rs: &mut RunnerState, ud: u64, res: i32, flags: u32, ops: &mut OpQueue,
    ) {
        match ud & TAG_MASK {
            TAG_ACCEPT => {
                let more = cqe_more(flags);
                if !more {
                    rs.completed += 1;
                }
                self.on_accept((ud >> 4) as u32, res, more, rs.shutting_down, ops);
            }
            UD_INTERRUPT => {
                rs.completed += 1;
                rs.rearm_interrupter = !rs.shutting_down;
            }
            _ => {}
        }
    }
}
