//! Wake-ups and references: what wakers, completions and `abort` do to a
//! task's state word (see the diagram in the parent module).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use core::task::{RawWaker, RawWakerVTable};

use super::{TaskHeader, CANCELLED, COMPLETE, REF_MASK, REF_ONE, RUNNING, SCHEDULED};
use crate::op::{Invoke, Operation};
use crate::scheduler::Here;

/// Adds one reference.
#[inline]
pub(crate) fn ref_inc(hdr: &TaskHeader) {
    let prev = hdr.state.fetch_add(REF_ONE, Ordering::Relaxed);
    if prev > (usize::MAX >> 1) {
        // More wakers than memory could hold: a leak loop in user code.
        panic!("pinion: task reference count overflow");
    }
}

/// Drops one reference; the last one releases the slot.
///
/// # Safety
/// The caller owns one reference to the live slot `h`.
#[inline]
pub(crate) unsafe fn drop_ref(h: NonNull<TaskHeader>) {
    // SAFETY: live while we hold a reference.
    let hdr = unsafe { h.as_ref() };
    let prev = hdr.state.fetch_sub(REF_ONE, Ordering::AcqRel);
    debug_assert!(prev & REF_MASK != 0);
    if prev & REF_MASK == REF_ONE {
        // SAFETY: the count is zero: the slot is ours alone.
        unsafe { (hdr.vtable().release)(h) };
    }
}

/// Schedules the task unless it is complete, queued, or running (then
/// the runner requeues it).
///
/// # Safety
/// `h` is live (the caller holds a reference).
pub(crate) unsafe fn wake_by_ref(h: NonNull<TaskHeader>) {
    // SAFETY: live (contract).
    let hdr = unsafe { h.as_ref() };
    let mut cur = hdr.state.load(Ordering::Acquire);
    loop {
        if cur & (COMPLETE | SCHEDULED) != 0 {
            return;
        }
        match hdr.state.compare_exchange_weak(
            cur,
            cur | SCHEDULED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            Err(actual) => cur = actual,
        }
    }
    if cur & RUNNING == 0 {
        // SAFETY: we set SCHEDULED on an idle, incomplete task: it is on
        // no queue, and the live reference keeps it alive.
        unsafe { (hdr.schedule.get())(h) };
    }
}

/// What [`wake_for_run`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Nothing to do: the task is complete, already queued, or being
    /// polled (its runner requeues it).
    Nothing,
    /// Scheduled an idle task that this run thread may poll now.
    Run,
    /// Scheduled an idle task that must go through its queue.
    Queue,
}

/// The first half of a wake-up from a completion: sets SCHEDULED and says
/// whether the caller now owns the task's schedule, and if so whether it
/// may poll the task itself: on a run thread of the task's own scheduler
/// (`here`), for a task not bound to a strand.
///
/// # Safety
/// `h` is live.
#[inline(always)]
pub(crate) unsafe fn wake_for_run(h: NonNull<TaskHeader>, here: Option<Here<'_>>) -> Woken {
    // SAFETY: live (contract).
    let hdr = unsafe { h.as_ref() };
    let mut cur = hdr.state.load(Ordering::Acquire);
    loop {
        if cur & (COMPLETE | SCHEDULED) != 0 {
            return Woken::Nothing;
        }
        match hdr.state.compare_exchange_weak(
            cur,
            cur | SCHEDULED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            Err(actual) => cur = actual,
        }
    }
    if cur & RUNNING != 0 {
        return Woken::Nothing;
    }
    match here {
        Some(here) if here.ti.owner == hdr.owner.get() && hdr.strand.get().is_null() => Woken::Run,
        _ => Woken::Queue,
    }
}

/// The second half: polls the task here (the post and the dequeue it
/// saves cancel out, work count included), or queues it.
///
/// # Safety
/// `w` came from [`wake_for_run`] on `h` with this `here`; for `Run` and
/// `Queue` the caller owns the task's schedule (nothing else happened to
/// the task since), so it is live and on no queue. No poll of a task is
/// in progress on this thread above the completion calling this (other
/// than in a nested `run`).
#[inline(always)]
pub(crate) unsafe fn run_woken(h: NonNull<TaskHeader>, w: Woken, here: Option<Here<'_>>) {
    // SAFETY: live (contract).
    let hdr = unsafe { h.as_ref() };
    match (w, here) {
        // SAFETY: SCHEDULED and on no queue, as if just dequeued by this
        // run thread of its owner.
        (Woken::Run, Some(here)) => unsafe {
            Operation::complete(TaskHeader::op(h), hdr.owner.get(), Invoke::Run(here))
        },
        // SAFETY: SCHEDULED by us on an idle task: on no queue.
        (Woken::Queue, _) => unsafe { (hdr.schedule.get())(h) },
        _ => {}
    }
}

/// Asks the task to stop: at its next turn the future is dropped.
///
/// # Safety
/// `h` is live (the caller holds a reference).
pub(crate) unsafe fn abort(h: NonNull<TaskHeader>) {
    // SAFETY: live (contract).
    let hdr = unsafe { h.as_ref() };
    let mut cur = hdr.state.load(Ordering::Acquire);
    loop {
        if cur & (COMPLETE | CANCELLED) != 0 {
            return;
        }
        match hdr.state.compare_exchange_weak(
            cur,
            cur | CANCELLED | SCHEDULED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            Err(actual) => cur = actual,
        }
    }
    if cur & (SCHEDULED | RUNNING) == 0 {
        // SAFETY: idle and incomplete: on no queue.
        unsafe { (hdr.schedule.get())(h) };
    }
}

// ---- wakers ----------------------------------------------------------------

pub(crate) static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

/// # Safety
/// `p` is a task header the waker holds a reference to (or, for the
/// runner's borrowed waker, one kept alive by the live reference).
unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: per contract.
    ref_inc(unsafe { &*(p as *const TaskHeader) });
    RawWaker::new(p, &WAKER_VTABLE)
}

/// # Safety
/// As for `waker_clone`; consumes the waker's reference.
unsafe fn waker_wake(p: *const ()) {
    let h = NonNull::new(p as *mut TaskHeader).expect("task waker");
    // SAFETY: per contract.
    unsafe {
        wake_by_ref(h);
        drop_ref(h);
    }
}

/// # Safety
/// As for `waker_clone`.
unsafe fn waker_wake_by_ref(p: *const ()) {
    let h = NonNull::new(p as *mut TaskHeader).expect("task waker");
    // SAFETY: per contract.
    unsafe { wake_by_ref(h) }
}

/// # Safety
/// As for `waker_clone`; consumes the waker's reference.
unsafe fn waker_drop(p: *const ()) {
    let h = NonNull::new(p as *mut TaskHeader).expect("task waker");
    // SAFETY: per contract.
    unsafe { drop_ref(h) }
}
