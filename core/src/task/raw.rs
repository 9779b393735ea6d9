//! The task slot and its state machine: the raw-pointer core of tasks.
//!
//! A task slot is a [`TaskHeader`] (in the context's task slab) and a
//! region of the task storage that holds the future, and after it
//! completes, its output. The header's first field is an [`Operation`]:
//! scheduling a task posts that operation, and the scheduler's run loop
//! "completes" it by polling the future, like any handler.
//!
//! One atomic word holds the state and a reference count:
//!
//! ```text
//!   SCHEDULED  the op is queued, or will be requeued by the thread polling it
//!   RUNNING    a thread is polling the future
//!   COMPLETE   the future is gone (finished, aborted, panicked, shut down)
//!   OUTPUT     an output value is stored and the JoinHandle has not taken it
//!   JOIN_INTEREST  a JoinHandle exists
//!   JOIN_WAKER     the JoinHandle's waker is stored; the runner may read it
//!   CANCELLED  abort() was called
//!   refs       one per Waker, one for the JoinHandle, one while not COMPLETE
//! ```
//!
//! The slot goes back to the pool when the count reaches zero, so a
//! `Waker` never points at a slot that was reused; and contexts that run
//! tasks are `'static`, so it never points at freed memory. Waking a task
//! that completed is a no-op; waking one that is queued or being polled
//! costs one compare-and-swap.

use core::cell::{Cell, UnsafeCell};
use core::future::Future;
use core::mem::{self, ManuallyDrop};
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, Waker};

use super::io::{IoEntry, IO_ENTRIES};
use crate::op::{Invoke, Operation};
use crate::slab::Key;

mod wake;

pub(crate) use wake::{abort, drop_ref, ref_inc, run_woken, wake_for_run, WAKER_VTABLE};

pub(crate) const SCHEDULED: usize = 1 << 0;
pub(crate) const RUNNING: usize = 1 << 1;
pub(crate) const COMPLETE: usize = 1 << 2;
pub(crate) const OUTPUT: usize = 1 << 3;
pub(crate) const JOIN_INTEREST: usize = 1 << 4;
pub(crate) const JOIN_WAKER: usize = 1 << 5;
pub(crate) const CANCELLED: usize = 1 << 6;
const REF_SHIFT: u32 = 7;
pub(crate) const REF_ONE: usize = 1 << REF_SHIFT;
pub(crate) const REF_MASK: usize = !(REF_ONE - 1);

/// What a task needs of the scheduler that owns it.
///
/// # Safety
/// `schedule` queues the operation so that it is completed (run or
/// destroyed) exactly once with `self` as owner; `release` takes back a
/// slot of this owner's pool.
pub(crate) unsafe trait TaskOwner: Sync + 'static {
    /// Queues a task's operation as new work.
    ///
    /// # Safety
    /// `op` is a task operation of this owner, on no queue.
    unsafe fn schedule_op(&self, op: NonNull<Operation>);
    /// A live task completed: one unit of work less.
    ///
    /// # Safety
    /// Matches the unit counted when the task was spawned.
    unsafe fn task_finished(&self);
    /// Returns the slot of `key` to the pool.
    ///
    /// # Safety
    /// Nothing refers to the slot any more.
    unsafe fn release_task(&self, key: Key);
    /// Queues a task's operation through the strand `strand`.
    ///
    /// # Safety
    /// `strand` is a strand of this owner whose reference the task holds;
    /// `op` is a task operation of this owner, on no queue.
    unsafe fn schedule_in_strand(&self, strand: *const (), op: NonNull<Operation>);
    /// Gives back the strand reference a task held.
    ///
    /// # Safety
    /// As for `schedule_in_strand`; called once, when the slot is released.
    unsafe fn release_strand(&self, strand: *const ());
}

/// The type-erased operations a slot needs from its future's type.
pub(crate) struct TaskVTable {
    /// Drops the future in the slot's storage.
    pub(crate) drop_future: unsafe fn(*mut u8),
    /// Drops the output in the slot's storage.
    pub(crate) drop_output: unsafe fn(*mut u8),
    /// Gives the slot back to its owner's pool.
    pub(crate) release: unsafe fn(NonNull<TaskHeader>),
    /// `TaskOwner::task_finished` on the owner.
    pub(crate) finished: unsafe fn(*const ()),
}

/// The vtable of a slot that holds nothing (never called).
static UNUSED: TaskVTable = TaskVTable {
    drop_future: unused_ptr,
    drop_output: unused_ptr,
    release: unused_header,
    finished: unused_owner,
};

fn unused_owner(_: *const ()) {
    unreachable!("pinion: a free task slot was used")
}

fn unused_ptr(_: *mut u8) {
    unreachable!("pinion: a free task slot was used")
}

fn unused_header(_: NonNull<TaskHeader>) {
    unreachable!("pinion: a free task slot was used")
}

/// The vtable for futures of type `F` owned by `S`.
struct VTableOf<F, S>(core::marker::PhantomData<(F, S)>);

impl<F: Future, S: TaskOwner> VTableOf<F, S> {
    const V: TaskVTable = TaskVTable {
        drop_future: drop_in_place_as::<F>,
        drop_output: drop_in_place_as::<F::Output>,
        release: release_slot::<S>,
        finished: finished_on::<S>,
    };
}

/// # Safety
/// `p` holds a live `T`, dropped once.
unsafe fn drop_in_place_as<T>(p: *mut u8) {
    // SAFETY: per contract.
    unsafe { ptr::drop_in_place(p as *mut T) }
}

/// # Safety
/// `owner` is an `&'static S`; as for `TaskOwner::task_finished`.
unsafe fn finished_on<S: TaskOwner>(owner: *const ()) {
    // SAFETY: per contract.
    unsafe { (*(owner as *const S)).task_finished() }
}

/// # Safety
/// `h`'s reference count reached zero.
unsafe fn release_slot<S: TaskOwner>(h: NonNull<TaskHeader>) {
    // SAFETY: the slot is ours alone (count zero).
    let hdr = unsafe { h.as_ref() };
    // SAFETY: nobody reads the join waker any more.
    drop(unsafe { (*hdr.join_waker.get()).take() });
    debug_assert!(hdr.io.iter().all(IoEntry::is_free));
    hdr.state.store(0, Ordering::Relaxed);
    hdr.vtable.set(&UNUSED);
    let strand = hdr.strand.replace(ptr::null());
    // SAFETY: `owner` is the `S` that spawned this task; nothing refers
    // to the slot any more.
    let owner = unsafe { &*(hdr.owner.get() as *const S) };
    // SAFETY: as above; the slot is not read after this.
    unsafe { owner.release_task(hdr.key.get()) };
    if !strand.is_null() {
        // SAFETY: the reference the task took at spawn, given back once.
        unsafe { owner.release_strand(strand) };
    }
}

/// One task slot's header (opaque outside the task module).
#[repr(C)]
pub struct TaskHeader {
    /// First, so that the operation's address is the header's.
    op: UnsafeCell<Operation>,
    pub(crate) state: AtomicUsize,
    // The fields below are written only while the slot is exclusively
    // owned: between taking it from the pool and scheduling it, and in
    // `release_slot` once the count is zero.
    vtable: Cell<&'static TaskVTable>,
    /// The owning scheduler (`&'static S`).
    owner: Cell<*const ()>,
    /// How a wake-up queues this task (plain, or through a strand).
    schedule: Cell<unsafe fn(NonNull<TaskHeader>)>,
    /// The strand the task runs in (null if none); see `schedule`.
    pub(crate) strand: Cell<*const ()>,
    /// The slot's future/output storage.
    storage: Cell<*mut u8>,
    /// The only thread that may poll or drop a `!Send` future (its
    /// `current_thread_id`); 0 for a `Send` future, which any may.
    home: Cell<usize>,
    key: Cell<Key>,
    /// The JoinHandle's waker: written by the JoinHandle only while
    /// `JOIN_WAKER` is clear and the task not `COMPLETE`, read by the
    /// runner only while it is set, dropped when the slot is released.
    join_waker: UnsafeCell<Option<Waker>>,
    /// Where task-bound I/O futures and their completions meet (see
    /// [`super::io`]); all FREE when the slot is released, since every
    /// entry in use holds a reference.
    pub(crate) io: [IoEntry; IO_ENTRIES],
}

// SAFETY: the `Cell` fields are written only while the slot is
// exclusively owned (see the field comments); `state` is atomic;
// `join_waker` follows the JOIN_WAKER protocol; the future and output are
// touched by one thread at a time (the RUNNING bit, or exclusive
// ownership), and are `Send` (spawn requires it) or, for a local task,
// touched only on its `home` thread (`run_task` and `shutdown` check it).
unsafe impl Sync for TaskHeader {}
// SAFETY: as above.
unsafe impl Send for TaskHeader {}

impl TaskHeader {
    /// A free slot's header, for initialising the task slab.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: TaskHeader = TaskHeader {
        op: UnsafeCell::new(Operation::new(never_completed)),
        state: AtomicUsize::new(0),
        vtable: Cell::new(&UNUSED),
        owner: Cell::new(ptr::null()),
        schedule: Cell::new(unused_header),
        strand: Cell::new(ptr::null()),
        storage: Cell::new(ptr::null_mut()),
        home: Cell::new(0),
        key: Cell::new(Key::new(0, 0)),
        join_waker: UnsafeCell::new(None),
        io: [IoEntry::FREE; IO_ENTRIES],
    };

    #[inline(always)]
    fn op(h: NonNull<TaskHeader>) -> NonNull<Operation> {
        h.cast()
    }

    #[inline(always)]
    pub(crate) fn storage(&self) -> *mut u8 {
        self.storage.get()
    }

    #[inline(always)]
    pub(crate) fn vtable(&self) -> &'static TaskVTable {
        self.vtable.get()
    }

    /// Whether the calling thread may poll or drop this task's future.
    #[inline(always)]
    pub(crate) fn on_home_thread(&self) -> bool {
        let home = self.home.get();
        home == 0 || home == pinion_sync::current_thread_id()
    }

    /// The scheduler that owns the task.
    #[inline(always)]
    pub(crate) fn owner_ptr(&self) -> *const () {
        self.owner.get()
    }

    /// The JoinHandle's waker field (see its protocol on the field).
    #[inline(always)]
    pub(crate) fn join_waker_ptr(&self) -> *mut Option<Waker> {
        self.join_waker.get()
    }
}

/// The operation function of a free slot (never queued).
unsafe fn never_completed(_: NonNull<Operation>, _: *const (), _: Invoke<'_>) {
    unreachable!("pinion: a free task slot was completed")
}

/// Sets up a slot just taken from the pool and schedules the task.
///
/// # Safety
/// `h` is a slot of `owner`'s pool, taken and exclusively owned;
/// `storage` is its storage, large and aligned enough for `F` and
/// `F::Output`; `schedule` queues through `owner` (or a strand of it
/// whose reference the slot now holds). The caller counted one unit of
/// work for the live task.
pub(crate) unsafe fn init_and_schedule<F, S>(
    h: NonNull<TaskHeader>, key: Key, storage: *mut u8, owner: &'static S, future: F,
    schedule: unsafe fn(NonNull<TaskHeader>), strand: *const (),
) where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: TaskOwner,
{
    // SAFETY: forwarded; a `Send` future may run on any thread (home 0).
    unsafe { init_any::<F, S, false>(h, key, storage, owner, future, schedule, strand, 0) }
}

/// As [`init_and_schedule`], for a future that need not be `Send`: it is
/// polled and dropped only on the thread whose id is `home`.
///
/// # Safety
/// As for [`init_and_schedule`]; `home` is the calling thread's non-zero
/// `current_thread_id`.
pub(crate) unsafe fn init_local_and_schedule<F, S>(
    h: NonNull<TaskHeader>, key: Key, storage: *mut u8, owner: &'static S, future: F,
    schedule: unsafe fn(NonNull<TaskHeader>), home: usize,
) where
    F: Future + 'static,
    S: TaskOwner,
{
    debug_assert!(home != 0);
    let strand = ptr::null();
    // SAFETY: forwarded; `run_task::<_, _, true>` keeps the future on `home`.
    unsafe { init_any::<F, S, true>(h, key, storage, owner, future, schedule, strand, home) }
}

/// # Safety
/// As for [`init_and_schedule`]; with `LOCAL` false, `F` and its output
/// are `Send`, and `home` is 0.
#[allow(clippy::too_many_arguments)] // one private constructor for both kinds
#[inline(always)]
unsafe fn init_any<F, S, const LOCAL: bool>(
    h: NonNull<TaskHeader>, key: Key, storage: *mut u8, owner: &'static S, future: F,
    schedule: unsafe fn(NonNull<TaskHeader>), strand: *const (), home: usize,
) where
    F: Future + 'static,
    S: TaskOwner,
{
    // SAFETY: exclusively owned (contract).
    let hdr = unsafe { h.as_ref() };
    // SAFETY: exclusively owned; nothing reads the op until it is queued.
    unsafe { ptr::write(hdr.op.get(), Operation::new(run_task::<F, S, LOCAL>)) };
    hdr.vtable.set(&VTableOf::<F, S>::V);
    hdr.owner.set(owner as *const S as *const ());
    hdr.schedule.set(schedule);
    hdr.strand.set(strand);
    hdr.storage.set(storage);
    hdr.home.set(home);
    hdr.key.set(key);
    // SAFETY: the storage fits `F` (contract) and holds nothing.
    unsafe { ptr::write(storage as *mut F, future) };
    // Queued, a JoinHandle, and two references: the JoinHandle's and the
    // live task's (dropped when it completes).
    hdr.state
        .store(SCHEDULED | JOIN_INTEREST | (2 * REF_ONE), Ordering::Release);
    // SAFETY: the op is set up and on no queue.
    unsafe { schedule(h) };
}

/// Queues `h`'s operation on its owner directly.
///
/// # Safety
/// `h` is live, SCHEDULED, and on no queue.
pub(crate) unsafe fn schedule_plain<S: TaskOwner>(h: NonNull<TaskHeader>) {
    // SAFETY: live (contract); `owner` is an `&'static S`.
    let owner = unsafe { &*(h.as_ref().owner.get() as *const S) };
    // SAFETY: a task op of `owner`, on no queue.
    unsafe { owner.schedule_op(TaskHeader::op(h)) }
}

/// Queues `h`'s operation through its strand.
///
/// # Safety
/// `h` is live, SCHEDULED, on no queue, and holds a strand reference.
pub(crate) unsafe fn schedule_in_strand<S: TaskOwner>(h: NonNull<TaskHeader>) {
    // SAFETY: live (contract); `owner` is an `&'static S`.
    let hdr = unsafe { h.as_ref() };
    let owner = unsafe { &*(hdr.owner.get() as *const S) };
    // SAFETY: the task's strand and op, per contract.
    unsafe { owner.schedule_in_strand(hdr.strand.get(), TaskHeader::op(h)) }
}

/// The task operation's complete function: poll the future (Run), or drop
/// it (Destroy, at shutdown).
///
/// A local task (`LOCAL`) is polled and dropped only on its home thread:
/// another thread that dequeues it queues it again, and at shutdown on
/// another thread its future is leaked rather than dropped there.
///
/// # Safety
/// See [`CompleteFn`](crate::op::CompleteFn); `op` is the operation of a
/// live, SCHEDULED task whose future has type `F`, owned by `S`.
unsafe fn run_task<F: Future, S: TaskOwner, const LOCAL: bool>(
    op: NonNull<Operation>, _: *const (), how: Invoke<'_>,
) {
    let h = op.cast::<TaskHeader>();
    // SAFETY: live while SCHEDULED (the live reference is held).
    let hdr = unsafe { h.as_ref() };
    if LOCAL && !hdr.on_home_thread() {
        if how.is_run() {
            // Not ours to poll: still SCHEDULED, on no queue, so it can
            // go straight back (a one-thread context never gets here).
            // SAFETY: SCHEDULED, dequeued, live.
            unsafe { (hdr.schedule.get())(h) };
        } else {
            hdr.state.fetch_and(!SCHEDULED, Ordering::AcqRel);
            // SAFETY: dequeued at shutdown, so ours alone.
            unsafe { finish_leaking(h) };
        }
        return;
    }
    if !how.is_run() {
        // Shutdown: the future is dropped unpolled; nobody is woken.
        let prev = hdr.state.fetch_and(!SCHEDULED, Ordering::AcqRel);
        debug_assert!(prev & (RUNNING | COMPLETE) == 0);
        // SAFETY: not running, not complete: the future is live and ours.
        unsafe { finish_without_output(h, false) };
        return;
    }
    // SCHEDULED -> RUNNING. SCHEDULED is set and RUNNING clear (only the
    // thread that dequeued the task may set RUNNING), so adding the
    // difference flips both bits: one `lock xadd`, where a `fetch_xor`
    // whose result is used is a compare-and-swap loop.
    let prev = hdr
        .state
        .fetch_add(RUNNING.wrapping_sub(SCHEDULED), Ordering::AcqRel);
    debug_assert!(prev & SCHEDULED != 0 && prev & (RUNNING | COMPLETE) == 0);
    if prev & CANCELLED != 0 {
        // SAFETY: RUNNING is ours; the future is live.
        unsafe { finish_without_output(h, true) };
        return;
    }
    // SAFETY: RUNNING is ours; the future is live and has type `F`.
    unsafe { poll_running::<F, S>(h) }
}

/// Polls a task this thread holds RUNNING for, then completes it or lets
/// RUNNING go (queueing it again if it was woken meanwhile).
///
/// # Safety
/// The caller set RUNNING on the live, incomplete task `h`, whose future
/// has type `F`, owned by `S`, and may be polled on this thread.
#[inline(always)]
unsafe fn poll_running<F: Future, S: TaskOwner>(h: NonNull<TaskHeader>) {
    // SAFETY: live (contract).
    let hdr = unsafe { h.as_ref() };
    // A panic in `poll` drops the future and completes the task (no
    // output) before unwinding on, so nothing is left half-running.
    let unwind = OnUnwind(h);
    let waker = ManuallyDrop::new(
        // SAFETY: the vtable's functions take `h` as a task header; this
        // waker is borrowed (not dropped), so it holds no reference.
        unsafe { Waker::from_raw(RawWaker::new(h.as_ptr() as *const (), &WAKER_VTABLE)) },
    );
    let mut cx = Context::from_waker(&waker);
    let fut = hdr.storage() as *mut F;
    // SAFETY: the future lives in the slot and never moves; RUNNING makes
    // this thread its only user.
    let res = unsafe { Pin::new_unchecked(&mut *fut) }.poll(&mut cx);
    mem::forget(unwind);
    match res {
        Poll::Ready(out) => {
            // SAFETY: the future is done; its storage now holds the output
            // (spawn checked that it fits).
            unsafe {
                ptr::drop_in_place(fut);
                ptr::write(hdr.storage() as *mut F::Output, out);
                finish(h, true, true);
            }
        }
        Poll::Pending => {
            // RUNNING is ours and set: subtracting clears it (`lock xadd`).
            let prev = hdr.state.fetch_sub(RUNNING, Ordering::AcqRel);
            if prev & SCHEDULED != 0 {
                // Woken while it ran: the waker left the queueing to us.
                // SAFETY: SCHEDULED and on no queue.
                unsafe { (hdr.schedule.get())(h) };
            }
        }
    }
}

/// Completes a task whose poll unwound.
struct OnUnwind(NonNull<TaskHeader>);

impl Drop for OnUnwind {
    fn drop(&mut self) {
        // SAFETY: only alive during a poll, which holds RUNNING.
        unsafe { finish_without_output(self.0, true) }
    }
}

/// Drops the live future and completes the task without an output.
///
/// # Safety
/// The caller is the only user of the future (RUNNING, or SCHEDULED and
/// dequeued, or shutdown), and it is live.
pub(crate) unsafe fn finish_without_output(h: NonNull<TaskHeader>, notify: bool) {
    // SAFETY: live (contract).
    let hdr = unsafe { h.as_ref() };
    // SAFETY: the future is live and ours (contract).
    unsafe { (hdr.vtable().drop_future)(hdr.storage()) };
    // SAFETY: as above.
    unsafe { finish(h, false, notify) };
}

/// Completes a task at shutdown without dropping its live future: a
/// local task's, found on a thread other than its home (leaking is safe;
/// dropping a `!Send` value there is not).
///
/// # Safety
/// As for [`finish_without_output`] with `notify` false.
pub(crate) unsafe fn finish_leaking(h: NonNull<TaskHeader>) {
    // SAFETY: forwarded: the future is left in place, never touched again.
    unsafe { finish(h, false, false) }
}

/// Marks the task COMPLETE, hands the output to the JoinHandle (or drops
/// it), wakes the JoinHandle, and drops the live reference.
///
/// # Safety
/// The future is gone; `has_output` says whether the storage holds the
/// output; the caller held RUNNING (or exclusive access at shutdown).
unsafe fn finish(h: NonNull<TaskHeader>, has_output: bool, notify: bool) {
    // SAFETY: live until the reference dropped at the end.
    let hdr = unsafe { h.as_ref() };
    let mut cur = hdr.state.load(Ordering::Acquire);
    loop {
        let mut next = (cur & !(RUNNING | SCHEDULED)) | COMPLETE;
        if has_output && cur & JOIN_INTEREST != 0 {
            next |= OUTPUT;
        }
        match hdr
            .state
            .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => break,
            Err(actual) => cur = actual,
        }
    }
    if has_output && cur & JOIN_INTEREST == 0 {
        // Nobody will take it.
        // SAFETY: the output is live and, without a JoinHandle, ours.
        unsafe { (hdr.vtable().drop_output)(hdr.storage()) };
    }
    if notify && cur & (JOIN_INTEREST | JOIN_WAKER) == JOIN_INTEREST | JOIN_WAKER {
        // SAFETY: JOIN_WAKER was set, so the waker is stored and the
        // JoinHandle leaves it alone now that COMPLETE is set; it is
        // dropped only when the slot is released, after our reference.
        if let Some(w) = unsafe { &*hdr.join_waker.get() } {
            w.wake_by_ref();
        }
    }
    if notify {
        // SAFETY: `owner` is the `&'static S` that spawned the task, and
        // this matches the work counted at spawn.
        unsafe { (hdr.vtable().finished)(hdr.owner.get()) };
    }
    // SAFETY: the live reference, dropped once.
    unsafe { drop_ref(h) };
}
