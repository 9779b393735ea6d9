//! Asio's `scheduler`: the run loop behind `IoContext`.
//!
//! One queue of ready operations guarded by a mutex, the backend task that
//! feeds it, a count of outstanding work, and per-thread private queues and
//! work counts so that a handler posting its continuation touches neither
//! the mutex nor a shared atomic.
//!
//! Differences from Asio, each for speed without changing what a program
//! can observe:
//! - The task sentinel is not a node: the queue is kept as two halves,
//!   `ready` (before the sentinel) and `after` (behind it), plus a flag.
//!   Taking the task makes `after` the new `ready`. Nothing in the queue
//!   then points into the scheduler, so the scheduler may move freely.
//! - `run` and `poll` take a batch of ready handlers per lock (the whole of
//!   `ready` on a one-thread context, up to [`MULTI_THREAD_BATCH`] on a
//!   shared one) and return an unfinished batch to the front on `stop`.
//!   `run_one` and `poll_one` take exactly one.
//! - A handler's `post` from a thread inside `run` always goes to that
//!   thread's private queue (Asio does this for `defer` and on one-thread
//!   contexts), flushed when the handler or batch ends.
//! - Operation slots freed by a running thread go to a small per-thread
//!   cache that the same thread's next post takes from (Asio's
//!   thread-local recycling allocator).
//!
//! Threads are recognised without thread-local storage (core is no_std):
//! each thread inside `run` registers its stack-allocated `ThreadInfo`
//! under its thread id (`pinion_sync::current_thread_id`). Where no id is
//! available, every post takes the locked path.

use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::{self, addr_of, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use pinion_sync::{current_thread_id, RawMutex, SyncKit, WakeEvent};

use crate::op::{Invoke, Operation};
use crate::pool::{emplace, OpSlot, SlotPool, SlotStorage};
use crate::queue::OpQueue;
use crate::task::{Task, Wait};
use crate::{Error, Rejected};

/// Most handlers one thread takes per lock on a context run by several
/// threads; small enough that a sibling thread finds work quickly.
pub const MULTI_THREAD_BATCH: usize = 16;
/// Threads that may be inside `run` at once with the private fast path;
/// more may run, taking the locked path for their posts.
pub const MAX_RUN_THREADS: usize = 32;
/// Free slots a running thread keeps for its own next posts.
const SLOT_CACHE_MAX: usize = 8;

/// State guarded by the scheduler's mutex.
struct Locked {
    /// Operations in front of the task sentinel.
    ready: OpQueue,
    /// Operations behind it (only while the sentinel is queued).
    after: OpQueue,
    task_queued: bool,
    task_interrupted: bool,
}

impl Locked {
    /// Appends behind everything, including the sentinel if queued.
    #[inline]
    fn push_back(&mut self, q: &mut OpQueue) {
        if self.task_queued {
            self.after.push_queue(q)
        } else {
            self.ready.push_queue(q)
        }
    }

    #[inline]
    fn has_work(&self) -> bool {
        !self.ready.is_empty() || self.task_queued
    }
}

/// Per-thread state of a thread inside `run` (Asio's `thread_info`). Lives
/// on that thread's stack; reached through the registry only by the same
/// thread, so its cells need no synchronisation.
pub(crate) struct ThreadInfo {
    private: UnsafeCell<OpQueue>,
    private_work: Cell<usize>,
    /// The slot freed last, kept apart from `cache` (Asio's
    /// `thread_info_base` recycling): a completion frees its slot and its
    /// handler's next operation takes it back, with one test each way.
    recycled: Cell<*mut OpSlot>,
    cache: Cell<*mut OpSlot>,
    cache_len: Cell<usize>,
    /// Innermost strand frame on this thread's stack (Asio's
    /// `call_stack<strand_impl>`), null when no strand runs here.
    pub(crate) strand: Cell<*const StrandFrame>,
    /// The scheduler whose `run` made this (checked in debug builds
    /// wherever a [`Here`] is used).
    owner: *const (),
}

impl ThreadInfo {
    fn new(owner: *const ()) -> Self {
        ThreadInfo {
            owner,
            private: UnsafeCell::new(OpQueue::new()),
            private_work: Cell::new(0),
            recycled: Cell::new(ptr::null_mut()),
            cache: Cell::new(ptr::null_mut()),
            cache_len: Cell::new(0),
            strand: Cell::new(ptr::null()),
        }
    }

    /// # Safety
    /// No other reference to the private queue is live (it is only used in
    /// short, non-reentrant stretches by the owning thread).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn private(&self) -> &mut OpQueue {
        // SAFETY: per this function's contract.
        unsafe { &mut *self.private.get() }
    }
}

/// Proof that the calling thread is inside `run` of a scheduler, carrying
/// that thread's private state (queue, work count, slot cache).
///
/// The scheduler hands one to every operation it runs
/// ([`Invoke::Run`]); a backend passes it on so that freeing the slot and
/// queueing follow-up work need not look the thread up again. Obtained
/// outside a completion with [`Scheduler::here`].
#[derive(Clone, Copy)]
pub struct Here<'a> {
    pub(crate) ti: &'a ThreadInfo,
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
struct Registry {
    ids: [AtomicUsize; MAX_RUN_THREADS],
    infos: [AtomicPtr<ThreadInfo>; MAX_RUN_THREADS],
    high: AtomicUsize,
}

struct Registration {
    index: usize,
    previous: *mut ThreadInfo,
}

/// A registry slot no thread holds. Not 0: `current_thread_id` is 0 where
/// no id is available, and such a thread must match no slot, so a lookup
/// needs only one comparison.
const NO_THREAD: usize = usize::MAX;

impl Registry {
    const fn new() -> Self {
        Registry {
            ids: [const { AtomicUsize::new(NO_THREAD) }; MAX_RUN_THREADS],
            infos: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_RUN_THREADS],
            high: AtomicUsize::new(0),
        }
    }

    /// The calling thread's `ThreadInfo`, if it is inside `run`.
    #[inline(always)]
    fn lookup(&self) -> Option<&ThreadInfo> {
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

    fn register(&self, ti: *mut ThreadInfo) -> Option<Registration> {
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

    fn unregister(&self, r: Registration) {
        if r.previous.is_null() {
            self.infos[r.index].store(ptr::null_mut(), Ordering::Relaxed);
            self.ids[r.index].store(NO_THREAD, Ordering::Release);
        } else {
            self.infos[r.index].store(r.previous, Ordering::Relaxed);
        }
    }
}

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

/// Asio's scheduler, generic over the backend task `T` and the sync kit `K`.
pub struct Scheduler<T: Task, K: SyncKit> {
    mutex: K::Mutex,
    event: K::Event,
    locked: UnsafeCell<Locked>,
    outstanding_work: AtomicUsize,
    stopped: AtomicBool,
    one_thread: bool,
    pool: SlotPool<K::Mutex>,
    threads: Registry,
    task: T,
    _k: PhantomData<K>,
}

// SAFETY: all shared mutable state is behind `mutex` (Locked), atomics,
// or per-thread ThreadInfo reached only by its own thread; handlers are
// `Send`. Sharing requires the kit's primitives and the task to be Sync
// (NullKit's mutex is not, which keeps single-thread contexts on one
// thread).
unsafe impl<T: Task + Sync, K: SyncKit> Sync for Scheduler<T, K>
where
    K::Mutex: Sync,
    K::Event: Sync,
{
}
// SAFETY: as above; moving the scheduler moves no linked node (see the
// module docs), and no thread may be inside it while it moves.
unsafe impl<T: Task + Send, K: SyncKit> Send for Scheduler<T, K>
where
    K::Mutex: Send,
    K::Event: Send,
{
}

impl<T: Task, K: SyncKit> Scheduler<T, K> {
    /// A scheduler over `task` with its operation slots in `slots`.
    ///
    /// `concurrency_hint == 1` promises that one thread runs the context
    /// (Asio's hint 1): that thread then takes whole batches and never
    /// wakes siblings. Other threads may still post.
    pub fn new(task: T, slots: SlotStorage, concurrency_hint: usize) -> Self {
        Scheduler {
            mutex: K::Mutex::INIT,
            event: K::Event::INIT,
            locked: UnsafeCell::new(Locked {
                ready: OpQueue::new(),
                after: OpQueue::new(),
                task_queued: T::PRESENT,
                task_interrupted: true,
            }),
            outstanding_work: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            one_thread: concurrency_hint == 1,
            pool: SlotPool::new(slots),
            threads: Registry::new(),
            task,
            _k: PhantomData,
        }
    }

    /// The backend task.
    #[inline]
    pub fn task(&self) -> &T {
        &self.task
    }

    /// The operation slot pool (capacity, slots in use).
    pub fn pool(&self) -> &SlotPool<K::Mutex> {
        &self.pool
    }

    /// The pointer operations receive as `owner` in their complete function.
    #[inline]
    pub fn owner(&self) -> *const () {
        self as *const Self as *const ()
    }

    /// # Safety
    /// The caller holds `self.mutex` and keeps the reference only while it
    /// does.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn locked(&self) -> &mut Locked {
        // SAFETY: per this function's contract.
        unsafe { &mut *self.locked.get() }
    }

    #[inline]
    fn lock(&self) {
        self.mutex.lock()
    }

    /// # Safety
    /// The calling thread holds the mutex.
    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: per this function's contract.
        unsafe { self.mutex.unlock() }
    }

    // ---- running -------------------------------------------------------

    /// Runs handlers until there is no more work or `stop` is called.
    /// Returns how many ran.
    pub fn run(&self) -> usize {
        self.run_loop(Wait::Forever, usize::MAX)
    }

    /// Runs at most one handler, waiting for one if need be.
    pub fn run_one(&self) -> usize {
        self.run_loop(Wait::Forever, 1)
    }

    /// Runs handlers until there is no more work, `stop` is called, or
    /// `timeout_ns` has passed.
    pub fn run_for(&self, timeout_ns: u64) -> usize {
        let deadline = self.task.now_ns().saturating_add(timeout_ns);
        self.run_until(deadline)
    }

    /// As [`run_for`](Self::run_for) with an absolute deadline on the
    /// task's clock.
    pub fn run_until(&self, deadline_ns: u64) -> usize {
        self.run_loop(Wait::Until(deadline_ns), usize::MAX)
    }

    /// Runs the handlers that are ready without waiting.
    pub fn poll(&self) -> usize {
        self.run_loop(Wait::Poll, usize::MAX)
    }

    /// Runs at most one ready handler without waiting.
    pub fn poll_one(&self) -> usize {
        self.run_loop(Wait::Poll, 1)
    }

    fn run_loop(&self, wait: Wait, limit: usize) -> usize {
        if self.outstanding_work.load(Ordering::Acquire) == 0 {
            self.stop();
            return 0;
        }
        let ti = ThreadInfo::new(self.owner());
        let reg = self.threads.register(&ti as *const _ as *mut ThreadInfo);
        if let Some(outer) = reg.as_ref().and_then(|r| {
            // SAFETY: a previous registration of this thread is the
            // ThreadInfo of an outer `run` frame further up this stack.
            unsafe { r.previous.as_ref() }
        }) {
            // A nested run (a handler calling `poll`) must see what the
            // outer handler posted, as Asio's `scheduler::poll` ensures.
            self.publish_private(outer);
        }
        let _exit = RunExit {
            sched: self,
            ti: &ti,
            reg,
        };
        let batch = if limit == 1 {
            1
        } else if self.one_thread {
            usize::MAX
        } else {
            MULTI_THREAD_BATCH
        };
        let mut total = 0usize;
        loop {
            self.lock();
            let n = self.do_run_one(&ti, wait, batch);
            if n == 0 {
                break;
            }
            total = total.saturating_add(n);
            if total >= limit {
                break;
            }
        }
        total
    }

    /// Asio's `do_run_one`, taking up to `max` handlers. Entered with the
    /// mutex held; returns with it released. 0 means: stopped, out of
    /// work, or (for `Poll`/`Until`) nothing more to do now.
    fn do_run_one(&self, ti: &ThreadInfo, wait: Wait, max: usize) -> usize {
        let mut task_ran = false;
        loop {
            // SAFETY: the mutex is held at the top of every iteration.
            let st = unsafe { self.locked() };
            if self.stopped.load(Ordering::Relaxed) {
                // SAFETY: held.
                unsafe { self.unlock() };
                return 0;
            }
            if !st.ready.is_empty() {
                let mut batch = OpQueue::new();
                if max == usize::MAX {
                    core::mem::swap(&mut batch, &mut st.ready);
                } else {
                    st.ready.take_front(&mut batch, max, ptr::null());
                }
                let more = st.has_work();
                // SAFETY: held; released by either call.
                unsafe {
                    if more && !self.one_thread {
                        self.wake_one_thread_and_unlock();
                    } else {
                        self.unlock();
                    }
                }
                return self.run_batch(ti, &mut batch);
            }
            // Poll runs the task once; Until re-runs it while time is left.
            let may_run_task = match wait {
                Wait::Forever => true,
                Wait::Poll => !task_ran,
                Wait::Until(d) => !task_ran || self.task.now_ns() < d,
            };
            if T::PRESENT && st.task_queued && may_run_task {
                st.task_queued = false;
                core::mem::swap(&mut st.ready, &mut st.after);
                let more = !st.ready.is_empty();
                st.task_interrupted = more;
                // SAFETY: held; released by either call.
                unsafe {
                    if more && !self.one_thread {
                        self.wake_one_thread_and_unlock();
                    } else {
                        self.unlock();
                    }
                }
                let task_wait = if more { Wait::Poll } else { wait };
                if task_wait != Wait::Poll {
                    self.flush_cache(ti);
                }
                // SAFETY: the private queue is used only by this thread and
                // no other reference to it is live across this call.
                self.task.run(task_wait, unsafe { ti.private() });
                task_ran = true;
                // Asio's task_cleanup: publish private work, requeue the
                // completions and then the sentinel behind them.
                let pw = ti.private_work.replace(0);
                if pw > 0 {
                    self.outstanding_work.fetch_add(pw, Ordering::Relaxed);
                }
                self.lock();
                // SAFETY: held again.
                let st = unsafe { self.locked() };
                st.task_interrupted = true;
                // SAFETY: private queue, owning thread, no other reference.
                st.ready.push_queue(unsafe { ti.private() });
                st.task_queued = true;
                continue;
            }
            match wait {
                Wait::Poll => {
                    // SAFETY: held.
                    unsafe { self.unlock() };
                    return 0;
                }
                Wait::Forever => {
                    self.flush_cache(ti);
                    // SAFETY: held, as both calls require; held again after.
                    unsafe {
                        self.event.clear(&self.mutex);
                        self.event.wait(&self.mutex);
                    }
                }
                Wait::Until(d) => {
                    let now = self.task.now_ns();
                    if now >= d {
                        // SAFETY: held.
                        unsafe { self.unlock() };
                        return 0;
                    }
                    self.flush_cache(ti);
                    // SAFETY: held, as both calls require; held again after.
                    unsafe {
                        self.event.clear(&self.mutex);
                        self.event.wait_for(&self.mutex, d - now);
                    }
                }
            }
        }
    }

    /// Runs a batch taken off the queue, unlocked. A `stop` from inside a
    /// handler returns the rest of the batch to the front of the queue.
    fn run_batch(&self, ti: &ThreadInfo, batch: &mut OpQueue) -> usize {
        let owner = self.owner();
        let mut guard = BatchGuard {
            sched: self,
            ti,
            batch: OpQueue::new(),
            ran: 0,
        };
        guard.batch.push_queue(batch);
        // SAFETY: nothing is pushed onto the batch; BatchGuard only moves
        // a non-empty rest onto the shared queue.
        while let Some(op) = unsafe { guard.batch.pop_drain() } {
            // Counted before the call: the op is consumed even if its
            // handler unwinds.
            guard.ran += 1;
            // SAFETY: `op` was queued by post/defer/a backend, is live and
            // now on no queue; `owner` is the scheduler it belongs to.
            unsafe { Operation::complete(op, owner, Invoke::Run(Here { ti })) };
            if self.stopped.load(Ordering::Relaxed) {
                break;
            }
        }
        guard.ran
    }

    /// Asio's `work_cleanup`: settle this thread's private work count
    /// against the `ran` completions, then publish its private queue.
    fn work_cleanup(&self, ti: &ThreadInfo, ran: usize) {
        let pw = ti.private_work.replace(0);
        if pw > ran {
            self.outstanding_work.fetch_add(pw - ran, Ordering::Relaxed);
        } else if pw < ran {
            let d = ran - pw;
            if self.outstanding_work.fetch_sub(d, Ordering::AcqRel) == d {
                self.stop();
            }
        }
        // SAFETY: owning thread, no other reference live.
        let private = unsafe { ti.private() };
        if !private.is_empty() {
            self.lock();
            // SAFETY: held; released by either call.
            unsafe {
                self.locked().push_back(private);
                if !self.one_thread {
                    self.wake_one_thread_and_unlock();
                } else {
                    self.unlock();
                }
            }
        }
    }

    /// Moves a thread's private work count and queue to the shared ones.
    fn publish_private(&self, ti: &ThreadInfo) {
        let pw = ti.private_work.replace(0);
        if pw > 0 {
            self.outstanding_work.fetch_add(pw, Ordering::Relaxed);
        }
        // SAFETY: `ti` belongs to the calling thread, whose frames hold no
        // reference to its private queue across this call.
        let private = unsafe { ti.private() };
        if !private.is_empty() {
            self.lock();
            // SAFETY: held.
            unsafe {
                self.locked().push_back(private);
                self.unlock();
            }
        }
    }

    /// Gives a thread's cached free slots back to the pool before it may
    /// block, so posts from other threads can use them.
    #[inline]
    fn flush_cache(&self, ti: &ThreadInfo) {
        if let Some(slot) = NonNull::new(ti.recycled.replace(ptr::null_mut())) {
            // SAFETY: the recycled slot is a free slot of this pool.
            unsafe { self.pool.free(slot) };
        }
        let head = ti.cache.replace(ptr::null_mut());
        if !head.is_null() {
            ti.cache_len.set(0);
            // SAFETY: the cache holds free slots of this pool, chained.
            unsafe { self.pool.free_chain(head) };
        }
    }

    /// Wakes an idle thread, or else interrupts the task.
    ///
    /// # Safety
    /// The mutex is held; it is released on return.
    #[inline]
    unsafe fn wake_one_thread_and_unlock(&self) {
        // SAFETY: held per contract.
        if !unsafe { self.event.maybe_unlock_and_signal_one(&self.mutex) } {
            // SAFETY: still held (maybe_unlock returned false).
            let st = unsafe { self.locked() };
            if T::PRESENT && !st.task_interrupted && !st.task_queued {
                st.task_interrupted = true;
                self.task.interrupt();
            }
            // SAFETY: held.
            unsafe { self.unlock() };
        }
    }

    // ---- stopping ------------------------------------------------------

    /// Makes every `run` return as soon as its current handler finishes.
    pub fn stop(&self) {
        self.lock();
        self.stopped.store(true, Ordering::Relaxed);
        // SAFETY: held.
        unsafe {
            self.event.signal_all(&self.mutex);
            let st = self.locked();
            if T::PRESENT && !st.task_interrupted && !st.task_queued {
                st.task_interrupted = true;
                self.task.interrupt();
            }
            self.unlock();
        }
    }

    /// `true` once `stop` was called (or work ran out), until `restart`.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Clears the stopped state so `run` may be called again.
    pub fn restart(&self) {
        self.lock();
        self.stopped.store(false, Ordering::Relaxed);
        // SAFETY: held.
        unsafe { self.unlock() };
    }

    /// `true` when the calling thread is inside this scheduler's `run`.
    #[inline]
    pub fn running_in_this_thread(&self) -> bool {
        self.threads.lookup().is_some()
    }

    #[inline]
    pub(crate) fn this_thread(&self) -> Option<&ThreadInfo> {
        self.threads.lookup()
    }

    /// The calling thread's [`Here`], if it is inside this scheduler's
    /// `run`: look it up once, then use it for every `*_in` call of one
    /// initiating function.
    #[inline]
    pub fn here(&self) -> Option<Here<'_>> {
        self.threads.lookup().map(|ti| Here { ti })
    }

    // ---- work ----------------------------------------------------------

    /// Counts one more unit of outstanding work.
    #[inline]
    pub fn work_started(&self) {
        self.outstanding_work.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one unit of work done; the last one stops the scheduler.
    #[inline]
    pub fn work_finished(&self) {
        if self.outstanding_work.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stop();
        }
    }

    /// Counts work from inside a running handler or task without touching
    /// the shared counter (Asio's `compensating_work_started`).
    #[inline]
    pub fn compensating_work_started(&self) {
        // SAFETY: a Here of this scheduler.
        unsafe { self.compensating_work_started_in(self.here()) }
    }

    /// [`compensating_work_started`](Self::compensating_work_started)
    /// with the thread already known.
    ///
    /// # Safety
    /// `here` came from this scheduler (its [`here`](Self::here) or an
    /// [`Invoke::Run`] it passed).
    #[inline(always)]
    pub unsafe fn compensating_work_started_in(&self, here: Option<Here<'_>>) {
        match here {
            Some(h) => {
                debug_assert_eq!(h.ti.owner, self.owner());
                h.ti.private_work.set(h.ti.private_work.get() + 1)
            }
            None => self.work_started(),
        }
    }

    /// Outstanding work right now (for tests and diagnostics).
    pub fn outstanding_work(&self) -> usize {
        self.outstanding_work.load(Ordering::Relaxed)
    }

    /// A guard that keeps `run` from running out of work until dropped.
    pub fn work_guard(&self) -> WorkGuard<'_, T, K> {
        self.work_started();
        WorkGuard { sched: self }
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
        &self,
        here: Option<Here<'_>>,
        op: NonNull<Operation>,
    ) {
        if let Some(Here { ti }) = here {
            debug_assert_eq!(ti.owner, self.owner());
            ti.private_work.set(ti.private_work.get() + 1);
            // SAFETY: owning thread; `op` per contract.
            unsafe { ti.private().push(op) };
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
        self.work_started();
        self.lock();
        // SAFETY: held; `op` per contract; released by the wake call.
        unsafe {
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
        unsafe { q.push(op) };
        self.post_deferred_completions(&mut q);
    }

    /// Queues a batch of operations whose work was already counted.
    pub fn post_deferred_completions(&self, ops: &mut OpQueue) {
        if ops.is_empty() {
            return;
        }
        if let Some(ti) = self.this_thread() {
            // SAFETY: owning thread, no other reference live.
            unsafe { ti.private().push_queue(ops) };
            return;
        }
        self.lock();
        // SAFETY: held; released by the wake call.
        unsafe {
            self.locked().push_back(ops);
            self.wake_one_thread_and_unlock();
        }
    }

    // ---- operation memory ----------------------------------------------

    /// Moves `value` into a free slot, from this thread's cache if it has
    /// one. Hands `value` back when the pool is exhausted.
    #[inline]
    pub fn alloc_op<O>(&self, value: O) -> Result<NonNull<O>, O> {
        // SAFETY: a Here of this scheduler.
        unsafe { self.alloc_op_in(self.here(), value) }
    }

    /// [`alloc_op`](Self::alloc_op) with the thread already known.
    ///
    /// # Safety
    /// `here` came from this scheduler.
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
    /// `here` came from this scheduler.
    #[inline(always)]
    pub unsafe fn alloc_op_in_or_reject<O, H>(
        &self,
        here: Option<Here<'_>>,
        value: O,
        give_back: impl FnOnce(O) -> H,
    ) -> Result<NonNull<O>, Rejected<H>> {
        // SAFETY: forwarded.
        unsafe { self.alloc_op_in(here, value) }.map_err(|v| Rejected {
            error: Error::PoolExhausted,
            handler: give_back(v),
        })
    }

    /// [`alloc_op_in_or_reject`](Self::alloc_op_in_or_reject) for a
    /// thread not known yet.
    #[inline(always)]
    pub fn alloc_op_or_reject<O, H>(
        &self,
        value: O,
        give_back: impl FnOnce(O) -> H,
    ) -> Result<NonNull<O>, Rejected<H>> {
        // SAFETY: a Here of this scheduler.
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
    /// complete function's [`Invoke::here`]).
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

    // ---- handlers ------------------------------------------------------

    /// Queues `handler` to run on a thread inside `run`; never runs it
    /// inline. Hands it back with `PoolExhausted` when no slot is free.
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

    /// Destroys every queued operation and the task's pending ones without
    /// running them (Asio's `scheduler::shutdown`).
    fn shutdown(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        let owner = self.owner();
        let mut ops = OpQueue::new();
        {
            let st = self.locked.get_mut();
            ops.push_queue(&mut st.ready);
            ops.push_queue(&mut st.after);
        }
        self.task.shutdown(&mut ops);
        // Destroying a strand may hand back more work; loop until quiet.
        while let Some(op) = ops.pop() {
            // SAFETY: queued operations are live and owned by this
            // scheduler; destroyed exactly once.
            unsafe { Operation::complete(op, owner, Invoke::Destroy) };
            let st = self.locked.get_mut();
            ops.push_queue(&mut st.ready);
            ops.push_queue(&mut st.after);
        }
    }
}

impl<T: Task, K: SyncKit> Drop for Scheduler<T, K> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Ends a batch, also when a handler unwinds: returns the unrun rest to the
/// front of the queue and settles the work of the handlers that ran.
struct BatchGuard<'a, T: Task, K: SyncKit> {
    sched: &'a Scheduler<T, K>,
    ti: &'a ThreadInfo,
    batch: OpQueue,
    ran: usize,
}

impl<T: Task, K: SyncKit> Drop for BatchGuard<'_, T, K> {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            self.sched.lock();
            // SAFETY: held.
            unsafe {
                self.sched.locked().ready.push_queue_front(&mut self.batch);
                self.sched.unlock();
            }
        }
        self.sched.work_cleanup(self.ti, self.ran);
    }
}

/// Unregisters a thread leaving `run` (also on unwind) and gives back what
/// it held privately.
struct RunExit<'a, T: Task, K: SyncKit> {
    sched: &'a Scheduler<T, K>,
    ti: &'a ThreadInfo,
    reg: Option<Registration>,
}

impl<T: Task, K: SyncKit> Drop for RunExit<'_, T, K> {
    fn drop(&mut self) {
        if let Some(r) = self.reg.take() {
            self.sched.threads.unregister(r);
        }
        // Anything left privately (a stop mid-task, an unwinding handler)
        // goes back to the shared queue with its work counted.
        self.sched.publish_private(self.ti);
        self.sched.flush_cache(self.ti);
    }
}

/// Completion of a posted handler: move the closure out, free the slot so
/// the handler's own posts can reuse it, then run or drop the closure.
///
/// # Safety
/// See [`CompleteFn`](crate::op::CompleteFn).
pub(crate) unsafe fn complete_handler<F: Runnable, T: Task, K: SyncKit>(
    op: NonNull<Operation>,
    owner: *const (),
    how: Invoke<'_>,
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

/// Keeps a scheduler's `run` from returning for lack of work while alive
/// (Asio's `executor_work_guard`).
pub struct WorkGuard<'a, T: Task, K: SyncKit> {
    sched: &'a Scheduler<T, K>,
}

impl<T: Task, K: SyncKit> WorkGuard<'_, T, K> {
    /// Releases the guard now (same as dropping it).
    pub fn reset(self) {}
}

impl<T: Task, K: SyncKit> Drop for WorkGuard<'_, T, K> {
    fn drop(&mut self) {
        self.sched.work_finished();
    }
}
