//! Performing ready operations: Asio's `reactor_op`, `perform_io` and the
//! descriptor operation's completion.

use core::ptr::NonNull;

use pinion_core::backend::{Invoke, Sched};
use pinion_core::op::CompleteFn;
use pinion_core::{OpQueue, Operation};

use super::table::{DescriptorSlot, State};
use super::{Reactor, EXCEPT_OP, READ_OP, WRITE_OP};
use crate::stats::stat;

/// The events `perform_io` looks at for each queue.
const OP_EVENTS: [u32; super::MAX_OPS] = [
    libc::EPOLLIN as u32,
    libc::EPOLLOUT as u32,
    libc::EPOLLPRI as u32,
];

/// What one attempt at an operation achieved (Asio's `reactor_op::status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Would block; stays queued.
    NotDone,
    /// Completed (successfully or with an error).
    Done,
    /// Completed, and the descriptor has nothing more for now (a stream
    /// read or write that moved fewer bytes than asked): do not try the
    /// next operation of this type speculatively.
    DoneAndExhausted,
}

/// Performs an operation once on `fd`, writing its result slot.
///
/// # Safety
/// `op` is a live operation created for this function, not being
/// performed or completed concurrently (it is on a descriptor queue under
/// that descriptor's lock, or being started by its owner).
pub(crate) type PerformFn = unsafe fn(op: NonNull<ReactorOp>, reactor: &Reactor, fd: i32) -> Status;

/// The first attempt at an operation being started, known by type so
/// that `start_op` inlines it (a closure here was left out of line, one
/// call per message more).
pub(crate) trait FirstAttempt {
    /// Tries the operation once on `fd`, writing its result slot.
    fn attempt(self, fd: i32) -> Status;
}

/// The header of every socket operation (Asio's `reactor_op`): the
/// scheduler's operation header plus the perform function.
#[repr(C)]
pub(crate) struct ReactorOp {
    pub(crate) base: Operation,
    perform: PerformFn,
}

impl ReactorOp {
    pub(crate) const fn new(complete: CompleteFn, perform: PerformFn) -> Self {
        ReactorOp {
            base: Operation::new(complete),
            perform,
        }
    }

    /// # Safety
    /// As for [`PerformFn`].
    #[inline]
    unsafe fn perform(op: NonNull<ReactorOp>, reactor: &Reactor, fd: i32) -> Status {
        // SAFETY: `op` is live (contract); read the pointer, then call it
        // under the same contract.
        unsafe {
            let f = op.as_ref().perform;
            f(op, reactor, fd)
        }
    }
}

/// The descriptor operation's complete function (Asio's
/// `descriptor_state::do_complete` with `perform_io` and
/// `perform_io_cleanup_on_block_exit`).
///
/// # Safety
/// See [`CompleteFn`]: `op` is the header of a slot in the table of the
/// reactor of the scheduler `owner`.
pub(crate) unsafe fn descriptor_complete(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    // SAFETY: `owner` is the scheduler whose reactor queued this op.
    let sched = unsafe { &*(owner as *const Sched<Reactor>) };
    // SAFETY: descriptor ops are the first field of a table slot, which
    // lives as long as the reactor.
    let slot = unsafe { op.cast::<DescriptorSlot>().as_ref() };
    let mut completed = OpQueue::new();
    let mut first = None;
    {
        let mut l = slot.locked();
        let st = l.state();
        st.queued = false;
        if st.free_pending {
            st.free_pending = false;
            drop(l);
            sched.task().release_slot(slot);
        } else if how.is_run() {
            // The first completion runs inline below, the rest are
            // posted (kept apart: the usual case is exactly one).
            perform_io(sched.task(), st, |op| match first {
                None => first = Some(op),
                // SAFETY: performed and popped, live, on no queue.
                Some(_) => unsafe { completed.push(op) },
            });
        }
    }
    if !how.is_run() {
        return;
    }
    // From here the slot is not touched: a handler may close and free it.
    match first {
        Some(first) => {
            if !completed.is_empty() {
                // SAFETY: performed ops whose work `start_op` counted.
                unsafe { sched.post_deferred_completions(&mut completed) };
            }
            // SAFETY: `first` was performed, popped off its queue, and is
            // owned by `sched`; the scheduler counts its work as this
            // descriptor op's.
            unsafe { Operation::complete(first, owner, how) };
        }
        // No user op completed: make up for the work_finished the
        // scheduler makes for this op.
        // SAFETY: `how` came from this scheduler; the op being run is this
        // thread's, so a private count is settled with it.
        None => unsafe { sched.compensating_work_started_in(how.here()) },
    }
}

/// Asio's `perform_io`: except, write, then read queue; each type whose
/// events fired may be tried speculatively again. Every op that completed
/// goes to `done`, in that order.
#[inline(always)]
pub(crate) fn perform_io(
    reactor: &Reactor, st: &mut State, mut done: impl FnMut(NonNull<Operation>),
) {
    // Unrolled by hand: the compiler keeps the loop otherwise.
    perform_queue::<EXCEPT_OP>(reactor, st, &mut done);
    perform_queue::<WRITE_OP>(reactor, st, &mut done);
    perform_queue::<READ_OP>(reactor, st, &mut done);
}

/// `perform_io` for the queue of type `J`.
#[inline(always)]
fn perform_queue<const J: usize>(
    reactor: &Reactor, st: &mut State, done: &mut impl FnMut(NonNull<Operation>),
) {
    let any = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    if st.ready_events & (OP_EVENTS[J] | any) == 0 {
        return;
    }
    st.try_speculative[J] = true;
    while let Some(op) = st.queues[J].front() {
        stat!(reactor, op_attempts);
        // SAFETY: queued ops are live reactor ops; the slot is locked.
        let status = unsafe { ReactorOp::perform(op.cast(), reactor, st.fd) };
        if status == Status::NotDone {
            break;
        }
        st.queues[J].pop();
        done(op);
        if status == Status::DoneAndExhausted {
            st.exhausted(J);
            break;
        }
    }
}
