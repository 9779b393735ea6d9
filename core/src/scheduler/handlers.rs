//! Posted handlers: `post`, `dispatch`, `defer`, and the operation that
//! carries a closure.

use core::mem::ManuallyDrop;
use core::ptr::{self, addr_of, NonNull};

use pinion_sync::SyncKit;

use super::Scheduler;
use crate::backend::Task;
use crate::op::{Invoke, Operation};
use crate::Rejected;

/// What a posted handler operation runs once: a closure, or a value with
/// the function to call on it ([`Bound`], which a refused post can hand
/// back as the bare value).
pub(crate) trait Runnable: Send + 'static {
    fn run(self);
}

impl<F: FnOnce() + Send + 'static> Runnable for F {
    #[inline(always)]
    fn run(self) {
        self()
    }
}

/// `run(value)`, queued without a closure.
pub(crate) struct Bound<V> {
    pub(crate) value: V,
    pub(crate) run: fn(V),
}

impl<V: Send + 'static> Runnable for Bound<V> {
    #[inline(always)]
    fn run(self) {
        (self.run)(self.value)
    }
}

/// A posted handler: header plus the closure, inline in one slot.
#[repr(C)]
pub(crate) struct HandlerOp<F> {
    pub(crate) header: Operation,
    pub(crate) handler: ManuallyDrop<F>,
}

impl<T: Task, K: SyncKit> Scheduler<T, K> {
    /// Queues `handler` to run on a thread inside `run`; never runs it
    /// inline. Hands it back with `PoolFull(Ops)` when no slot is free.
    #[inline]
    pub fn post<F>(&self, handler: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.post_runnable(handler)
    }

    /// The one way a handler operation is made and queued (`post`, and
    /// `compose::post_value`).
    #[inline]
    pub(crate) fn post_runnable<F: Runnable>(&self, handler: F) -> Result<(), Rejected<F>> {
        let op = HandlerOp {
            header: Operation::new(complete_handler::<F, T, K>),
            handler: ManuallyDrop::new(handler),
        };
        let here = self.here();
        // SAFETY: a Here of this scheduler.
        let p = unsafe {
            self.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
        }?;
        // SAFETY: a fresh operation whose complete function expects this
        // scheduler as owner; `here` is this scheduler's.
        unsafe { self.post_immediate_completion_in(here, p.cast()) };
        Ok(())
    }

    /// Runs `handler` now if the calling thread is inside `run`, otherwise
    /// posts it.
    #[inline]
    pub fn dispatch<F>(&self, handler: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if self.running_in_this_thread() {
            handler();
            Ok(())
        } else {
            self.post(handler)
        }
    }

    /// Posts `handler` as a continuation of the current one (Asio's
    /// `defer`). pinion's `post` already queues privately from inside
    /// `run`, so the two behave alike.
    #[inline]
    pub fn defer<F>(&self, handler: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.post(handler)
    }
}

/// Completion of a posted handler: move the closure out, free the slot so
/// the handler's own posts can reuse it, then run or drop the closure.
///
/// # Safety
/// See [`CompleteFn`](crate::op::CompleteFn).
pub(crate) unsafe fn complete_handler<F: Runnable, T: Task, K: SyncKit>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let op = op.cast::<HandlerOp<F>>();
    // SAFETY: `op` is a live HandlerOp<F> (this function was stored in its
    // header by `post::<F>`), read once, then its slot is freed.
    let handler = unsafe { ManuallyDrop::into_inner(ptr::read(addr_of!((*op.as_ptr()).handler))) };
    // SAFETY: `owner` is the Scheduler<T, K> that allocated `op`.
    let sched = unsafe { &*(owner as *const Scheduler<T, K>) };
    // SAFETY: the value was moved out above; freed once; `how` comes
    // from this scheduler.
    unsafe { sched.free_op_in(how.here(), op) };
    if how.is_run() {
        handler.run();
    }
}
