//! The timer service behind `SteadyTimer`, the same on every backend.
//!
//! A timer object has an expiry and any number of pending waits; only an
//! object with waits has an entry in the deadline heap (Asio's
//! `timer_queue` keeps one per timer, with the timer's op queue), so the
//! heap never holds more entries than there are objects, and a wait never
//! finds it full. Objects live in a [`Slab`]: a closed timer's key is
//! stale, and its waits are refused with `BadDescriptor`.
//!
//! ```text
//!   open ─► object (expiry 0) ─ wait ─► waits += op; heap entry if none
//!                                        │
//!     reset(expiry) / cancel / close ────┼─► every wait: OperationAborted
//!     fire(now): entry due ──────────────┴─► every wait: Ok(()), entry gone
//! ```
//!
//! The backend wakes up for [`earliest`](TimerService::earliest) and is
//! told, under the service's lock (so in order), whenever that deadline
//! changes: [`Backend::timers_changed`]. The lock is the only one; a
//! lock-free copy of the earliest deadline lets the runner skip the lock
//! when nothing is due.

use core::cell::{Cell, UnsafeCell};
#[cfg(target_os = "linux")]
use core::mem::ManuallyDrop;
#[cfg(target_os = "linux")]
use core::ptr::addr_of;
use core::ptr::NonNull;

use pinion_sync::{NullMutex, RawMutex};

use super::heap::{TimerHandle, TimerQueue, TimerSlot};
#[cfg(target_os = "linux")]
use crate::backend::{Backend, Sched};
use crate::memory::{MemPool, Region};
use crate::op::{Invoke, Operation};
use crate::queue::OpQueue;
use crate::slab::{Entry, Key, Slab};
use crate::storage::Storage;
use crate::word64::SharedU64;
#[cfg(target_os = "linux")]
use crate::Rejected;
use crate::{Error, Pool, Result};

/// One timer object: its expiry, its pending waits and its heap entry.
/// Opaque; storage for [`TimerService::new`].
#[repr(C)]
pub struct TimerObj {
    /// Names the object in the heap (an address at offset 0); never queued
    /// or completed.
    key: Operation,
    expiry: Cell<u64>,
    waits: UnsafeCell<OpQueue>,
    heap: Cell<Option<TimerHandle>>,
}

// SAFETY: a timer object's raw links name operations, which travel
// between threads like every operation; the object is only touched under
// its service's lock.
unsafe impl Send for TimerObj {}

/// A [`TimerService`]'s storage entry.
pub type TimerEntry = Entry<TimerObj>;

/// The complete function of a heap key, which is never completed.
///
/// # Safety
/// Never called (heap keys are never queued).
unsafe fn never_completed(_: NonNull<Operation>, _: *const (), _: Invoke<'_>) {
    unreachable!("a timer's heap key was completed")
}

impl TimerObj {
    /// An unused object, for `static` initialisers.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: TimerObj = TimerObj {
        key: Operation::new(never_completed),
        expiry: Cell::new(0),
        waits: UnsafeCell::new(OpQueue::new()),
        heap: Cell::new(None),
    };

    /// An unused storage entry: `[TimerObj::ENTRY; N]`.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const ENTRY: TimerEntry = Entry::new(TimerObj::EMPTY);

    /// # Safety
    /// The service's lock is held, and no other reference to the waits is
    /// live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn waits(&self) -> &mut OpQueue {
        // SAFETY: per contract.
        unsafe { &mut *self.waits.get() }
    }
}

/// State under the service's lock.
struct Inner {
    objects: Slab<TimerObj, NullMutex>,
    heap: TimerQueue,
    /// The earliest deadline last given to `changed`; `u64::MAX`: none.
    reported: u64,
}

/// Timer objects and their waits (see the module docs).
pub struct TimerService<M: RawMutex> {
    lock: M,
    inner: UnsafeCell<Inner>,
    /// Lock-free copy of the heap's earliest deadline; `u64::MAX`: none.
    earliest: SharedU64,
}

// SAFETY: `inner` (objects, waits, heap) is only reached under `lock`;
// the waits are operations, which travel between threads like any.
unsafe impl<M: RawMutex + Sync> Sync for TimerService<M> {}
// SAFETY: as above; the storage is owned.
unsafe impl<M: RawMutex + Send> Send for TimerService<M> {}

/// The guard of the service's lock.
struct Guard<'a, M: RawMutex> {
    svc: &'a TimerService<M>,
}

impl<M: RawMutex> Drop for Guard<'_, M> {
    fn drop(&mut self) {
        // SAFETY: made by `with` right after locking; unlocks once.
        unsafe { self.svc.lock.unlock() }
    }
}

/// Moves every wait of `o` to `out` with `OperationAborted`, taking its
/// heap entry out; returns how many.
fn abort_waits(heap: &mut TimerQueue, o: &TimerObj, out: &mut OpQueue) -> usize {
    if let Some(h) = o.heap.take() {
        heap.cancel(h);
    }
    // SAFETY: under the lock (every caller holds it), one reference.
    let waits = unsafe { o.waits() };
    let mut n = 0;
    while let Some(op) = waits.pop() {
        // SAFETY: a queued wait is live and now leaves for `out`.
        unsafe {
            op.as_ref().set_result(Err(Error::OperationAborted));
            out.push(op);
        }
        n += 1;
    }
    n
}

impl<M: RawMutex> TimerService<M> {
    /// A service for `min(objects.len(), heap.len())` timer objects.
    pub fn new(objects: Storage<TimerEntry>, heap: Storage<TimerSlot>) -> Self {
        TimerService {
            lock: crate::loom::mutex_init(),
            inner: UnsafeCell::new(Inner {
                objects: Slab::new(objects),
                heap: TimerQueue::new(heap),
                reported: u64::MAX,
            }),
            earliest: SharedU64::new(u64::MAX),
        }
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.lock.lock();
        let _g = Guard { svc: self };
        // SAFETY: `inner` is only reached under the lock, held until `_g`
        // drops (also on unwind); `f` does not reenter the service.
        f(unsafe { &mut *self.inner.get() })
    }

    /// Tells `changed` about a new earliest deadline, under the lock.
    fn report(&self, i: &mut Inner, changed: impl FnOnce(Option<u64>)) {
        let e = i.heap.earliest().unwrap_or(u64::MAX);
        self.earliest.store(e);
        if e != i.reported {
            i.reported = e;
            changed((e != u64::MAX).then_some(e));
        }
    }

    /// Timer objects the service can hold.
    pub fn capacity(&self) -> usize {
        self.with(|i| i.objects.capacity().min(i.heap.capacity()))
    }

    /// The memory of the timer objects and of their heap, under the lock.
    pub fn regions(&self, out: &mut dyn FnMut(Region)) {
        let (objects, heap) = self.with(|i| (i.objects.region(MemPool::Timers), i.heap.region()));
        out(objects);
        out(heap);
    }

    /// Timer objects open now.
    pub fn in_use(&self) -> usize {
        self.with(|i| i.objects.in_use())
    }

    /// The earliest deadline of a pending wait, read without the lock.
    #[inline]
    pub fn earliest(&self) -> Option<u64> {
        let e = self.earliest.load();
        (e != u64::MAX).then_some(e)
    }

    /// Runs `f` with the earliest deadline, under the service's lock: a
    /// runner that publishes how long it will sleep from inside `f` is
    /// ordered against every `changed` callback (which runs under the same
    /// lock), so a wait queued meanwhile with an earlier deadline sees the
    /// published value and can wake it.
    pub fn with_earliest<R>(&self, f: impl FnOnce(Option<u64>) -> R) -> R {
        self.with(|i| f(i.heap.earliest()))
    }

    /// A new timer object, expiring at 0 (already due); `PoolFull(Timers)`
    /// when every object is open.
    pub fn open(&self) -> Result<Key> {
        self.with(|i| {
            if i.objects.in_use() >= i.heap.capacity() {
                return Err(Error::PoolFull(Pool::Timers));
            }
            let (k, o) = i.objects.insert().ok_or(Error::PoolFull(Pool::Timers))?;
            o.expiry.set(0);
            o.heap.set(None);
            Ok(k)
        })
    }

    /// The expiry of timer `key`.
    pub fn expiry(&self, key: Key) -> Result<u64> {
        self.with(|i| {
            let o = i.objects.get(key).ok_or(Error::BadDescriptor)?;
            Ok(o.expiry.get())
        })
    }

    /// Aborts every wait of timer `key` into `out` and, with `expiry`, sets
    /// its expiry; with `close`, frees the object too. Returns how many
    /// waits were aborted.
    pub fn reset(
        &self, key: Key, expiry: Option<u64>, close: bool, out: &mut OpQueue,
        changed: impl FnOnce(Option<u64>),
    ) -> Result<usize> {
        self.with(|i| {
            let o = i.objects.get(key).ok_or(Error::BadDescriptor)?;
            let n = abort_waits(&mut i.heap, o, out);
            if let Some(e) = expiry {
                o.expiry.set(e);
            }
            if close {
                i.objects.retire(key);
                // SAFETY: retired above; its waits and heap entry are gone,
                // so nothing refers to the entry any more.
                unsafe { i.objects.release(key.index()) };
            }
            self.report(i, changed);
            Ok(n)
        })
    }

    /// Queues wait `op` on timer `key`: it completes with `Ok(0)` once the
    /// expiry has passed. `started` runs once the key is known to be
    /// current, before the wait can fire (where it counts its work).
    ///
    /// # Safety
    /// `op` is a live operation on no queue; it stays live until it leaves
    /// the service (fired, aborted or shut down), which sets its result.
    /// On `Err` it was not queued and is still the caller's.
    pub unsafe fn wait(
        &self, key: Key, op: NonNull<Operation>, started: impl FnOnce(),
        changed: impl FnOnce(Option<u64>),
    ) -> Result<()> {
        self.with(|i| {
            let o = i.objects.get(key).ok_or(Error::BadDescriptor)?;
            if o.heap.get().is_none() {
                // SAFETY: the key is the object's own header, on no queue
                // while the object is out of the heap, and it lives as long
                // as the storage. The heap holds as many entries as there
                // are objects, each at most once: never full.
                let h = unsafe { i.heap.insert(o.expiry.get(), NonNull::from(&o.key)) }
                    .map_err(|_| Error::PoolFull(Pool::Timers))?;
                o.heap.set(Some(h));
            }
            started();
            // SAFETY: under the lock; `op` per contract.
            unsafe {
                op.as_ref().set_result(Ok(0));
                o.waits().push(op);
            }
            self.report(i, changed);
            Ok(())
        })
    }

    /// Moves the waits of every timer due by `now` to `out` (`Ok(0)`), in
    /// deadline order; returns how many. Skips the lock when nothing is due.
    pub fn fire(&self, now: u64, out: &mut OpQueue, changed: impl FnOnce(Option<u64>)) -> usize {
        if self.earliest.load() > now {
            return 0;
        }
        self.with(|i| {
            let mut due = OpQueue::new();
            i.heap.pop_expired(now, &mut due);
            let mut n = 0;
            while let Some(k) = due.pop() {
                // SAFETY: heap keys are the headers at offset 0 of timer
                // objects (`#[repr(C)]`), which live in the slab's storage.
                let o = unsafe { k.cast::<TimerObj>().as_ref() };
                o.heap.set(None);
                // SAFETY: under the lock, one reference.
                let waits = unsafe { o.waits() };
                while let Some(op) = waits.pop() {
                    // SAFETY: a queued wait is live; it leaves for `out`.
                    unsafe { out.push(op) };
                    n += 1;
                }
            }
            self.report(i, changed);
            n
        })
    }

    /// Moves every pending wait to `out` (`OperationAborted`) for
    /// destruction, empties the heap, retires every timer object and
    /// opens none any more (the backend's shutdown).
    pub fn shutdown(&self, out: &mut OpQueue) {
        self.with(|i| {
            // No new timer; every open one retired, so a handle to it
            // answers `BadDescriptor` (its slot is never reused).
            i.objects.close();
            for index in 0..i.objects.used() {
                if let Some(o) = i.objects.at(index) {
                    abort_waits(&mut i.heap, o, out);
                }
                if let Some(k) = i.objects.key_of(index) {
                    i.objects.retire(k);
                }
            }
            debug_assert!(i.heap.is_empty());
            i.reported = u64::MAX;
            self.earliest.store(u64::MAX);
        })
    }
}

// ---- SteadyTimer's operations, over any backend --------------------------

/// Hands aborted waits to the scheduler (their work was counted).
#[cfg(target_os = "linux")]
fn post_aborted<B: Backend>(sched: &Sched<B>, out: &mut OpQueue) {
    if !out.is_empty() {
        // SAFETY: every op in `out` is a wait whose work `async_wait`
        // counted, now off the service's queues.
        unsafe { sched.post_deferred_completions(out) };
    }
}

/// Opens a timer object on `sched`'s backend.
#[cfg(target_os = "linux")]
pub fn open<B: Backend>(sched: &Sched<B>) -> Result<Key> {
    sched.task().timers().open().map_err(|e| match e {
        Error::PoolFull(p) => sched.pool_error(p),
        e => e,
    })
}

/// Cancels every wait of timer `key` (they complete with
/// `OperationAborted`), sets its expiry when `expiry` is given, and with
/// `close` frees the timer. Returns how many waits were cancelled.
#[cfg(target_os = "linux")]
pub fn reset<B: Backend>(
    sched: &Sched<B>, key: Key, expiry: Option<u64>, close: bool,
) -> Result<usize> {
    let mut out = OpQueue::new();
    let task = sched.task();
    let n = task
        .timers()
        .reset(key, expiry, close, &mut out, |e| task.timers_changed(e))?;
    post_aborted(sched, &mut out);
    Ok(n)
}

/// A timer wait in its operation slot.
#[repr(C)]
#[cfg(target_os = "linux")]
struct WaitOp<F> {
    header: Operation,
    handler: ManuallyDrop<F>,
}

/// # Safety
/// See [`CompleteFn`](crate::op::CompleteFn); `op` is a `WaitOp<F>` of
/// the scheduler `owner`, a `Sched<B>`.
#[cfg(target_os = "linux")]
unsafe fn complete_wait<B: Backend, F: FnOnce(Result<()>) + Send + 'static>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let p = op.cast::<WaitOp<F>>();
    // SAFETY: `p` is live and ours; fields read once, then the slot freed.
    let (res, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched<B>) };
    // SAFETY: values moved out above; freed once; `how` is this scheduler's.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        handler(res.map(drop))
    }
}

/// Waits on timer `key`: `Ok(())` once its expiry has passed,
/// `OperationAborted` when cancelled, reset or closed first. A stale key
/// or a full operation pool hands `handler` back.
#[cfg(target_os = "linux")]
pub fn async_wait<B, F>(
    sched: &Sched<B>, key: Key, handler: F,
) -> core::result::Result<(), Rejected<F>>
where
    B: Backend,
    F: FnOnce(Result<()>) + Send + 'static,
{
    let op = WaitOp {
        header: Operation::new(complete_wait::<B, F>),
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler.
    let p = unsafe {
        sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
    }?;
    let task = sched.task();
    // SAFETY: a fresh wait op on no queue; its work is counted once, when
    // it is queued, and finished by its completion.
    let queued = unsafe {
        task.timers().wait(
            key,
            p.cast(),
            || sched.io_work_started(),
            |e| task.timers_changed(e),
        )
    };
    queued.map_err(|error| {
        // SAFETY: not queued (wait's contract): the op is still ours; the
        // handler moves out once, then the slot is freed.
        let handler = unsafe {
            let h = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*p.as_ptr()).handler)));
            sched.free_op_in(here, p);
            h
        };
        Rejected { error, handler }
    })
}
