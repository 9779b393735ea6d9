//! `SteadyTimer`: Asio's `basic_waitable_timer` on the proactor's timer
//! queue (a deadline heap under a mutex, checked after every wait; the
//! wait's time-out is the earliest deadline).

use core::mem::ManuallyDrop;
use core::ptr::{addr_of, NonNull};
use core::time::Duration;

use pinion_core::{Invoke, Operation, Rejected, Result, Task};

use crate::proactor::{Sched, WaitHdr};
use crate::IoContext;

/// A timer object: an expiry and any number of pending waits. `Copy`: a
/// handle into the context's timer table; a closed handle's waits are
/// refused with `BadDescriptor`.
#[derive(Clone, Copy)]
pub struct SteadyTimer<'c> {
    ctx: &'c IoContext,
    index: u32,
    gen: u32,
}

#[repr(C)]
struct WaitOp<F> {
    hdr: WaitHdr,
    handler: ManuallyDrop<F>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `WaitOp<F>`.
unsafe fn complete_wait<F: FnOnce(Result<()>) + Send + 'static>(
    op: NonNull<Operation>,
    owner: *const (),
    how: Invoke<'_>,
) {
    let p = op.cast::<WaitOp<F>>();
    // SAFETY: `p` is live and ours; fields read once, then freed.
    let (res, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).hdr.op.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        handler(res.map(drop))
    }
}

impl<'c> SteadyTimer<'c> {
    /// A timer with no wait pending (its expiry is in the past).
    pub fn new(ctx: &'c IoContext) -> Result<Self> {
        let (index, gen) = ctx.proactor().timer_new()?;
        Ok(SteadyTimer { ctx, index, gen })
    }

    /// Sets the expiry `d` from now; pending waits complete with
    /// `OperationAborted`. Returns how many were cancelled.
    pub fn expires_after(&self, d: Duration) -> usize {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.expires_at(self.ctx.proactor().now_ns().saturating_add(ns))
    }

    /// Sets the expiry to `deadline_ns` on the context's clock
    /// (`ctx.task().now_ns()`); cancels pending waits.
    pub fn expires_at(&self, deadline_ns: u64) -> usize {
        self.ctx
            .proactor()
            .timer_reset(self.ctx, self.index, self.gen, Some(deadline_ns), false)
    }

    /// Waits for the expiry: `Ok(())` when it passes, `OperationAborted`
    /// when cancelled.
    pub fn async_wait<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<()>) + Send + 'static,
    {
        let sched: &Sched = self.ctx;
        let op = WaitOp {
            hdr: WaitHdr::new(Operation::new(complete_wait::<F>)),
            handler: ManuallyDrop::new(handler),
        };
        let here = sched.here();
        // SAFETY: `here` came from this scheduler.
        let p = unsafe {
            sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
        }?;
        // SAFETY: a fresh wait op on no queue; `here` is this scheduler's.
        match unsafe {
            self.ctx
                .proactor()
                .timer_wait(sched, here, self.index, self.gen, p.cast())
        } {
            Ok(()) => Ok(()),
            Err(error) => {
                // SAFETY: not queued (timer_wait's contract): the op is
                // still ours; move the handler out and free the slot
                // (`here` is this scheduler's).
                let handler = unsafe {
                    let h =
                        ManuallyDrop::into_inner(core::ptr::read(addr_of!((*p.as_ptr()).handler)));
                    sched.free_op_in(here, p);
                    h
                };
                Err(Rejected { error, handler })
            }
        }
    }

    /// Cancels every pending wait; returns how many.
    pub fn cancel(&self) -> usize {
        self.ctx
            .proactor()
            .timer_reset(self.ctx, self.index, self.gen, None, false)
    }

    /// Cancels pending waits and releases the timer object.
    pub fn close(&self) {
        self.ctx
            .proactor()
            .timer_reset(self.ctx, self.index, self.gen, None, true);
    }
}
