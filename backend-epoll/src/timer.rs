//! [`SteadyTimer`]: Asio's `steady_timer` on the reactor's timerfd.
//!
//! A timer object has an expiry and any number of pending waits. While it
//! has waits it holds one entry in the reactor's deadline heap (Asio's
//! `per_timer_data`); the timerfd is armed to the earliest entry. Changing
//! the expiry or cancelling completes every pending wait with
//! `OperationAborted`.

use core::mem::ManuallyDrop;
use core::ptr::{self, addr_of, NonNull};
use core::time::Duration;

use pinion_core::{Invoke, Operation, Rejected, Result, Task};

use crate::stats::stat;
use crate::IoContext;

/// A timer object in the context's table (a `Copy` handle).
#[derive(Clone, Copy)]
pub struct SteadyTimer<'c> {
    ctx: &'c IoContext,
    index: u32,
    gen: u32,
}

/// A pending wait: header plus handler, in one operation slot.
#[repr(C)]
struct WaitOp<F> {
    header: Operation,
    handler: ManuallyDrop<F>,
}

impl<'c> SteadyTimer<'c> {
    /// A timer with no wait pending, already expired (expiry 0) until set.
    /// `PoolExhausted` when the context's `timers` are all open.
    pub fn new(ctx: &'c IoContext) -> Result<Self> {
        let (index, gen) = ctx.task().timer_open()?;
        Ok(SteadyTimer { ctx, index, gen })
    }

    /// Sets the expiry to now + `d`, cancelling pending waits (they get
    /// `OperationAborted`). Returns how many were cancelled.
    pub fn expires_after(&self, d: Duration) -> usize {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.expires_at(self.ctx.task().now_ns().saturating_add(d))
    }

    /// Sets the expiry to `deadline_ns` on the context's monotonic clock
    /// (`ctx.task().now_ns()`), cancelling pending waits. Returns how many
    /// were cancelled.
    pub fn expires_at(&self, deadline_ns: u64) -> usize {
        self.ctx
            .task()
            .timer_cancel(self.ctx, self.index, self.gen, Some(deadline_ns))
    }

    /// Waits for the expiry: `Ok(())` when it passes, `OperationAborted`
    /// when cancelled. `BadDescriptor` (handler handed back) once closed.
    pub fn async_wait<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<()>) + Send + 'static,
    {
        let op = WaitOp {
            header: Operation::new(complete_wait::<F>),
            handler: ManuallyDrop::new(handler),
        };
        let op = self
            .ctx
            .alloc_op_or_reject(op, |op| ManuallyDrop::into_inner(op.handler))?;
        match self
            .ctx
            .task()
            .timer_wait(self.ctx, self.index, self.gen, op.cast())
        {
            Ok(()) => Ok(()),
            Err((error, _)) => {
                // SAFETY: handed back unqueued; read once, then freed.
                let handler = unsafe {
                    let h = ManuallyDrop::into_inner(ptr::read(addr_of!((*op.as_ptr()).handler)));
                    self.ctx.free_op(op);
                    h
                };
                Err(Rejected { error, handler })
            }
        }
    }

    /// Cancels every pending wait; returns how many.
    pub fn cancel(&self) -> usize {
        self.ctx
            .task()
            .timer_cancel(self.ctx, self.index, self.gen, None)
    }

    /// Cancels every pending wait and releases the timer object.
    pub fn close(&self) {
        self.ctx.task().timer_close(self.ctx, self.index, self.gen)
    }
}

/// # Safety
/// See [`CompleteFn`](pinion_core::op::CompleteFn); `op` is a `WaitOp<F>`
/// from the pool of the context `owner`.
unsafe fn complete_wait<F: FnOnce(Result<()>) + Send + 'static>(
    op: NonNull<Operation>,
    owner: *const (),
    how: Invoke<'_>,
) {
    let p = op.cast::<WaitOp<F>>();
    // SAFETY: `owner` is the context that allocated `op`.
    let ctx = unsafe { &*(owner as *const IoContext) };
    // SAFETY: live and dequeued; the handler is moved out once, then the
    // slot is freed.
    let (r, handler) = unsafe {
        let r = op.as_ref().result();
        let h = ManuallyDrop::into_inner(ptr::read(addr_of!((*p.as_ptr()).handler)));
        ctx.free_op_in(how.here(), p);
        (r, h)
    };
    if how.is_run() {
        stat!(ctx.task(), ops_completed);
        handler(r.map(drop));
    }
}
