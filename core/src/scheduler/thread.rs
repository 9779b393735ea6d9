//! The per-thread state of threads inside `run` (Asio's `thread_info`)
//! and the registry that finds it without thread-local storage.

use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};

use pinion_sync::current_thread_id;

use super::MAX_RUN_THREADS;
use crate::loom::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::op::Operation;
use crate::pool::OpSlot;
use crate::queue::OpQueue;

/// No recycled task slot.
pub(crate) const NO_TASK: u32 = u32::MAX;

/// Per-thread state of a thread inside `run` (Asio's `thread_info`). Lives
/// on that thread's stack; reached through the registry only by the same
/// thread, so its cells need no synchronisation.
pub(crate) struct ThreadInfo {
    pub(crate) private: UnsafeCell<OpQueue>,
    /// The I/O completions the running handler's initiating calls found
    /// done at once, to run right after that handler, ahead of the batch
    /// (`Scheduler::post_continuation_in`): a chain linked through the
    /// operations' own links, from `next_head` (null: none) to
    /// `next_tail`, whose link is null. `next_tail` is stale while
    /// `next_head` is null. Taking the first is two moves, with no tail to
    /// clear or second queue to test (a handler usually starts one such
    /// operation).
    pub(crate) next_head: Cell<*mut Operation>,
    /// The last continuation of the chain (see `next_head`).
    pub(crate) next_tail: Cell<*mut Operation>,
    pub(crate) private_work: Cell<usize>,
    /// The slot freed last, kept apart from `cache` (Asio's
    /// `thread_info_base` recycling): a completion frees its slot and its
    /// handler's next operation takes it back, with one test each way.
    pub(crate) recycled: Cell<*mut OpSlot>,
    pub(crate) cache: Cell<*mut OpSlot>,
    pub(crate) cache_len: Cell<usize>,
    /// The index of the task slot this thread freed last (retired, still
    /// counted taken by the slab), for its next spawn; `NO_TASK` if none.
    pub(crate) recycled_task: Cell<u32>,
    /// Innermost strand frame on this thread's stack (Asio's
    /// `call_stack<strand_impl>`), null when no strand runs here.
    pub(crate) strand: Cell<*const StrandFrame>,
    /// Operations futures may still complete without a trip through the
    /// queue in this turn: the op the batch loop runs now and the
    /// continuations chained after it ([`Here::consume_budget`]).
    pub(crate) budget: Cell<u32>,
    /// The scheduler whose `run` made this (checked in debug builds
    /// wherever a [`Here`] is used).
    pub(crate) owner: *const (),
}

impl ThreadInfo {
    pub(crate) fn new(owner: *const ()) -> Self {
        ThreadInfo {
            owner,
            private: UnsafeCell::new(OpQueue::new()),
            next_head: Cell::new(ptr::null_mut()),
            next_tail: Cell::new(ptr::null_mut()),
            private_work: Cell::new(0),
            recycled: Cell::new(ptr::null_mut()),
            cache: Cell::new(ptr::null_mut()),
            cache_len: Cell::new(0),
            recycled_task: Cell::new(NO_TASK),
            strand: Cell::new(ptr::null()),
            budget: Cell::new(IMMEDIATE_BUDGET),
        }
    }

    /// # Safety
    /// No other reference to the private queue is live (it is only used in
    /// short, non-reentrant stretches by the owning thread).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn private(&self) -> &mut OpQueue {
        // SAFETY: per this function's contract.
        unsafe { &mut *self.private.get() }
    }

    /// Queues `op` as a continuation (see `next_head`).
    ///
    /// # Safety
    /// `op` is live and on no queue; called by the owning thread.
    #[inline(always)]
    pub(crate) unsafe fn push_next(&self, op: NonNull<Operation>) {
        let p = op.as_ptr();
        // SAFETY: `op` is live and on no queue, so its link is ours.
        unsafe { (*p).next.set(ptr::null_mut()) };
        let tail = self.next_tail.replace(p);
        if self.next_head.get().is_null() {
            self.next_head.set(p);
        } else {
            // SAFETY: the chain is not empty, so `tail` is its last
            // operation: live, and its link is the chain's.
            unsafe { (*tail).next.set(p) };
        }
    }

    /// Takes the first continuation, `first` (the non-null `next_head`
    /// just read). Its link is left as it is: the operation is completed
    /// at once (and `push_next` sets a link before any use).
    ///
    /// # Safety
    /// `first` is `next_head`'s current value and not null; owning thread.
    #[inline(always)]
    pub(crate) unsafe fn take_next(&self, first: *mut Operation) -> NonNull<Operation> {
        debug_assert!(ptr::eq(first, self.next_head.get()) && !first.is_null());
        // SAFETY: `first` heads the chain (contract): live, its link is
        // the chain's next operation or null.
        self.next_head.set(unsafe { (*first).next.get() });
        // SAFETY: not null (contract).
        unsafe { NonNull::new_unchecked(first) }
    }

    /// Moves continuations not run yet behind the private queue (they
    /// are ordinary completions from here on).
    #[inline]
    pub(crate) fn demote_next(&self) {
        let head = self.next_head.replace(ptr::null_mut());
        if let Some(head) = NonNull::new(head) {
            // SAFETY: owning thread, no reference to the private queue
            // live across this; a non-empty chain runs from `head` to
            // `next_tail` (live, link null), all on no other queue.
            unsafe {
                let tail = NonNull::new_unchecked(self.next_tail.get());
                self.private().push_chain(head, tail);
            }
        }
    }
}

/// Proof that the calling thread is inside `run` of a scheduler, carrying
/// that thread's private state (queue, work count, slot cache).
///
/// The scheduler hands one to every operation it runs
/// ([`Invoke::Run`](crate::op::Invoke::Run)); a backend passes it on so that freeing the slot and
/// queueing follow-up work need not look the thread up again. Obtained
/// outside a completion with [`Scheduler::here`](crate::Scheduler::here).
#[derive(Clone, Copy)]
pub struct Here<'a> {
    pub(crate) ti: &'a ThreadInfo,
}

/// Operations one turn (a queued op and the continuations chained after
/// it) may complete at once ([`Here::consume_budget`]) before one must go
/// through the queue, so that a task whose socket is always ready still
/// lets others run (tokio calls this its cooperative budget).
pub const IMMEDIATE_BUDGET: u32 = 32;

impl Here<'_> {
    /// Takes one unit of this thread's budget for completing an operation
    /// without queueing it: `false` once this turn has used
    /// [`IMMEDIATE_BUDGET`] of them (the operation should then go through
    /// the queue, which lets others run first).
    #[inline(always)]
    pub fn consume_budget(&self) -> bool {
        let b = self.ti.budget.get();
        if b == 0 {
            return false;
        }
        self.ti.budget.set(b - 1);
        true
    }
}

impl core::fmt::Debug for Here<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Here").finish_non_exhaustive()
    }
}

/// One strand running on a thread; frames chain outwards through `outer`
/// so a strand nested inside another still knows both are running.
pub(crate) struct StrandFrame {
    pub(crate) strand: *const (),
    pub(crate) outer: *const StrandFrame,
}

impl ThreadInfo {
    /// `true` if `strand` has a frame on this thread's stack.
    pub(crate) fn in_strand(&self, strand: *const ()) -> bool {
        let mut f = self.strand.get();
        while !f.is_null() {
            // SAFETY: frames live on this thread's stack below the current
            // one and unlink themselves before returning.
            let fr = unsafe { &*f };
            if core::ptr::eq(fr.strand, strand) {
                return true;
            }
            f = fr.outer;
        }
        false
    }
}

/// Maps thread ids to the `ThreadInfo` of threads inside `run`.
pub(crate) struct Registry {
    ids: [AtomicUsize; MAX_RUN_THREADS],
    infos: [AtomicPtr<ThreadInfo>; MAX_RUN_THREADS],
    high: AtomicUsize,
}

pub(crate) struct Registration {
    index: usize,
    pub(crate) previous: *mut ThreadInfo,
}

/// A registry slot no thread holds. Not 0: `current_thread_id` is 0 where
/// no id is available, and such a thread must match no slot, so a lookup
/// needs only one comparison.
const NO_THREAD: usize = usize::MAX;

impl Registry {
    pub(crate) fn new() -> Self {
        // Not `const` (loom's atomics cannot be); made once per context.
        Registry {
            ids: core::array::from_fn(|_| AtomicUsize::new(NO_THREAD)),
            infos: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            high: AtomicUsize::new(0),
        }
    }

    /// The calling thread's `ThreadInfo`, if it is inside `run`.
    #[inline(always)]
    pub(crate) fn lookup(&self) -> Option<&ThreadInfo> {
        let me = current_thread_id();
        // Slot 0 first, unrolled: on a one-thread context it is the run
        // thread's, and this runs several times per handler.
        if self.ids[0].load(Ordering::Relaxed) == me {
            let p = self.infos[0].load(Ordering::Relaxed);
            // `ids[0] == me` means this thread registered slot 0 (ids are
            // never 0 or NO_THREAD for a registered thread, so a thread
            // without an id matches nothing) and stored a non-null
            // `infos[0]` before `register` returned.
            // SAFETY: that ThreadInfo is on this thread's stack and lives
            // until this thread unregisters.
            return Some(unsafe { &*p });
        }
        self.lookup_rest(me)
    }

    /// `lookup` past slot 0.
    #[inline(never)]
    fn lookup_rest(&self, me: usize) -> Option<&ThreadInfo> {
        if me == 0 {
            return None;
        }
        let high = self.high.load(Ordering::Relaxed);
        for i in 1..high.min(MAX_RUN_THREADS) {
            if self.ids[i].load(Ordering::Relaxed) == me {
                let p = self.infos[i].load(Ordering::Relaxed);
                // SAFETY: only this thread writes `infos[i]` while
                // `ids[i] == me`, and it points to a ThreadInfo on this
                // thread's stack that lives until it unregisters.
                return unsafe { p.as_ref() };
            }
        }
        None
    }

    pub(crate) fn register(&self, ti: *mut ThreadInfo) -> Option<Registration> {
        let me = current_thread_id();
        if me == 0 {
            return None;
        }
        debug_assert_ne!(me, NO_THREAD, "a thread id that marks a free slot");
        let high = self.high.load(Ordering::Relaxed).min(MAX_RUN_THREADS);
        // A nested `run` on the same thread takes over its slot.
        for i in 0..high {
            if self.ids[i].load(Ordering::Relaxed) == me {
                let previous = self.infos[i].swap(ti, Ordering::Relaxed);
                return Some(Registration { index: i, previous });
            }
        }
        for i in 0..MAX_RUN_THREADS {
            if self.ids[i]
                .compare_exchange(NO_THREAD, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.infos[i].store(ti, Ordering::Relaxed);
                self.high.fetch_max(i + 1, Ordering::Relaxed);
                return Some(Registration {
                    index: i,
                    previous: ptr::null_mut(),
                });
            }
        }
        None
    }

    pub(crate) fn unregister(&self, r: Registration) {
        if r.previous.is_null() {
            self.infos[r.index].store(ptr::null_mut(), Ordering::Relaxed);
            self.ids[r.index].store(NO_THREAD, Ordering::Release);
        } else {
            self.infos[r.index].store(r.previous, Ordering::Relaxed);
        }
    }
}
