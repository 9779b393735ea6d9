//! Tasks: futures that the scheduler runs as operations.
//!
//! A task is an operation whose completion polls its future. Waking the
//! task posts that operation (through its strand, when it has one), so
//! handlers, strands and tasks share one queue and every thread in
//! `run()` can poll tasks. A task counts as one unit of work until it
//! finishes, so `run()` returns once every task is done (or on `stop`).
//!
//! Task memory is reserved when the context is built
//! ([`TaskStorage`]: `count` slots of `max_future_bytes` each); [`spawn`]
//! never allocates. A full pool, or a future (or output) larger than a
//! slot, hands the future back inside the error.
//!
//! Contexts that run tasks are `'static` (spawning takes `&'static self`),
//! and a slot returns to the pool only when its last `Waker` and its
//! `JoinHandle` are gone, so a waker never reaches freed or reused memory
//! and waking a finished task is a no-op.
//!
//! [`spawn`]: crate::Scheduler::spawn

use core::cell::UnsafeCell;
use core::future::Future;
use core::mem::{align_of, size_of, MaybeUninit};
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};

use pinion_sync::{RawMutex, SyncKit};

use crate::backend::Task;
use crate::memory::{Contents, MemPool, Region};
use crate::op::Operation;
use crate::scheduler::{Here, Scheduler, ThreadInfo, NO_TASK};
use crate::slab::{Entry, Key, Slab};
use crate::storage::Storage;
use crate::{Error, Pool, Rejected};

mod block_on;
pub mod io;
mod join;
mod raw;

pub(crate) use block_on::BlockOn;
pub use join::JoinHandle;
pub(crate) use raw::schedule_in_strand;
pub use raw::TaskHeader;
use raw::TaskOwner;

/// Alignment of every task's future storage: futures and outputs aligned
/// more strictly are refused (`TaskTooLarge`).
pub const TASK_ALIGN: usize = 16;

/// One 16-byte unit of task storage.
#[repr(C, align(16))]
pub struct TaskChunk(UnsafeCell<MaybeUninit<[u8; TASK_ALIGN]>>);

impl TaskChunk {
    /// An unused chunk, for `static` initialisers.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: TaskChunk = TaskChunk(UnsafeCell::new(MaybeUninit::uninit()));
}

/// The memory of a context's task pool: one header per task, and each
/// task's future storage.
pub struct TaskStorage {
    headers: Storage<Entry<TaskHeader>>,
    chunks: Storage<TaskChunk>,
    /// Chunks per task, worked out where the sizes are known: a context
    /// without tasks then links no division (a library call on 32-bit ARM).
    per: usize,
}

impl TaskStorage {
    /// No tasks (spawning answers `NoPool(Tasks)`).
    pub fn none() -> Self {
        TaskStorage {
            headers: Storage::from_static(&mut []),
            chunks: Storage::from_static(&mut []),
            per: 0,
        }
    }

    /// `count` tasks of up to `max_future_bytes` each, boxed once.
    #[cfg(any(test, feature = "alloc"))]
    pub fn boxed(count: usize, max_future_bytes: usize) -> Self {
        let per = Self::chunks_for(max_future_bytes);
        TaskStorage {
            headers: Storage::boxed_with(count, || Entry::new(TaskHeader::EMPTY)),
            chunks: Storage::boxed_with(count * per, || TaskChunk::EMPTY),
            per: if count == 0 { 0 } else { per },
        }
    }

    /// Task storage on caller-provided memory: one header per task, and
    /// `chunks.len() / headers.len()` chunks (16 bytes each) per task.
    pub fn from_static(
        headers: &'static mut [Entry<TaskHeader>], chunks: &'static mut [TaskChunk],
    ) -> Self {
        let per = chunks.len().checked_div(headers.len()).unwrap_or(0);
        TaskStorage {
            headers: Storage::from_static(headers),
            chunks: Storage::from_static(chunks),
            per,
        }
    }

    /// Chunks a slot needs for `bytes` of future.
    pub const fn chunks_for(bytes: usize) -> usize {
        bytes.div_ceil(TASK_ALIGN)
    }
}

/// The task pool of a scheduler.
pub(crate) struct TaskPool<M: RawMutex> {
    slab: Slab<TaskHeader, M>,
    chunks: Storage<TaskChunk>,
    /// Chunks per task.
    per: usize,
}

impl<M: RawMutex> TaskPool<M> {
    pub(crate) fn new(storage: TaskStorage) -> Self {
        TaskPool {
            slab: Slab::new(storage.headers),
            chunks: storage.chunks,
            per: storage.per,
        }
    }

    /// Bytes of future (or output) one task may hold.
    pub(crate) fn max_future_bytes(&self) -> usize {
        self.per * TASK_ALIGN
    }

    /// The headers' and the futures' memory (futures are scratch until
    /// a slot is first taken).
    pub(crate) fn regions(&self, out: &mut dyn FnMut(Region)) {
        out(self.slab.region(MemPool::TaskHeaders));
        out(Region {
            count: self.slab.capacity(),
            item_bytes: self.max_future_bytes(),
            ..self.chunks.region(MemPool::TaskFutures, Contents::Scratch)
        });
    }

    /// Tasks: (slots in use, capacity). A slot a thread keeps for its next
    /// spawn counts as free when that thread asks.
    pub(crate) fn in_use(&self, here: Option<Here<'_>>) -> (usize, usize) {
        let kept = here.is_some_and(|h| h.ti.recycled_task.get() != NO_TASK);
        (self.slab.in_use() - kept as usize, self.slab.capacity())
    }

    /// A free slot and its storage: the one this thread freed last if it
    /// kept one (no lock), else one from the slab.
    fn take(&self, here: Option<Here<'_>>) -> Option<(Key, NonNull<TaskHeader>, *mut u8)> {
        let kept = here.map_or(NO_TASK, |h| h.ti.recycled_task.replace(NO_TASK));
        let (key, hdr) = if kept != NO_TASK {
            let key = self.slab.key_of(kept)?;
            (key, self.slab.at(kept)?)
        } else {
            self.slab.insert()?
        };
        // SAFETY: `index < capacity`, and the chunk storage holds `per`
        // chunks for each of the slab's entries.
        let storage = unsafe { self.chunks.as_ptr().add(key.index() as usize * self.per) };
        Some((key, NonNull::from(hdr), storage as *mut u8))
    }

    /// Retires the slot of `key` and frees it, or keeps it for this
    /// thread's next spawn (until the thread may block: [`flush`]).
    ///
    /// # Safety
    /// The slot of `key` is taken and nothing refers to it any more.
    ///
    /// [`flush`]: Self::flush
    pub(crate) unsafe fn give_back(&self, here: Option<Here<'_>>, key: Key) {
        // SAFETY: nothing else refers to the slot, so nobody else retires it.
        unsafe { self.slab.retire_owned(key) };
        if let Some(h) = here {
            if h.ti.recycled_task.get() == NO_TASK {
                h.ti.recycled_task.set(key.index());
                return;
            }
        }
        // SAFETY: per contract.
        unsafe { self.slab.release(key.index()) };
    }

    /// Frees the slot `ti` kept, if any (before its thread may block, and
    /// when it leaves `run`), so other threads can spawn into it.
    pub(crate) fn flush(&self, ti: &ThreadInfo) {
        let kept = ti.recycled_task.replace(NO_TASK);
        if kept != NO_TASK {
            // SAFETY: a retired slot no one refers to, kept by this thread
            // alone and released once.
            unsafe { self.slab.release(kept) };
        }
    }

    /// Tasks that have not finished (shutdown: each holds one unit of
    /// work, counted at spawn, that the shutdown ends).
    pub(crate) fn unfinished(&self) -> usize {
        (0..self.slab.used())
            .filter_map(|i| self.slab.at(i))
            .filter(|hdr| {
                let state = hdr.state.load(core::sync::atomic::Ordering::Acquire);
                state & raw::REF_MASK != 0 && state & raw::COMPLETE == 0
            })
            .count()
    }

    /// Takes no task any more (a context shut down in place): `spawn`
    /// answers `ContextShutDown`.
    pub(crate) fn close(&self) {
        self.slab.close();
    }

    /// Drops the future of every task that has not finished and is not
    /// queued (shutdown: no thread is inside `run`, and the queued ones
    /// are destroyed from the queue). Each task is claimed by setting
    /// `SCHEDULED` as a waker would, so a waker on another thread racing
    /// with this finds it queued and leaves it alone.
    pub(crate) fn shutdown(&self) {
        use core::sync::atomic::Ordering::{AcqRel, Acquire};
        let n = self.slab.used();
        for i in 0..n {
            let Some(hdr) = self.slab.at(i) else { continue };
            let h = NonNull::from(hdr);
            let mut cur = hdr.state.load(Acquire);
            let claimed = loop {
                let idle = cur & (raw::SCHEDULED | raw::RUNNING | raw::COMPLETE) == 0;
                if cur & raw::REF_MASK == 0 || !idle {
                    break false;
                }
                match hdr
                    .state
                    .compare_exchange_weak(cur, cur | raw::SCHEDULED, AcqRel, Acquire)
                {
                    Ok(_) => break true,
                    Err(actual) => cur = actual,
                }
            };
            if !claimed {
                continue;
            }
            if hdr.on_home_thread() {
                // SAFETY: claimed (SCHEDULED, on no queue, not running):
                // its future is live and ours; finishing clears SCHEDULED
                // and sets COMPLETE in one step.
                unsafe { raw::finish_without_output(h, false) };
            } else {
                // SAFETY: as above; a local task's future is leaked
                // rather than dropped on another thread.
                unsafe { raw::finish_leaking(h) };
            }
        }
    }
}

// SAFETY: tasks are queued on the scheduler and complete with it as owner
// (`post_immediate_completion`); slots go back to its own pool.
unsafe impl<T: Task + Sync + 'static, K: SyncKit + 'static> TaskOwner for Scheduler<T, K>
where
    Scheduler<T, K>: Sync,
{
    #[inline]
    unsafe fn schedule_op(&self, op: NonNull<Operation>) {
        // SAFETY: forwarded: a task op of this scheduler, on no queue.
        unsafe { self.post_immediate_completion(op) }
    }

    #[inline]
    unsafe fn task_finished(&self) {
        // SAFETY: matches the unit counted at spawn.
        unsafe { self.work_finished() }
    }

    unsafe fn release_task(&self, key: Key) {
        // SAFETY: forwarded; a Here of this scheduler.
        unsafe { self.tasks().give_back(self.here(), key) }
    }

    unsafe fn schedule_in_strand(&self, strand: *const (), op: NonNull<Operation>) {
        // SAFETY: forwarded: a live strand of this scheduler, a task op.
        unsafe { crate::strand::enqueue_raw(self, strand, op) }
    }

    unsafe fn release_strand(&self, strand: *const ()) {
        // SAFETY: forwarded: the task's own reference.
        unsafe { crate::strand::drop_ref_raw(self, strand) }
    }
}

impl<T: Task + Sync + 'static, K: SyncKit + 'static> Scheduler<T, K>
where
    Scheduler<T, K>: Sync,
{
    /// Runs `future` as a task on this scheduler; any thread in `run()`
    /// may poll it. Hands the future back with `NoPool(Tasks)` (built
    /// without tasks), `PoolFull(Tasks)`, or `TaskTooLarge(bytes)` when
    /// the future or its output does not fit a task slot.
    pub fn spawn<F>(&'static self, future: F) -> Result<JoinHandle<F::Output>, Rejected<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // SAFETY: no strand: queued on this scheduler.
        unsafe { self.spawn_with(future, raw::schedule_plain::<Self>, core::ptr::null()) }
    }

    /// # Safety
    /// `schedule` queues a task of this scheduler so that it completes
    /// with it as owner; `strand` is what `schedule` needs (null for the
    /// plain path), and if non-null the caller has taken a reference to
    /// it that the task's release gives back.
    pub(crate) unsafe fn spawn_with<F>(
        &'static self, future: F, schedule: unsafe fn(NonNull<TaskHeader>), strand: *const (),
    ) -> Result<JoinHandle<F::Output>, Rejected<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (key, h, storage) = match self.reserve_task::<F>() {
            Ok(slot) => slot,
            Err(error) => {
                return Err(Rejected {
                    error,
                    handler: future,
                })
            }
        };
        // SAFETY: the live task's unit of work, finished when it completes.
        unsafe { self.work_started() };
        // SAFETY: a fresh slot of this scheduler's pool, exclusively ours;
        // the storage fits (checked above); `schedule` per contract.
        unsafe {
            raw::init_and_schedule(h, key, storage, self, future, schedule, strand);
            Ok(JoinHandle::new(h))
        }
    }

    /// Runs a future that need not be `Send` (it may hold `Rc`s or
    /// `RefCell`s) as a task polled only on the calling thread, which must
    /// be the one thread that runs this scheduler: `NotOneThread` unless it
    /// was built with concurrency hint 1 (and the target has a thread id).
    /// Otherwise as [`spawn`](Self::spawn): the same slots and refusals,
    /// and its wakers may be woken from any thread.
    ///
    /// Should another thread run the scheduler after all, it never polls
    /// the task: it queues it again for its home thread. If the scheduler
    /// shuts down on another thread, the future is leaked, not dropped.
    pub fn spawn_local<F>(&'static self, future: F) -> Result<JoinHandle<F::Output>, Rejected<F>>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let home = pinion_sync::current_thread_id();
        let slot = if !self.is_one_thread() || home == 0 {
            Err(Error::NotOneThread)
        } else {
            self.reserve_task::<F>()
        };
        let (key, h, storage) = match slot {
            Ok(slot) => slot,
            Err(error) => {
                return Err(Rejected {
                    error,
                    handler: future,
                })
            }
        };
        // SAFETY: the live task's unit of work, finished when it completes.
        unsafe { self.work_started() };
        // SAFETY: a fresh slot of this scheduler's pool, exclusively ours,
        // that fits `F` (reserve_task); queued on this scheduler; `home` is
        // this thread's non-zero id.
        unsafe {
            raw::init_local_and_schedule(
                h,
                key,
                storage,
                self,
                future,
                raw::schedule_plain::<Self>,
                home,
            );
            Ok(JoinHandle::new(h))
        }
    }

    /// A free task slot that fits `F` and its output.
    fn reserve_task<F: Future>(&self) -> Result<(Key, NonNull<TaskHeader>, *mut u8), Error> {
        let pool = self.tasks();
        if pool.slab.capacity() == 0 {
            return Err(Error::NoPool(Pool::Tasks));
        }
        let need = size_of::<F>().max(size_of::<F::Output>());
        let align = align_of::<F>().max(align_of::<F::Output>());
        if need > pool.max_future_bytes() || align > TASK_ALIGN {
            return Err(Error::TaskTooLarge(need.min(u32::MAX as usize) as u32));
        }
        pool.take(self.here())
            .ok_or_else(|| self.pool_error(Pool::Tasks))
    }

    /// Tasks: (slots in use, capacity).
    pub fn tasks_in_use(&self) -> (usize, usize) {
        self.tasks().in_use(self.here())
    }
}

/// Yields once: the task goes to the back of the queue, so that other
/// handlers and tasks run before it continues.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
