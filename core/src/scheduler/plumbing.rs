//! The scheduler's backend surface: counting work, queueing completed
//! operations, and operation slots. Only a backend (and core's own
//! operations) calls these; each is `unsafe` because a wrong call breaks
//! the work count (`run` returning early, or never) or the pool, and says
//! in its `# Safety` what the caller keeps.

use core::ptr::{self, NonNull};

use pinion_sync::SyncKit;

use super::{Here, Scheduler, SLOT_CACHE_MAX};
use crate::backend::Task;
use crate::loom::atomic::Ordering;
use crate::op::Operation;
use crate::pool::{emplace, OpSlot};
use crate::queue::OpQueue;
use crate::{Pool, Rejected};

impl<T: Task, K: SyncKit> Scheduler<T, K> {
    // ---- work ----------------------------------------------------------

    /// Counts one more unit of outstanding work.
    ///
    /// # Safety
    /// Matched by exactly one [`work_finished`](Self::work_finished) (or
    /// by the completion of an operation whose work this counts): an
    /// unmatched start keeps `run` from ever returning for lack of work.
    #[inline]
    pub unsafe fn work_started(&self) {
        self.outstanding_work.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one unit of work done; the last one stops the scheduler.
    ///
    /// # Safety
    /// Matches one earlier [`work_started`](Self::work_started): more
    /// finishes than starts wrap the count, and `run` never returns.
    #[inline]
    pub unsafe fn work_finished(&self) {
        if self.outstanding_work.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.out_of_work();
        }
    }

    /// Counts work from inside a running handler or task without touching
    /// the shared counter (Asio's `compensating_work_started`).
    ///
    /// # Safety
    /// As for [`work_started`](Self::work_started).
    #[inline]
    pub unsafe fn compensating_work_started(&self) {
        // SAFETY: a Here of this scheduler; matched per contract.
        unsafe { self.compensating_work_started_in(self.here()) }
    }

    /// [`compensating_work_started`](Self::compensating_work_started)
    /// with the thread already known.
    ///
    /// # Safety
    /// As for [`work_started`](Self::work_started); `here` came from this
    /// scheduler (its [`here`](Self::here) or an
    /// [`Invoke::Run`](crate::op::Invoke::Run) it passed).
    #[inline(always)]
    pub unsafe fn compensating_work_started_in(&self, here: Option<Here<'_>>) {
        match here {
            Some(h) => {
                debug_assert_eq!(h.ti.owner, self.owner());
                h.ti.private_work.set(h.ti.private_work.get() + 1)
            }
            // SAFETY: forwarded.
            None => unsafe { self.work_started() },
        }
    }

    /// Counts the work of an operation a backend holds until it completes
    /// (Asio's `work_started` in `start_op`). Always on the shared counter,
    /// even from a run thread: another thread may complete the operation
    /// before this one settles a private count, and the count would reach
    /// zero (and the scheduler stop) with work pending. Private counts are
    /// for operations that become visible to other threads only together
    /// with the count ([`post_immediate_completion_in`](Self::post_immediate_completion_in)).
    ///
    /// # Safety
    /// As for [`work_started`](Self::work_started).
    #[inline(always)]
    pub unsafe fn io_work_started(&self) {
        // SAFETY: forwarded.
        unsafe { self.work_started() }
    }

    /// Outstanding work right now (for tests and diagnostics).
    pub fn outstanding_work(&self) -> usize {
        self.outstanding_work.load(Ordering::Relaxed)
    }

    // ---- queueing ------------------------------------------------------

    /// Queues `op` as new work (Asio's `post_immediate_completion`).
    ///
    /// # Safety
    /// `op` is live, on no queue, completes with this scheduler as owner.
    #[inline(always)]
    pub unsafe fn post_immediate_completion(&self, op: NonNull<Operation>) {
        // SAFETY: forwarded; a Here of this scheduler.
        unsafe { self.post_immediate_completion_in(self.here(), op) }
    }

    /// [`post_immediate_completion`](Self::post_immediate_completion) with
    /// the thread already known.
    ///
    /// # Safety
    /// As for `post_immediate_completion`; `here` came from this scheduler.
    #[inline(always)]
    pub unsafe fn post_immediate_completion_in(
        &self, here: Option<Here<'_>>, op: NonNull<Operation>,
    ) {
        // SAFETY: forwarded.
        unsafe { self.post_new_work_in::<false>(here, op) }
    }

    /// Queues `op`, an I/O operation that completed as it was started (a
    /// speculative `recv`/`send` that moved bytes), to run right after the
    /// handler now running on this thread, ahead of the rest of its batch
    /// (up to [`CHAIN_MAX`](super::CHAIN_MAX) in a row; see the module
    /// docs). Outside `run`, or on a backend without continuations
    /// ([`Task::CONTINUATIONS`]), it is an
    /// ordinary immediate completion.
    ///
    /// # Safety
    /// As for `post_immediate_completion`; `here` came from this scheduler.
    #[inline(always)]
    pub unsafe fn post_continuation_in(&self, here: Option<Here<'_>>, op: NonNull<Operation>) {
        // SAFETY: forwarded.
        unsafe { self.post_new_work_in::<true>(here, op) }
    }

    /// New work from this thread goes, counted privately, to its private
    /// queue (or, as a continuation, to `next_head`); from outside `run`, to the
    /// shared queue.
    ///
    /// # Safety
    /// As for `post_immediate_completion`; `here` came from this scheduler.
    #[inline(always)]
    unsafe fn post_new_work_in<const NEXT: bool>(
        &self, here: Option<Here<'_>>, op: NonNull<Operation>,
    ) {
        if let Some(Here { ti }) = here {
            debug_assert_eq!(ti.owner, self.owner());
            ti.private_work.set(ti.private_work.get() + 1);
            // SAFETY: owning thread, no other reference to either queue
            // live; `op` per contract.
            unsafe {
                if NEXT && T::CONTINUATIONS {
                    ti.push_next(op)
                } else {
                    ti.private().push(op)
                }
            };
            return;
        }
        // SAFETY: forwarded.
        unsafe { self.post_immediate_locked(op) }
    }

    /// `post_immediate_completion` from a thread outside `run`: kept out
    /// of line so the private path inlines into every initiating call.
    ///
    /// # Safety
    /// As for [`post_immediate_completion`](Self::post_immediate_completion).
    #[inline(never)]
    unsafe fn post_immediate_locked(&self, op: NonNull<Operation>) {
        // SAFETY: the op's completion finishes this work.
        unsafe { self.work_started() };
        self.lock();
        // SAFETY: held; `op` per contract; released by the wake call (or
        // by the refusal, which destroys `op`).
        unsafe {
            if self.is_shut() {
                let mut q = OpQueue::new();
                q.push(op);
                self.refuse_when_shut(&mut q);
                return;
            }
            let st = self.locked();
            if st.task_queued {
                st.after.push(op)
            } else {
                st.ready.push(op)
            }
            self.wake_one_thread_and_unlock();
        }
    }

    /// Queues an operation whose work was already counted (Asio's
    /// `post_deferred_completion`), e.g. a reactor op that completed.
    ///
    /// # Safety
    /// As for [`post_immediate_completion`](Self::post_immediate_completion).
    #[inline]
    pub unsafe fn post_deferred_completion(&self, op: NonNull<Operation>) {
        let mut q = OpQueue::new();
        // SAFETY: per contract.
        // SAFETY: forwarded.
        unsafe {
            q.push(op);
            self.post_deferred_completions(&mut q)
        };
    }

    /// Queues a batch of operations whose work was already counted.
    ///
    /// # Safety
    /// Every operation on `ops` is live, completes with this scheduler as
    /// owner, and had its work counted when it was started.
    pub unsafe fn post_deferred_completions(&self, ops: &mut OpQueue) {
        if ops.is_empty() {
            return;
        }
        if let Some(ti) = self.this_thread() {
            // SAFETY: owning thread, no other reference live.
            unsafe { ti.private().push_queue(ops) };
            return;
        }
        self.lock();
        // SAFETY: held; released by the wake call (or by the refusal,
        // which destroys `ops`).
        unsafe {
            if self.is_shut() {
                self.refuse_when_shut(ops);
                return;
            }
            self.locked().push_back(ops);
            self.wake_one_thread_and_unlock();
        }
    }

    // ---- operation memory ----------------------------------------------

    /// Moves `value` into a free slot, from this thread's cache if it has
    /// one. Hands `value` back when the pool is exhausted.
    ///
    /// # Safety
    /// The slot is given back once, by [`free_op`](Self::free_op) after its
    /// value has been moved out or dropped (a slot never given back is
    /// lost to the pool for good).
    #[inline]
    pub unsafe fn alloc_op<O>(&self, value: O) -> Result<NonNull<O>, O> {
        // SAFETY: forwarded; a Here of this scheduler.
        unsafe { self.alloc_op_in(self.here(), value) }
    }

    /// [`alloc_op`](Self::alloc_op) with the thread already known.
    ///
    /// # Safety
    /// As for `alloc_op`; `here` came from this scheduler.
    #[inline(always)]
    pub unsafe fn alloc_op_in<O>(&self, here: Option<Here<'_>>, value: O) -> Result<NonNull<O>, O> {
        crate::pool::assert_fits::<O>();
        let slot = match here {
            Some(Here { ti }) if !ti.recycled.get().is_null() => {
                debug_assert_eq!(ti.owner, self.owner());
                // SAFETY: non-null checked above.
                unsafe { NonNull::new_unchecked(ti.recycled.replace(ptr::null_mut())) }
            }
            Some(Here { ti }) if !ti.cache.get().is_null() => {
                debug_assert_eq!(ti.owner, self.owner());
                let s = ti.cache.get();
                // SAFETY: cached slots hold the next cached slot in their
                // first word (written by `free_op`).
                ti.cache.set(unsafe { ptr::read(s as *const *mut OpSlot) });
                ti.cache_len.set(ti.cache_len.get() - 1);
                // SAFETY: non-null checked above.
                unsafe { NonNull::new_unchecked(s) }
            }
            _ => match self.pool.alloc() {
                Some(s) => s,
                None => return Err(value),
            },
        };
        // SAFETY: the slot is free and ours.
        Ok(unsafe { emplace(slot, value) })
    }

    /// [`alloc_op_in`](Self::alloc_op_in), with an exhausted pool turned
    /// into the caller's rejection: `give_back` takes what the caller
    /// must hand back (handler, buffer) out of the unplaced value.
    ///
    /// # Safety
    /// As for [`alloc_op`](Self::alloc_op); `here` came from this
    /// scheduler.
    #[inline(always)]
    pub unsafe fn alloc_op_in_or_reject<O, H>(
        &self, here: Option<Here<'_>>, value: O, give_back: impl FnOnce(O) -> H,
    ) -> Result<NonNull<O>, Rejected<H>> {
        // SAFETY: forwarded.
        unsafe { self.alloc_op_in(here, value) }.map_err(|v| Rejected {
            error: self.pool_error(Pool::Ops),
            handler: give_back(v),
        })
    }

    /// [`alloc_op_in_or_reject`](Self::alloc_op_in_or_reject) for a
    /// thread not known yet.
    ///
    /// # Safety
    /// As for [`alloc_op`](Self::alloc_op).
    #[inline(always)]
    pub unsafe fn alloc_op_or_reject<O, H>(
        &self, value: O, give_back: impl FnOnce(O) -> H,
    ) -> Result<NonNull<O>, Rejected<H>> {
        // SAFETY: forwarded; a Here of this scheduler.
        unsafe { self.alloc_op_in_or_reject(self.here(), value, give_back) }
    }

    /// Returns an operation's slot. Does not drop the value in it.
    ///
    /// # Safety
    /// `op` came from [`alloc_op`](Self::alloc_op) on this scheduler, its
    /// value has been moved out or dropped, and it is freed once.
    #[inline]
    pub unsafe fn free_op<O>(&self, op: NonNull<O>) {
        // SAFETY: forwarded; a Here of this scheduler.
        unsafe { self.free_op_in(self.here(), op) }
    }

    /// [`free_op`](Self::free_op) with the thread already known (a
    /// complete function's [`Invoke::here`](crate::op::Invoke::here)).
    ///
    /// # Safety
    /// As for `free_op`; `here` came from this scheduler.
    #[inline(always)]
    pub unsafe fn free_op_in<O>(&self, here: Option<Here<'_>>, op: NonNull<O>) {
        let slot = op.cast::<OpSlot>();
        if let Some(Here { ti }) = here {
            debug_assert_eq!(ti.owner, self.owner());
            if ti.recycled.get().is_null() {
                ti.recycled.set(slot.as_ptr());
                return;
            }
            if ti.cache_len.get() < SLOT_CACHE_MAX {
                // SAFETY: the slot is ours again; its first word becomes
                // the cache link.
                unsafe { ptr::write(slot.as_ptr() as *mut *mut OpSlot, ti.cache.get()) };
                ti.cache.set(slot.as_ptr());
                ti.cache_len.set(ti.cache_len.get() + 1);
                return;
            }
        }
        // SAFETY: per contract.
        unsafe { self.pool.free(slot) }
    }
}
