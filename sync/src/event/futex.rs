//! [`FutexEvent`]: Asio's `posix_event` with a futex in place of the
//! condition variable.

use super::{SIGNALLED, WAITER};
use crate::loom::atomic::{AtomicU32, Ordering};
use crate::loom::futex::{self, WaitOutcome};
use crate::loom::{init_from_new, loom_const_fn};
use crate::{RawMutex, WakeEvent};

/// The scheduler's wake-up event on Linux: idle threads sleep in
/// `futex(2)` on the event's state word.
///
/// # Why no wake-up is lost
/// Every change of the state word happens with the scheduler's mutex held.
/// A waiter reads the word while holding the mutex, then unlocks and passes
/// the value it read to `FUTEX_WAIT`. A signaller sets the signalled bit
/// (changing the word) before it calls `FUTEX_WAKE`. So a signal that lands
/// between the waiter's unlock and its `FUTEX_WAIT` makes the kernel's
/// compare fail and `FUTEX_WAIT` return at once, and one that lands later
/// finds the waiter asleep and wakes it.
///
/// Each wait is a single `FUTEX_WAIT`, so a signal made after a waiter
/// registered always ends its wait (`signal_all` every such wait,
/// `signal_one` at least one), even if the event is cleared again before
/// the waiter runs.
///
/// All accesses to the word are `Relaxed` and made with the mutex held,
/// which orders them (and everything the scheduler guards); only the
/// kernel's compare reads it without the mutex.
pub struct FutexEvent {
    /// Bit 0: signalled. Bits 1..: number of waiters. The futex word.
    state: AtomicU32,
}

impl FutexEvent {
    loom_const_fn! {
        /// A cleared event with no waiters (same as [`WakeEvent::INIT`]).
        pub fn new() -> Self {
            Self {
                state: AtomicU32::new(0),
            }
        }
    }

    /// Threads currently inside `wait`/`wait_for` (read under the mutex
    /// for an exact count).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiters(&self) -> u32 {
        self.state.load(Ordering::Relaxed) / WAITER
    }

    /// Sets the signalled bit; returns whether anyone is waiting.
    #[inline]
    fn set_signalled(&self) -> bool {
        let state = self.state.fetch_or(SIGNALLED, Ordering::Relaxed) | SIGNALLED;
        state > SIGNALLED
    }

    /// Registers the caller as a waiter and returns the new state, the
    /// value to hand `FUTEX_WAIT`. Called with the mutex held.
    #[inline]
    fn add_waiter(&self) -> u32 {
        self.state.fetch_add(WAITER, Ordering::Relaxed) + WAITER
    }

    /// Deregisters the caller; returns whether the event is signalled.
    /// Called with the mutex held.
    #[inline]
    fn remove_waiter(&self) -> bool {
        let state = self.state.fetch_sub(WAITER, Ordering::Relaxed);
        state & SIGNALLED != 0
    }

    /// Whether the signalled bit is set.
    #[inline]
    fn is_signalled(&self) -> bool {
        self.state.load(Ordering::Relaxed) & SIGNALLED != 0
    }
}

impl Default for FutexEvent {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for FutexEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("FutexEvent")
            .field("signalled", &(state & SIGNALLED != 0))
            .field("waiters", &(state / WAITER))
            .finish()
    }
}

impl WakeEvent for FutexEvent {
    init_from_new!();

    /// Returns at once if already signalled (Asio's `while (!signalled)`
    /// test). Otherwise makes one `FUTEX_WAIT`, which ends on a wake, on a
    /// signal, on a change of the waiter count before it slept, or on
    /// `EINTR`: the last two are spurious returns, which the scheduler
    /// handles by re-checking its queue.
    unsafe fn wait<M: RawMutex>(&self, mutex: &M) {
        if self.is_signalled() {
            return;
        }
        let expected = self.add_waiter();
        // SAFETY: the caller holds `mutex` (this fn's contract); it is
        // relocked below before returning.
        unsafe { mutex.unlock() };
        // One wait, no loop: the outcome does not matter, the caller
        // re-checks. Looping on "not signalled" (as Asio does) would also
        // miss a signal that another thread cleared before we looked.
        futex::wait(&self.state, expected, None);
        mutex.lock();
        self.remove_waiter();
    }

    /// Returns `true` at once if already signalled, and `false` at once
    /// (keeping the mutex) if `timeout_ns` is 0. Otherwise makes one
    /// `FUTEX_WAIT` with a relative time-out and returns `false` only if it
    /// timed out and the event is still not signalled. Like
    /// [`wait`](Self::wait) it may return `true` early and spuriously.
    unsafe fn wait_for<M: RawMutex>(&self, mutex: &M, timeout_ns: u64) -> bool {
        if self.is_signalled() {
            return true;
        }
        if timeout_ns == 0 {
            return false;
        }
        let expected = self.add_waiter();
        // SAFETY: the caller holds `mutex` (this fn's contract); it is
        // relocked below before returning.
        unsafe { mutex.unlock() };
        let outcome = futex::wait(&self.state, expected, Some(timeout_ns));
        mutex.lock();
        // A signal racing the time-out still counts: report it.
        let signalled = self.remove_waiter();
        signalled || outcome != WaitOutcome::TimedOut
    }

    unsafe fn signal_all<M: RawMutex>(&self, _mutex: &M) {
        if self.set_signalled() {
            futex::wake(&self.state, i32::MAX);
        }
    }

    unsafe fn signal_one<M: RawMutex>(&self, _mutex: &M) {
        if self.set_signalled() {
            futex::wake(&self.state, 1);
        }
    }

    unsafe fn unlock_and_signal_one<M: RawMutex>(&self, mutex: &M) {
        let have_waiters = self.set_signalled();
        // SAFETY: the caller holds `mutex` and gives it up (this fn's
        // contract). Unlocking before waking lets the woken thread take
        // the mutex at once instead of sleeping on it again.
        unsafe { mutex.unlock() };
        if have_waiters {
            futex::wake(&self.state, 1);
        }
    }

    unsafe fn maybe_unlock_and_signal_one<M: RawMutex>(&self, mutex: &M) -> bool {
        if self.set_signalled() {
            // SAFETY: the caller holds `mutex`, and on `true` gives it up
            // (this fn's contract).
            unsafe { mutex.unlock() };
            futex::wake(&self.state, 1);
            true
        } else {
            false
        }
    }

    unsafe fn clear<M: RawMutex>(&self, _mutex: &M) {
        self.state.fetch_and(!SIGNALLED, Ordering::Relaxed);
    }
}
