//! [`FutexMutex`]: the three-state futex mutex from Ulrich Drepper's
//! "Futexes Are Tricky" (mutex2/mutex3), as Rust's std also uses.

use crate::loom::atomic::{AtomicU32, Ordering};
use crate::loom::{futex, hint, init_from_new, loom_const_fn};
use crate::RawMutex;

/// Free.
const UNLOCKED: u32 = 0;
/// Held; no thread sleeps on it, so unlocking needs no syscall.
const LOCKED: u32 = 1;
/// Held, and some thread may sleep on it: unlocking must `FUTEX_WAKE`.
const CONTENDED: u32 = 2;

/// How many times `lock` re-reads a held mutex before sleeping. Critical
/// sections in the scheduler are a few dozen instructions, so a short spin
/// usually outlasts them and saves two syscalls. Under loom one read keeps
/// the path covered without multiplying the interleavings to explore.
const SPIN_LIMIT: u32 = if cfg!(loom) { 1 } else { 100 };

/// A mutex that sleeps in the kernel (Linux `futex(2)`) when contended.
///
/// Uncontended `lock` is one compare-and-swap and uncontended `unlock` one
/// swap; neither makes a syscall.
pub struct FutexMutex {
    /// [`UNLOCKED`], [`LOCKED`] or [`CONTENDED`]; also the futex word.
    state: AtomicU32,
}

impl FutexMutex {
    loom_const_fn! {
        /// An unlocked mutex (same as [`RawMutex::INIT`]).
        pub fn new() -> Self {
            Self {
                state: AtomicU32::new(UNLOCKED),
            }
        }
    }

    /// Whether some thread holds the mutex right now (a racy snapshot, for
    /// assertions and diagnostics only).
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != UNLOCKED
    }

    /// The slow path of [`lock`](RawMutex::lock): spin, then sleep.
    #[cold]
    fn lock_contended(&self) {
        let mut state = self.spin();

        // Free after spinning: try to take it without claiming waiters, so
        // the eventual unlock stays syscall-free.
        if state == UNLOCKED {
            match self.state.compare_exchange(
                UNLOCKED,
                LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(s) => state = s,
            }
        }

        loop {
            // Mark the mutex contended before sleeping, so the holder's
            // unlock wakes us. If the swap finds it free, we own it (in the
            // contended state: we cannot know whether others still sleep,
            // so the unlock pays one possibly needless FUTEX_WAKE).
            if state != CONTENDED && self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
                return;
            }
            // Sleeps only while the word is still CONTENDED; an unlock in
            // between makes this return at once.
            futex::wait(&self.state, CONTENDED, None);
            state = self.spin();
        }
    }

    /// Wakes one sleeper; kept out of line so the uncontended `unlock`
    /// inlines to one swap.
    #[cold]
    fn wake_one(&self) {
        futex::wake(&self.state, 1);
    }

    /// Spins while the mutex is held with no waiters, up to [`SPIN_LIMIT`]
    /// reads; returns the last state seen. It stops early on `CONTENDED`,
    /// since others already sleep and spinning would only add to the queue.
    fn spin(&self) -> u32 {
        let mut budget = SPIN_LIMIT;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state != LOCKED || budget == 0 {
                return state;
            }
            hint::spin_loop();
            budget -= 1;
        }
    }
}

impl Default for FutexMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for FutexMutex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FutexMutex")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl RawMutex for FutexMutex {
    init_from_new!();

    #[inline]
    fn lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        // Only CONTENDED can have sleepers; LOCKED unlocks without a syscall.
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            self.wake_one();
        }
    }
}
