//! Task-bound I/O: an operation's result goes straight into the future
//! that awaits it, and the completion polls the task on the spot.
//!
//! An I/O future polled by a task of its own context (its waker is that
//! task's) keeps an [`IoSlot`] in itself: the future is pinned, so the
//! slot does not move until the future is dropped. It claims one of its
//! task header's [`IO_ENTRIES`] entries, pointing it at the slot, and
//! gives the operation a [`TaskLink`] (task and entry) as its handler.
//! The completion writes the result into the slot and then, on a run
//! thread, polls the task at once (Asio's "the completion runs the
//! continuation"), instead of posting the task and polling it after a
//! trip through the queue. No operation slot is taken besides the
//! operation's own, and no lock.
//!
//! The entry (one word in the task header) is where the future and the
//! completion meet when either may go first:
//!
//! ```text
//!               completing()                call(value): value written,
//!   ARMED(slot) ───────────► DELIVERING(slot) ── slot READY, task woken ──► FREE
//!      │  │
//!      │  │ future dropped: cancel_op sent under LOCKED,
//!      │  └────────────────────────────────────► ABANDONED ──call/drop──► FREE
//!      │                                          (value dropped)
//!      └─ future polled with another waker: LOCKED briefly, waker stored
//! ```
//!
//! `LOCKED` is the future's, `DELIVERING` the completion's: each waits
//! (spins) for the other's short step, which runs no user code. The
//! cancel is sent while the entry is `LOCKED`, so `completing` (which
//! backends call before an operation's slot is freed, just before the
//! handler runs) waits for it and the `OpId` it names is still that
//! operation's. A handler destroyed unrun (context shutdown) marks the
//! slot `DESTROYED` the same way.
//!
//! The task header outlives every use the completion makes of it without
//! a reference count of its own: while the entry is `DELIVERING` the
//! future cannot finish (taking a READY result waits for the entry to be
//! released, dropping the future waits too), so neither can its task; an
//! abandoning future takes a task reference that the completion gives
//! back; and a completion that woke an idle task owns its schedule (the
//! task is SCHEDULED and on no queue, so nobody else polls or completes
//! it) until it polls or queues it.
//!
//! Any other waker (a `block_on`, a foreign executor, a combinator with
//! its own wakers) makes the future use its context's rendezvous path
//! instead: [`IoSlot::arm`] answers `None`.

use core::cell::{Cell, UnsafeCell};
use core::hint::spin_loop;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use core::task::{Poll, Waker};

use super::raw::{self, TaskHeader, WAKER_VTABLE};
use crate::backend::OpId;
use crate::scheduler::Here;

/// Entries per task: I/O operations of one task that can be in flight on
/// the fast path at once (more fall back to the rendezvous path).
pub const IO_ENTRIES: usize = 2;

/// One entry of a task header: where a task-bound operation and its
/// future meet (see the [module docs](self)).
pub(crate) struct IoEntry {
    /// FREE, ABANDONED, or a slot's address with a tag.
    word: AtomicUsize,
    /// The operation, for a cancel: written by its link while ARMED (as
    /// the operation starts, on the thread that armed the entry), read by
    /// the future under LOCKED.
    op: Cell<Option<OpId>>,
    /// A waker to wake instead of polling the task (the future was last
    /// polled with another): written by the future under LOCKED, taken by
    /// the link under DELIVERING or by the future when it abandons.
    other: UnsafeCell<Option<Waker>>,
}

impl IoEntry {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const FREE: IoEntry = IoEntry {
        word: AtomicUsize::new(FREE),
        op: Cell::new(None),
        other: UnsafeCell::new(None),
    };

    /// `true` when no operation uses it (checked when a slot is released).
    pub(crate) fn is_free(&self) -> bool {
        self.word.load(Ordering::Relaxed) == FREE
    }
}

/// An entry nobody uses.
const FREE: usize = 0;
/// The future was dropped before the result came; the link frees it.
const ABANDONED: usize = 4;
/// Low bits of an entry pointing at a slot (slots are 8-aligned).
const TAG: usize = 3;
const ADDR: usize = !7;
const ARMED: usize = 0;
const LOCKED: usize = 2;
const DELIVERING: usize = 3;

/// Slot states.
const EMPTY: u8 = 0;
const READY: u8 = 1;
const DESTROYED: u8 = 2;
const TAKEN: u8 = 3;

/// Where a task-bound operation leaves its result: inside the future that
/// awaits it (see the [module docs](self)). Before the operation starts,
/// the same memory can hold the future's start arguments `A`.
#[repr(C, align(8))]
pub struct IoSlot<V, A = ()> {
    state: AtomicU8,
    /// The future's own note of whether `other` is set.
    has_other: Cell<bool>,
    /// The entry index, set by [`arm`](Self::arm).
    entry: Cell<u8>,
    /// The task whose entry this slot armed (null until armed).
    task: Cell<*const TaskHeader>,
    data: UnsafeCell<Data<V, A>>,
}

/// The result, or before the start the arguments.
union Data<V, A> {
    value: ManuallyDrop<V>,
    args: ManuallyDrop<A>,
}

// SAFETY: the fields the completion touches from another thread are
// reached only under the entry protocol (module docs); the value and the
// arguments move between threads (`V`, `A: Send`).
unsafe impl<V: Send, A: Send> Send for IoSlot<V, A> {}
// SAFETY: `&IoSlot` is only used by the future that owns it and, under the
// entry protocol, by its operation's link.
unsafe impl<V: Send, A: Send> Sync for IoSlot<V, A> {}

impl<V, A> IoSlot<V, A> {
    /// The link reaches the value through `IoSlot<V, ()>`: the same
    /// layout as long as `A` does not raise the data's alignment past 8
    /// or past `V`'s (checked when a slot is made).
    const SAME_LAYOUT: () = assert!(
        core::mem::align_of::<A>() <= 8 || core::mem::align_of::<A>() <= core::mem::align_of::<V>(),
        "pinion: IoSlot arguments aligned more strictly than its value"
    );

    /// An unarmed slot holding `args`.
    #[inline(always)]
    pub const fn new(args: A) -> Self {
        let () = Self::SAME_LAYOUT;
        IoSlot {
            state: AtomicU8::new(EMPTY),
            has_other: Cell::new(false),
            entry: Cell::new(0),
            task: Cell::new(core::ptr::null()),
            data: UnsafeCell::new(Data {
                args: ManuallyDrop::new(args),
            }),
        }
    }

    /// Takes the arguments out (they are gone from the slot afterwards).
    ///
    /// # Safety
    /// The slot holds its arguments (made by [`new`](Self::new), not taken
    /// since); called before it is armed.
    #[inline(always)]
    pub unsafe fn take_args(&self) -> A {
        // SAFETY: per contract, `args` is the live field.
        unsafe { ManuallyDrop::take(&mut (*self.data.get()).args) }
    }

    /// Drops the arguments in place.
    ///
    /// # Safety
    /// As for [`take_args`](Self::take_args).
    pub unsafe fn drop_args(&self) {
        // SAFETY: per contract.
        unsafe { ManuallyDrop::drop(&mut (*self.data.get()).args) }
    }

    /// The entry this slot armed.
    #[inline(always)]
    fn entry(&self) -> &IoEntry {
        // SAFETY: armed: the task is live while its future is (the slot is
        // in it), and the future is the caller; the index is one `arm`
        // found in the array.
        unsafe {
            &*(*self.task.get())
                .io
                .as_ptr()
                .add(self.entry.get() as usize)
        }
    }

    #[inline(always)]
    fn me(&self) -> usize {
        self as *const Self as usize
    }

    /// Claims an entry of the task `waker` wakes, if it is a task of the
    /// scheduler `owner` with an entry free, and returns the handler for
    /// the operation that will fill this slot.
    ///
    /// # Safety
    /// The slot does not move and is not reused until
    /// [`take`](Self::take) gave the result or [`abandon`](Self::abandon)
    /// ran (the future that holds it is pinned and calls `abandon` when
    /// dropped); it was not armed before, and its arguments were taken.
    #[inline(always)]
    pub unsafe fn arm(&self, waker: &Waker, owner: *const ()) -> Option<TaskLink<V>> {
        if !core::ptr::eq(waker.vtable(), &WAKER_VTABLE) {
            return None;
        }
        let h = waker.data() as *const TaskHeader;
        // SAFETY: a task waker holds a reference to its (live) header.
        let hdr = unsafe { &*h };
        if hdr.owner_ptr() != owner {
            return None;
        }
        let me = self.me();
        debug_assert_eq!(me & !ADDR, 0);
        let i = hdr.io.iter().position(|e| {
            e.word.load(Ordering::Relaxed) == FREE
                && e.word
                    .compare_exchange(FREE, me | ARMED, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
        })?;
        self.task.set(h);
        self.entry.set(i as u8);
        // SAFETY: a waker's data is never null.
        let h = unsafe { NonNull::new_unchecked(h as *mut TaskHeader) };
        Some(TaskLink::new(h, i))
    }

    /// Waits while the link is writing (it is done with the slot and the
    /// task once the entry no longer says so).
    #[inline(always)]
    fn wait_delivered(&self) {
        let e = &self.entry().word;
        while e.load(Ordering::Acquire) == self.me() | DELIVERING {
            spin_loop();
        }
    }

    /// The result, once the operation delivered it; else `Pending`, with
    /// `waker` noted if it is not the task's (it will be woken instead of
    /// the task being polled).
    ///
    /// # Panics
    /// If the context shut down while the operation was pending.
    ///
    /// # Safety
    /// The slot was armed, and its result was not taken yet.
    #[inline(always)]
    pub unsafe fn take(&self, waker: &Waker) -> Poll<V> {
        match self.state.load(Ordering::Acquire) {
            READY => {
                self.wait_delivered();
                self.state.store(TAKEN, Ordering::Relaxed);
                // SAFETY: READY: written by the link, which is done with
                // the slot; read once (the state moves on).
                Poll::Ready(unsafe { ManuallyDrop::take(&mut (*self.data.get()).value) })
            }
            EMPTY => {
                let task_waker = core::ptr::eq(waker.vtable(), &WAKER_VTABLE)
                    && waker.data() == self.task.get() as *const ();
                if !task_waker || self.has_other.get() {
                    // SAFETY: forwarded.
                    return unsafe { self.swap_waker(waker, task_waker) };
                }
                Poll::Pending
            }
            _ => panic!("pinion: the context shut down while this operation was pending"),
        }
    }

    /// Notes (or forgets) a waker other than the task's, under `LOCKED`.
    ///
    /// # Safety
    /// As for [`take`](Self::take).
    #[cold]
    unsafe fn swap_waker(&self, waker: &Waker, task_waker: bool) -> Poll<V> {
        let entry = self.entry();
        let e = &entry.word;
        let me = self.me();
        let mut cur = e.load(Ordering::Acquire);
        loop {
            if cur & ADDR != me || cur & TAG != ARMED {
                // Being delivered, or delivered: the result is coming.
                self.wait_delivered();
                // SAFETY: forwarded; READY or DESTROYED by now.
                return unsafe { self.take(Waker::noop()) };
            }
            match e.compare_exchange_weak(cur, me | LOCKED, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => break,
                Err(a) => cur = a,
            }
        }
        let new = (!task_waker).then(|| waker.clone());
        // SAFETY: LOCKED: the link does not touch `other` now.
        let old = unsafe { core::mem::replace(&mut *entry.other.get(), new) };
        self.has_other.set(!task_waker);
        e.store(cur, Ordering::Release);
        drop(old);
        Poll::Pending
    }

    /// The future is dropped: a result already there is dropped; an
    /// operation still in flight is cancelled through `cancel` (called
    /// with the entry `LOCKED`, so its `OpId` is still valid) and left
    /// to its link, which drops its result when it comes.
    ///
    /// # Safety
    /// The slot was armed; its result was not taken.
    pub unsafe fn abandon(&self, cancel: impl FnOnce(OpId)) {
        let entry = self.entry();
        let e = &entry.word;
        let me = self.me();
        let mut cur = e.load(Ordering::Acquire);
        loop {
            if cur & ADDR != me || cur & TAG == DELIVERING {
                // Delivered (or destroyed), or being delivered.
                self.wait_delivered();
                if self.state.load(Ordering::Acquire) == READY {
                    self.state.store(TAKEN, Ordering::Relaxed);
                    // SAFETY: READY: written and not taken; dropped once.
                    unsafe { ManuallyDrop::drop(&mut (*self.data.get()).value) };
                }
                return;
            }
            match e.compare_exchange_weak(cur, me | LOCKED, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => break,
                Err(a) => cur = a,
            }
        }
        // The link will touch the header after the task may be gone: it
        // gives this reference back.
        // SAFETY: armed: the task is live.
        raw::ref_inc(unsafe { &*self.task.get() });
        if let Some(op) = entry.op.get() {
            cancel(op);
        }
        // SAFETY: LOCKED: the link does not touch `other` now, nor after
        // (it only frees the entry).
        let other = unsafe { (*entry.other.get()).take() };
        e.store(ABANDONED, Ordering::Release);
        drop(other);
    }
}

/// The handler side of an armed [`IoSlot`]: its entry in the task header,
/// as one word (the header's address with the entry's index in its low
/// bit), so that it adds little to an operation's slot.
pub struct TaskLink<V> {
    link: NonNull<u8>,
    _v: PhantomData<fn(V)>,
}

// SAFETY: the link reaches the task header (Sync) and, under the entry
// protocol, the slot; values it carries are `Send`.
unsafe impl<V: Send> Send for TaskLink<V> {}

impl<V> TaskLink<V> {
    /// The link to entry `i` of `h`.
    #[inline(always)]
    fn new(h: NonNull<TaskHeader>, i: usize) -> Self {
        const { assert!(core::mem::align_of::<TaskHeader>() >= IO_ENTRIES) };
        TaskLink {
            // SAFETY: `h` is not null and its low bit is clear (aligned).
            link: unsafe { NonNull::new_unchecked((h.as_ptr() as *mut u8).wrapping_add(i)) },
            _v: PhantomData,
        }
    }

    #[inline(always)]
    fn header(&self) -> NonNull<TaskHeader> {
        let p = self.link.as_ptr() as usize & !(IO_ENTRIES - 1);
        // SAFETY: the header's address, not null.
        unsafe { NonNull::new_unchecked(p as *mut TaskHeader) }
    }

    #[inline(always)]
    fn entry(&self) -> &IoEntry {
        let i = self.link.as_ptr() as usize & (IO_ENTRIES - 1);
        // SAFETY: the header is live while the entry is not FREE (module
        // docs), and the link frees it last; the index is one `arm` found
        // in the array.
        unsafe { &*self.header().as_ref().io.as_ptr().add(i) }
    }

    #[inline(always)]
    fn e(&self) -> &AtomicUsize {
        &self.entry().word
    }

    /// The operation started as `op` (before anyone else can see it).
    #[inline(always)]
    pub fn bind(&mut self, op: OpId) {
        debug_assert_eq!(self.e().load(Ordering::Relaxed) & TAG, ARMED);
        // ARMED by the future that is starting this operation on this
        // thread right now; nobody else reads `op` until the operation is
        // visible.
        self.entry().op.set(Some(op));
    }

    /// The operation's id is about to name nothing: claims the entry for
    /// the delivery that follows (a future dropped from here on waits
    /// for it, and cancels nothing).
    #[inline(always)]
    pub fn completing(&self) {
        self.claim();
    }

    /// Takes the entry for writing (`DELIVERING`; only the link sets it,
    /// so finding it means this link took it already), or finds that the
    /// future is gone (`ABANDONED`). Returns the entry's word.
    #[inline(always)]
    fn claim(&self) -> usize {
        let e = self.e();
        let mut cur = e.load(Ordering::Acquire);
        loop {
            if cur == ABANDONED || cur & TAG == DELIVERING {
                return cur;
            }
            if cur & TAG == LOCKED {
                // The future is cancelling, or noting a waker.
                spin_loop();
                cur = e.load(Ordering::Acquire);
                continue;
            }
            debug_assert!(cur & TAG == ARMED && cur != FREE);
            let next = (cur & ADDR) | DELIVERING;
            match e.compare_exchange_weak(cur, next, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return next,
                Err(a) => cur = a,
            }
        }
    }

    /// The slot claimed, or `None` (the entry freed, the abandoning
    /// future's reference given back) if the future is gone.
    #[inline(always)]
    fn claimed_slot<X>(&self) -> Option<*const IoSlot<V, X>> {
        let c = self.claim();
        if c == ABANDONED {
            let h = self.header();
            self.entry().op.set(None);
            self.e().store(FREE, Ordering::Release);
            // SAFETY: the reference the abandoning future took for us.
            unsafe { raw::drop_ref(h) };
            return None;
        }
        Some((c & ADDR) as *const IoSlot<V, X>)
    }

    /// [`claimed_slot`](Self::claimed_slot) for a delivery: backends call
    /// [`completing`](Self::completing) first, which found the entry
    /// DELIVERING (ours) or ABANDONED, so one load tells which.
    #[inline(always)]
    fn delivering_slot<X>(&self) -> Option<*const IoSlot<V, X>> {
        let c = self.e().load(Ordering::Acquire);
        if c & TAG == DELIVERING {
            return Some((c & ADDR) as *const IoSlot<V, X>);
        }
        // ABANDONED (or a backend that did not call `completing`).
        self.claimed_slot()
    }

    /// Writes `value` into the slot and wakes the task: on a run thread
    /// of its scheduler (`here`), by polling it now if it is idle and not
    /// bound to a strand; otherwise by queueing it as any wake-up does.
    /// If the future is gone, `value` is dropped.
    ///
    /// # Safety
    /// Called from a completion (no poll of a task is in progress on this
    /// thread further up than the scheduler's run loop, or it is a nested
    /// `run` there); `here` came from the scheduler the completion runs on.
    #[inline(always)]
    pub unsafe fn deliver(self, value: V, here: Option<Here<'_>>) {
        let this = ManuallyDrop::new(self);
        let Some(slot) = this.delivering_slot::<()>() else {
            drop(value);
            return;
        };
        let h = this.header();
        // SAFETY: DELIVERING: the future waits for us before it may take
        // the result or drop the slot, and the slot is EMPTY (one delivery
        // per arming); the task is live (module docs).
        let woken = unsafe {
            (*(*slot).data.get()).value = ManuallyDrop::new(value);
            let other = (*this.entry().other.get()).take();
            (*slot).state.store(READY, Ordering::Release);
            match other {
                Some(w) => Err(w),
                None => Ok(raw::wake_for_run(h, here)),
            }
        };
        // From here the slot, and unless we woke it the task, may be gone.
        this.entry().op.set(None);
        this.e().store(FREE, Ordering::Release);
        match woken {
            Err(w) => w.wake(),
            // SAFETY: we set SCHEDULED on the idle task: we own its schedule
            // and it is live; `here` per contract.
            Ok(w) => unsafe { raw::run_woken(h, w, here) },
        }
    }

    /// The operation was refused at its start and this link came back:
    /// the entry is freed and the slot may be armed again.
    pub fn refused(self) {
        let this = ManuallyDrop::new(self);
        this.entry().op.set(None);
        this.e().store(FREE, Ordering::Release);
    }
}

impl<V> Drop for TaskLink<V> {
    /// Dropped without delivering: the operation was destroyed unrun
    /// (shutdown).
    fn drop(&mut self) {
        if let Some(slot) = self.claimed_slot::<()>() {
            // SAFETY: DELIVERING, as in `deliver`.
            let other = unsafe { (*self.entry().other.get()).take() };
            // SAFETY: as above.
            unsafe { (*slot).state.store(DESTROYED, Ordering::Release) };
            self.entry().op.set(None);
            self.e().store(FREE, Ordering::Release);
            drop(other);
        }
    }
}
