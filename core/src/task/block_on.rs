//! `block_on`: run the scheduler on this thread until one future is done.
//!
//! The future lives on the caller's stack and is polled between handlers.
//! Its waker points at the scheduler's [`BlockOn`] record (in the
//! `'static` scheduler): waking bumps an epoch and, once until it has run,
//! posts the record's own operation, so that a `run_one` waiting in the
//! backend returns and the future is polled again. No slot is taken.

use core::cell::UnsafeCell;
use core::future::Future;
use core::pin::pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use pinion_sync::SyncKit;

use crate::backend::Task;
use crate::op::{Invoke, Operation};
use crate::scheduler::Scheduler;
use crate::Error;

/// A scheduler's wake-up record for `block_on`.
#[repr(C)]
pub(crate) struct BlockOn {
    /// First, so that the operation's address is the record's.
    op: UnsafeCell<Operation>,
    /// The op is queued (or running); a wake-up need not post it again.
    queued: AtomicBool,
    /// Bumped by every wake-up.
    epoch: AtomicUsize,
    /// The scheduler, set by `block_on` before any waker exists.
    owner: AtomicPtr<()>,
    /// Posts the op on `owner` (typed on the scheduler).
    post: unsafe fn(*const (), NonNull<Operation>),
}

// SAFETY: `op` is written only in `new` and read by the scheduler while
// queued (one post at a time, guarded by `queued`); the rest is atomic.
unsafe impl Sync for BlockOn {}
// SAFETY: as above.
unsafe impl Send for BlockOn {}

impl BlockOn {
    pub(crate) fn new<T: Task, K: SyncKit>() -> Self {
        BlockOn {
            op: UnsafeCell::new(Operation::new(woken)),
            queued: AtomicBool::new(false),
            epoch: AtomicUsize::new(0),
            owner: AtomicPtr::new(ptr::null_mut()),
            post: post_on::<T, K>,
        }
    }

    fn wake(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if !self.queued.swap(true, Ordering::AcqRel) {
            let owner = self.owner.load(Ordering::Acquire);
            // SAFETY: the op is on no queue (`queued` was false) and
            // `owner` is the scheduler it belongs to (set before any waker
            // was made).
            unsafe { (self.post)(owner, NonNull::from(self).cast()) }
        }
    }
}

/// # Safety
/// `owner` is a `Scheduler<T, K>`; `op` is its `BlockOn` op, on no queue.
unsafe fn post_on<T: Task, K: SyncKit>(owner: *const (), op: NonNull<Operation>) {
    // SAFETY: per contract.
    unsafe { (*(owner as *const Scheduler<T, K>)).post_immediate_completion(op) }
}

/// The record op's complete function: nothing to run; its running made
/// `run_one` return. The record is not pool memory: nothing is freed.
///
/// # Safety
/// `op` is a `BlockOn`'s op.
unsafe fn woken(op: NonNull<Operation>, _: *const (), _: Invoke<'_>) {
    // SAFETY: the record lives in the 'static scheduler.
    let b = unsafe { op.cast::<BlockOn>().as_ref() };
    b.queued.store(false, Ordering::Release);
}

/// How long `block_on` waits before it checks whether a wake-up it did
/// not see (its op ran on another thread) came: 1 ms.
const STOLEN_WAKE_NS: u64 = 1_000_000;

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);

/// # Safety
/// `p` is a `'static` `BlockOn`.
unsafe fn clone(p: *const ()) -> RawWaker {
    RawWaker::new(p, &VTABLE)
}

/// # Safety
/// As for `clone`.
unsafe fn wake(p: *const ()) {
    // SAFETY: per contract.
    unsafe { &*(p as *const BlockOn) }.wake()
}

fn drop_waker(_: *const ()) {}

impl<T: Task + 'static, K: SyncKit + 'static> Scheduler<T, K> {
    /// Runs handlers on this thread until `future` completes, and returns
    /// its output; other threads may run the scheduler meanwhile. A
    /// stopped scheduler is restarted first. `Err(OperationAborted)` if
    /// [`stop`](Self::stop) is called before the future completes (the
    /// future is dropped), `Err(ContextShutDown)` once the scheduler is
    /// shut down.
    ///
    /// # Panics
    /// When called from a handler or task running on this scheduler: it
    /// would wait for itself.
    pub fn block_on<F: Future>(&'static self, future: F) -> Result<F::Output, Error> {
        assert!(
            !self.running_in_this_thread(),
            "pinion: block_on called from a handler or task of the same context; \
             it would wait for itself (spawn the future, or .await it)"
        );
        // A context that ran out of work is stopped; this call brings work.
        self.restart();
        let b = self.block_on_record();
        b.owner
            .store(self as *const Self as *mut (), Ordering::Release);
        // SAFETY: the record is in the 'static scheduler; the vtable's
        // functions take it as a `BlockOn`.
        let waker =
            unsafe { Waker::from_raw(RawWaker::new(b as *const BlockOn as *const (), &VTABLE)) };
        let mut cx = Context::from_waker(&waker);
        // Keeps run_one waiting for a handler instead of returning for
        // lack of work while the future waits for something else.
        let _guard = self.work_guard();
        let mut future = pin!(future);
        loop {
            let seen = b.epoch.load(Ordering::Acquire);
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Ok(out);
            }
            while b.epoch.load(Ordering::Acquire) == seen {
                // Another thread in `run` may take the record's op, and
                // then nothing wakes this one: wait a bounded time, then
                // look at the epoch again. Alone in `run`, this thread
                // always gets the op and the bound is never reached.
                let deadline = self.task().now_ns().saturating_add(STOLEN_WAKE_NS);
                if self.run_loop(crate::backend::Wait::Until(deadline), 1) == 0 && self.stopped() {
                    return Err(if self.is_shut_down() {
                        Error::ContextShutDown
                    } else {
                        Error::OperationAborted
                    });
                }
            }
        }
    }
}
