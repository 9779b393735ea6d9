//! [`SpinEvent`]: Asio's `posix_event` semantics with busy-waiting, for
//! targets with no OS to sleep in.

use super::{SIGNALLED, WAITER};
use crate::loom::atomic::{AtomicU32, Ordering};
use crate::loom::{hint, init_from_new, loom_const_fn};
use crate::{RawMutex, WakeEvent};

/// A wake-up event whose waiters spin (with [`core::hint::spin_loop`])
/// until the signalled bit is set.
///
/// Signalling never has anyone to wake: a waiter notices the bit itself, so
/// `signal_one` releases every spinning waiter (a spurious wake-up for all
/// but one, which the event contract allows).
///
/// # Time-outs without a clock
/// This event has no clock. [`wait_for`](WakeEvent::wait_for) treats
/// `timeout_ns` as a budget of polls: it gives up after `timeout_ns` reads
/// of the state, each followed by a `spin_loop` hint, i.e. on the order of
/// "1 iteration ≈ 1 ns" or (usually) longer. It always returns eventually.
/// Callers needing a real time-out must use a kit with a clock.
pub struct SpinEvent {
    /// Bit 0: signalled. Bits 1..: number of waiters.
    state: AtomicU32,
}

impl SpinEvent {
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
        // Release, so the spinning waiter's Acquire read of the bit also
        // sees what the signaller wrote (it relocks the mutex anyway).
        let state = self.state.fetch_or(SIGNALLED, Ordering::Release) | SIGNALLED;
        state > SIGNALLED
    }

    /// Whether the signalled bit is set.
    #[inline]
    fn is_signalled(&self) -> bool {
        self.state.load(Ordering::Acquire) & SIGNALLED != 0
    }

    /// Spins until signalled, or until `budget` polls have failed when
    /// `budget` is `Some`. Called without the mutex.
    #[inline]
    fn spin_until_signalled(&self, mut budget: Option<u64>) {
        while !self.is_signalled() {
            if let Some(left) = budget.as_mut() {
                if *left == 0 {
                    return;
                }
                *left -= 1;
            }
            hint::spin_loop();
        }
    }

    /// Common body of `wait` and `wait_for`; returns whether signalled.
    ///
    /// # Safety
    /// The caller holds `mutex`; it holds it again when this returns.
    unsafe fn wait_inner<M: RawMutex>(&self, mutex: &M, budget: Option<u64>) -> bool {
        if self.is_signalled() {
            return true;
        }
        self.state.fetch_add(WAITER, Ordering::Relaxed);
        // SAFETY: the caller holds `mutex` (this fn's contract); it is
        // relocked below before returning.
        unsafe { mutex.unlock() };
        self.spin_until_signalled(budget);
        mutex.lock();
        self.state.fetch_sub(WAITER, Ordering::Relaxed) & SIGNALLED != 0
    }
}

impl Default for SpinEvent {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for SpinEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("SpinEvent")
            .field("signalled", &(state & SIGNALLED != 0))
            .field("waiters", &(state / WAITER))
            .finish()
    }
}

impl WakeEvent for SpinEvent {
    init_from_new!();

    /// Returns at once if signalled, else spins (mutex released) until a
    /// signal. A signal cleared again before this waiter saw it is missed,
    /// as in Asio: some other thread consumed it.
    unsafe fn wait<M: RawMutex>(&self, mutex: &M) {
        // SAFETY: forwarded from this fn's contract (caller holds `mutex`).
        unsafe { self.wait_inner(mutex, None) };
    }

    /// See the type docs: `timeout_ns` is a poll budget, not a clock time.
    /// `false` when the budget ran out with the event not signalled; a
    /// budget of 0 returns at once without releasing the mutex.
    unsafe fn wait_for<M: RawMutex>(&self, mutex: &M, timeout_ns: u64) -> bool {
        if timeout_ns == 0 {
            return self.is_signalled();
        }
        // SAFETY: forwarded from this fn's contract (caller holds `mutex`).
        unsafe { self.wait_inner(mutex, Some(timeout_ns)) }
    }

    unsafe fn signal_all<M: RawMutex>(&self, _mutex: &M) {
        self.set_signalled();
    }

    unsafe fn signal_one<M: RawMutex>(&self, _mutex: &M) {
        self.set_signalled();
    }

    unsafe fn unlock_and_signal_one<M: RawMutex>(&self, mutex: &M) {
        self.set_signalled();
        // SAFETY: the caller holds `mutex` and gives it up (this fn's
        // contract).
        unsafe { mutex.unlock() };
    }

    unsafe fn maybe_unlock_and_signal_one<M: RawMutex>(&self, mutex: &M) -> bool {
        if self.set_signalled() {
            // SAFETY: the caller holds `mutex`, and on `true` gives it up
            // (this fn's contract).
            unsafe { mutex.unlock() };
            true
        } else {
            false
        }
    }

    unsafe fn clear<M: RawMutex>(&self, _mutex: &M) {
        self.state.fetch_and(!SIGNALLED, Ordering::Relaxed);
    }
}
