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
//! - I/O that a handler starts and that completes at once (a speculative
//!   `recv`/`send` that moved bytes) runs right after that handler, ahead
//!   of the rest of the batch, up to [`CHAIN_MAX`] completions in a row;
//!   then it joins the queue as in Asio. A stream connection is served
//!   until it would block, as a tokio task is polled until it returns
//!   `Pending` (coop budget 128): a connection's reads and writes follow
//!   each other while its socket buffers are warm, and on loopback the
//!   bulk stream sends fewer window updates and zero-window probes. `post`,
//!   `defer` and task wake-ups keep their place in the queue.
//! - Operation slots freed by a running thread go to a small per-thread
//!   cache that the same thread's next post takes from (Asio's
//!   thread-local recycling allocator).
//!
//! Threads are recognised without thread-local storage (core is no_std):
//! each thread inside `run` registers its stack-allocated `ThreadInfo`
//! under its thread id (`pinion_sync::current_thread_id`). Where no id is
//! available, every post takes the locked path.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use pinion_sync::{RawMutex, SyncKit, WakeEvent};

use crate::backend::{Task, Wait};
use crate::loom::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use crate::loom::cell::UnsafeCell;
use crate::loom::{event_init, mutex_init};
use crate::memory::Region;
use crate::op::{Invoke, Operation};
use crate::pool::{SlotPool, SlotStorage};
use crate::queue::OpQueue;
use crate::task::{BlockOn, TaskPool, TaskStorage};

mod guards;
mod handlers;
mod plumbing;
mod thread;

pub use guards::WorkGuard;
use guards::{BatchGuard, RunExit};
pub(crate) use handlers::{complete_handler, Bound, HandlerOp};
use thread::Registry;
pub use thread::{Here, IMMEDIATE_BUDGET};
pub(crate) use thread::{StrandFrame, ThreadInfo, NO_TASK};

/// Most handlers one thread takes per lock on a context run by several
/// threads; small enough that a sibling thread finds work quickly.
pub const MULTI_THREAD_BATCH: usize = 16;
/// Threads that may be inside `run` at once with the private fast path;
/// more may run, taking the locked path for their posts.
pub const MAX_RUN_THREADS: usize = 32;
/// Most I/O continuations run in a row after one handler
/// ([`Scheduler::post_continuation_in`]) before the rest of the batch gets
/// its turn: 32 read-and-write rounds of one connection.
pub const CHAIN_MAX: usize = 64;
/// Free slots a running thread keeps for its own next posts.
const SLOT_CACHE_MAX: usize = 8;

/// [`Scheduler::life`]: running normally.
const LIVE: u8 = 0;
/// `shutdown` has begun: `run` returns 0 at once, work still queues.
const CLOSING: u8 = 1;
/// `shutdown` has finished: nothing queues any more.
const SHUT: u8 = 2;

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
    tasks: TaskPool<K::Mutex>,
    block: BlockOn,
    /// What the facade did to the pools at build: bit 0 committed, bit 1
    /// locked (`Builder::commit_memory`, `Builder::lock_memory`).
    memory_marks: AtomicU8,
    /// `LIVE`, `CLOSING` or `SHUT` (see [`shutdown`](Self::shutdown)).
    /// Becomes `SHUT` under the mutex, where queueing looks at it.
    life: AtomicU8,
    /// Threads inside `run_loop`: shutdown waits for them to leave.
    runners: AtomicUsize,
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
            mutex: mutex_init(),
            event: event_init(),
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
            tasks: TaskPool::new(TaskStorage::none()),
            block: BlockOn::new::<T, K>(),
            memory_marks: AtomicU8::new(0),
            life: AtomicU8::new(LIVE),
            runners: AtomicUsize::new(0),
            _k: PhantomData,
        }
    }

    /// The scheduler with a task pool on `storage` (see [`crate::task`]).
    pub fn with_tasks(mut self, storage: TaskStorage) -> Self {
        self.tasks = TaskPool::new(storage);
        self
    }

    #[inline(always)]
    pub(crate) fn tasks(&self) -> &TaskPool<K::Mutex> {
        &self.tasks
    }

    #[inline(always)]
    pub(crate) fn block_on_record(&self) -> &BlockOn {
        &self.block
    }

    /// The backend task.
    #[inline]
    pub fn task(&self) -> &T {
        &self.task
    }

    /// The memory of the operation slots and of the task pool (the
    /// backend lists its own: `Backend::memory`).
    pub fn memory(&self, out: &mut dyn FnMut(Region)) {
        out(self.pool.region());
        self.tasks.regions(out);
    }

    /// Records what the facade did to this context's memory at build
    /// (committed it; locked it, which it undoes when the context drops).
    pub fn mark_memory(&self, committed: bool, locked: bool) {
        self.memory_marks
            .store(committed as u8 | (locked as u8) << 1, Ordering::Relaxed);
    }

    /// What [`mark_memory`](Self::mark_memory) recorded: (committed, locked).
    pub fn memory_marks(&self) -> (bool, bool) {
        let m = self.memory_marks.load(Ordering::Relaxed);
        (m & 1 != 0, m & 2 != 0)
    }

    /// Operation slots: (in use, capacity). O(free slots); for
    /// diagnostics and tests.
    pub fn ops_in_use(&self) -> (usize, usize) {
        (self.pool.in_use(), self.pool.capacity())
    }

    /// A guard that keeps `run` from running out of work until dropped.
    pub fn work_guard(&self) -> WorkGuard<'_, T, K> {
        // SAFETY: matched by the guard's drop.
        unsafe { self.work_started() };
        WorkGuard { sched: self }
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

    pub(crate) fn run_loop(&self, wait: Wait, limit: usize) -> usize {
        // Counted before `life` is read (both SeqCst): a shutdown that has
        // begun is seen here, or sees this thread and waits for it.
        self.runners.fetch_add(1, Ordering::SeqCst);
        let _runner = Runner { sched: self };
        if self.life.load(Ordering::SeqCst) != LIVE {
            return 0;
        }
        if self.outstanding_work.load(Ordering::Acquire) == 0 && !self.task.busy() {
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
            // Out of work, yet not stopped: a `restart` raced the stop the
            // last work item made. Sleeping now would never end (nothing
            // is left to post a wake-up), so stop as `run` does on entry.
            // A busy task (a teardown of its own to finish) is run on
            // instead, and the stop comes here once it is done.
            if wait != Wait::Poll
                && self.outstanding_work.load(Ordering::Acquire) == 0
                && !self.task.busy()
            {
                // SAFETY: held; `stop` takes the mutex itself.
                unsafe { self.unlock() };
                self.stop();
                return 0;
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
                // SAFETY: this thread took the task sentinel, so no other
                // runs the task; the private queue is used only by this
                // thread and no other reference to it is live across this
                // call.
                unsafe { self.task.run(task_wait, ti.private()) };
                task_ran = true;
                // Asio's task_cleanup: publish private work, requeue the
                // completions and then the sentinel behind them.
                ti.demote_next();
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
    ///
    /// One loop serves the batch and the I/O continuations its handlers
    /// queue ([`post_continuation_in`](Self::post_continuation_in)): each
    /// turn runs the next continuation if there is one and the chain is
    /// shorter than [`CHAIN_MAX`] (else the chain's rest joins the private
    /// queue), or the next op of the batch. One call site and one test of
    /// `next_head` per op keep chaining cheap: a second loop for the chain,
    /// with its own call site and a queue for the continuations, ran 24
    /// instructions per op where this one runs 18 (io_uring echo_server,
    /// callgrind).
    fn run_batch(&self, ti: &ThreadInfo, batch: &mut OpQueue) -> usize {
        let owner = self.owner();
        let mut guard = BatchGuard {
            sched: self,
            ti,
            batch: OpQueue::new(),
            ran: 0,
        };
        guard.batch.push_queue(batch);
        let mut chained = 0usize;
        'ops: loop {
            // Nested tests, not one `&&`: with the conditions combined the
            // compiler evaluated both on every op, four instructions more.
            let op = 'pick: {
                // Left out for a backend without continuations, which keeps
                // the batch loop as lean as it was before the chain.
                if T::CONTINUATIONS {
                    let next = ti.next_head.get();
                    if !next.is_null() {
                        if chained < CHAIN_MAX {
                            chained += 1;
                            // SAFETY: `next` is `next_head`, not null;
                            // owning thread.
                            break 'pick unsafe { ti.take_next(next) };
                        }
                        // The chain is long enough: its rest joins the
                        // private queue (ordinary completions from here on).
                        ti.demote_next();
                    }
                }
                chained = 0;
                // SAFETY: nothing is pushed onto the batch; BatchGuard only
                // moves a non-empty rest onto the shared queue.
                let Some(op) = (unsafe { guard.batch.pop_drain() }) else {
                    break 'ops;
                };
                // A turn begins: this op and the continuations chained
                // after it share one budget of immediate completions, so a
                // task whose socket is always ready yields after at most
                // IMMEDIATE_BUDGET of them plus CHAIN_MAX continuations.
                ti.budget.set(IMMEDIATE_BUDGET);
                op
            };
            // Counted before the call: the op is consumed even if its
            // handler unwinds.
            guard.ran += 1;
            // SAFETY: `op` was queued by post/defer/a backend (or, as a
            // continuation, by `post_continuation_in`), is live and now on
            // no queue; `owner` is the scheduler it belongs to.
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
        ti.demote_next();
        let pw = ti.private_work.replace(0);
        if pw > ran {
            self.outstanding_work.fetch_add(pw - ran, Ordering::Relaxed);
        } else if pw < ran {
            let d = ran - pw;
            if self.outstanding_work.fetch_sub(d, Ordering::AcqRel) == d {
                self.out_of_work();
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
        ti.demote_next();
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
        self.tasks().flush(ti);
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

    /// The last unit of work finished: stop, unless the task is busy
    /// ([`Task::busy`]); then the thread that runs it next stops once it
    /// is not (the out-of-work check in `do_run_one`).
    #[cold]
    pub(crate) fn out_of_work(&self) {
        if !self.task.busy() {
            self.stop();
        }
    }

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

    /// Clears the stopped state so `run` may be called again; a shut-down
    /// scheduler stays stopped.
    pub fn restart(&self) {
        if self.life.load(Ordering::Acquire) != LIVE {
            return;
        }
        self.lock();
        self.stopped.store(false, Ordering::Relaxed);
        // SAFETY: held.
        unsafe { self.unlock() };
    }

    /// Built with concurrency hint 1: one thread runs it.
    #[inline]
    pub(crate) fn is_one_thread(&self) -> bool {
        self.one_thread
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

    // ---- shutting down -------------------------------------------------

    /// Asio's `scheduler::shutdown`, safe to call on a shared scheduler:
    /// stops it, waits for every thread inside `run` to leave (after its
    /// current handler), then destroys every pending handler, operation
    /// and task without running them, and has the backend task close what
    /// it holds ([`Task::shutdown`]). From then on `run` returns 0 at once,
    /// new operation slots, task slots, timers and descriptors are refused
    /// ([`pool_error`](Self::pool_error) answers `ContextShutDown`), and an
    /// operation that reaches the queue anyway (started on another thread
    /// while this ran) is destroyed on the spot. The memory stays valid.
    ///
    /// A second call (or one racing the first) returns once the first has
    /// finished. `ShutdownInsideRun` if the calling thread is inside this
    /// scheduler's `run` (it would wait for itself).
    pub fn shutdown(&self) -> Result<(), crate::Error> {
        self.shutdown_counted().map(drop)
    }

    /// [`shutdown`](Self::shutdown) for a scheduler this thread owns
    /// (tests: the fault injector's audit). Returns how many operations
    /// were destroyed and unfinished tasks ended (each held a unit of
    /// work); a second call (or the drop after it) finds nothing left to
    /// do.
    pub fn shut_down(&mut self) -> usize {
        // `&mut self`: no thread is inside `run`, so this cannot fail.
        self.shutdown_counted().unwrap_or(0)
    }

    /// [`shutdown`](Self::shutdown), returning how many operations this
    /// call destroyed (0 when another call did the work).
    fn shutdown_counted(&self) -> Result<usize, crate::Error> {
        if self.running_in_this_thread() {
            return Err(crate::Error::ShutdownInsideRun);
        }
        if self
            .life
            .compare_exchange(LIVE, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            self.wait_until(|| self.life.load(Ordering::Acquire) == SHUT);
            return Ok(0);
        }
        self.stop();
        self.wait_until(|| self.runners.load(Ordering::SeqCst) == 0);
        // No thread runs the scheduler, and none can start to.
        self.pool.close();
        self.tasks.close();
        let n = self.teardown();
        let mut late = OpQueue::new();
        self.lock();
        // SAFETY: held.
        let st = unsafe { self.locked() };
        late.push_queue(&mut st.ready);
        late.push_queue(&mut st.after);
        // Queueing looks at `life` under the mutex: nothing joins the
        // queue after this.
        self.life.store(SHUT, Ordering::Release);
        // SAFETY: held, as both calls require.
        unsafe {
            self.event.signal_all(&self.mutex);
            self.unlock();
        }
        Ok(n + self.destroy_all(&mut late))
    }

    /// `true` once [`shutdown`](Self::shutdown) has begun.
    #[inline]
    pub fn is_shut_down(&self) -> bool {
        self.life.load(Ordering::Acquire) != LIVE
    }

    /// The error for a pool that had no free entry: `PoolFull(pool)`, or
    /// `ContextShutDown` once the scheduler is shut down (its pools are
    /// closed then).
    #[cold]
    pub fn pool_error(&self, pool: crate::Pool) -> crate::Error {
        if self.is_shut_down() {
            crate::Error::ContextShutDown
        } else {
            crate::Error::PoolFull(pool)
        }
    }

    /// Sleeps on the scheduler's event until `done` (checked under the
    /// mutex; whoever makes it true signals the event under the mutex).
    fn wait_until(&self, done: impl Fn() -> bool) {
        self.lock();
        while !done() {
            // SAFETY: held, as both calls require; held again after.
            unsafe {
                self.event.clear(&self.mutex);
                self.event.wait(&self.mutex);
            }
        }
        // SAFETY: held.
        unsafe { self.unlock() };
    }

    /// `shutdown` has finished: nothing may join the queue. Read under the
    /// mutex, where `shutdown` sets it.
    #[inline]
    fn is_shut(&self) -> bool {
        self.life.load(Ordering::Relaxed) == SHUT
    }

    /// Destroys `ops` instead of queueing them (the scheduler is shut).
    ///
    /// # Safety
    /// The mutex is held; it is released here. Every op of `ops` is live,
    /// on no other queue, and completes with this scheduler as owner.
    #[cold]
    unsafe fn refuse_when_shut(&self, ops: &mut OpQueue) {
        // SAFETY: held (contract).
        unsafe { self.unlock() };
        self.destroy_all(ops);
    }

    /// Destroys every queued operation and the task's pending ones without
    /// running them, then the tasks that wait for something; returns how
    /// many operations it destroyed and tasks it ended (each held a unit
    /// of work).
    fn teardown(&self) -> usize {
        // Each unfinished task holds a unit of work besides its queued
        // operation, if any; all of them end here, queued ones when their
        // operation is destroyed, waiting ones in `tasks.shutdown`.
        let tasks = self.tasks.unfinished();
        let mut ops = OpQueue::new();
        self.take_queue(&mut ops);
        // SAFETY: no thread runs the scheduler (shutdown waited for every
        // runner and refuses new ones; drop has `&mut self`).
        unsafe { self.task.shutdown(&mut ops) };
        let mut n = self.destroy_all(&mut ops);
        // Tasks waiting for something: their futures go now (which may
        // cancel operations, and so queue more to destroy).
        self.tasks.shutdown();
        self.take_queue(&mut ops);
        n += self.destroy_all(&mut ops);
        n + tasks
    }

    /// Moves everything queued to `ops`.
    fn take_queue(&self, ops: &mut OpQueue) {
        self.lock();
        // SAFETY: held, then released.
        unsafe {
            let st = self.locked();
            ops.push_queue(&mut st.ready);
            ops.push_queue(&mut st.after);
            self.unlock();
        }
    }

    /// Destroys `ops` and whatever destroying them queues, until quiet
    /// (destroying a strand may hand back more work); returns how many.
    fn destroy_all(&self, ops: &mut OpQueue) -> usize {
        let owner = self.owner();
        let mut n = 0;
        loop {
            if ops.is_empty() {
                self.take_queue(ops);
            }
            let Some(op) = ops.pop() else { break n };
            // SAFETY: queued operations are live and owned by this
            // scheduler; destroyed exactly once (taken off every queue).
            unsafe { Operation::complete(op, owner, Invoke::Destroy) };
            n += 1;
        }
    }
}

impl<T: Task, K: SyncKit> Drop for Scheduler<T, K> {
    fn drop(&mut self) {
        // `&mut self`: no thread is inside `run`, so this cannot fail.
        let _ = self.shutdown();
        // Already shut down in place: the backend is told again (what it
        // holds may have changed since, e.g. a socket opened at the same
        // moment), which costs nothing when there is nothing left.
        self.teardown();
    }
}

/// Counts a thread inside `run_loop` until it leaves (also on unwind);
/// the last one out of a closing scheduler wakes its `shutdown`.
struct Runner<'a, T: Task, K: SyncKit> {
    sched: &'a Scheduler<T, K>,
}

impl<T: Task, K: SyncKit> Drop for Runner<'_, T, K> {
    fn drop(&mut self) {
        let s = self.sched;
        if s.runners.fetch_sub(1, Ordering::SeqCst) == 1 && s.life.load(Ordering::SeqCst) != LIVE {
            s.lock();
            // SAFETY: held, as both calls require.
            unsafe {
                s.event.signal_all(&s.mutex);
                s.unlock();
            }
        }
    }
}
