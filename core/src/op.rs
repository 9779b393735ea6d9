//! The operation header every queued piece of work starts with.
//!
//! As in Asio's `scheduler_operation`, one function pointer serves both to
//! run and to destroy an operation: no vtable, no box. The header sits at
//! offset 0 (`#[repr(C)]`) of each concrete operation, so a pointer to the
//! header is a pointer to the whole.
//!
//! ```text
//!   alloc slot ──► write header + handler ──► push on a queue
//!                                               │
//!          ┌────────────────────────────────────┤
//!          ▼                                    ▼
//!   complete(op, owner, Run)            complete(op, owner, Destroy)
//!   move handler out, free slot,        drop handler (and any buffer)
//!   then call the handler               free slot, never call it
//! ```
//!
//! Exactly one of the two calls ends every operation's life; after it the
//! header's memory belongs to its pool again.

use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::scheduler::Here;
use crate::Error;

/// What an operation's result slot holds: bytes transferred (or ready
/// events, for a reactor's descriptor operation), or the error.
pub type OpResult = Result<usize, Error>;

/// Whether [`Operation::complete`] runs the handler or only destroys it.
#[derive(Clone, Copy, Debug)]
pub enum Invoke<'a> {
    /// Run the handler with the result, then free the operation. Called
    /// only by a thread inside the owning scheduler's `run`, whose private
    /// state comes along so the function can free its slot and start the
    /// next operation without looking the thread up.
    Run(Here<'a>),
    /// Drop the handler without running it and free the operation
    /// (context shutdown or destruction).
    Destroy,
}

impl Invoke<'_> {
    /// `true` for [`Invoke::Run`].
    #[inline(always)]
    pub fn is_run(&self) -> bool {
        matches!(self, Invoke::Run(_))
    }

    /// The run thread, when running.
    #[inline(always)]
    pub fn here(&self) -> Option<Here<'_>> {
        match *self {
            Invoke::Run(h) => Some(h),
            Invoke::Destroy => None,
        }
    }
}

/// The type-erased completion function.
///
/// `owner` is the scheduler the operation belongs to, as the concrete type
/// the function was instantiated with; it is what lets the function return
/// the operation's memory to the right pool.
///
/// # Safety
/// `op` points to a live, dequeued operation created for exactly this
/// function, `owner` to the scheduler that owns its memory; each operation
/// is completed at most once.
pub type CompleteFn = unsafe fn(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>);

/// The header at offset 0 of every operation.
#[repr(C)]
pub struct Operation {
    /// Intrusive link; owned by whichever [`OpQueue`](crate::OpQueue) holds
    /// the operation.
    pub(crate) next: Cell<*mut Operation>,
    func: CompleteFn,
    result: Cell<OpResult>,
}

impl Operation {
    /// A header that will be completed by `func`.
    pub const fn new(func: CompleteFn) -> Self {
        Operation {
            next: Cell::new(ptr::null_mut()),
            func,
            result: Cell::new(Ok(0)),
        }
    }

    /// The result slot, as set by whoever performed the operation.
    #[inline]
    pub fn result(&self) -> OpResult {
        self.result.get()
    }

    /// Sets the result slot.
    #[inline]
    pub fn set_result(&self, r: OpResult) {
        self.result.set(r)
    }

    /// Replaces the completion function (a composed or reactor operation
    /// that changes phase).
    #[inline]
    pub fn set_func(&mut self, func: CompleteFn) {
        self.func = func;
    }

    /// Runs or destroys the operation.
    ///
    /// # Safety
    /// `op` is live and on no queue; `owner` is the scheduler its function
    /// expects; after this call `op` must not be touched again.
    #[inline]
    pub unsafe fn complete(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>) {
        // SAFETY: the caller guarantees `op` is live; reading the function
        // pointer before the call, which may free `op`.
        let func = unsafe { op.as_ref().func };
        // SAFETY: forwarded from this function's contract.
        unsafe { func(op, owner, how) }
    }
}
