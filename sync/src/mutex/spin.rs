//! [`SpinMutex`]: a test-and-test-and-set lock for targets with no OS.

use crate::loom::atomic::{AtomicBool, Ordering};
use crate::loom::{hint, init_from_new, loom_const_fn};
use crate::RawMutex;

/// A spinning mutex for targets with no OS to sleep in.
///
/// The algorithm (and every ordering) of the `spin` crate's
/// `spin::mutex::SpinMutex`, which this type wrapped before: a weak
/// compare-and-swap to take the lock, relaxed reads while it is held, a
/// release store to free it. It is written out here, on the loom facade's
/// atomics (`src/loom.rs`), so that the loom models check this very code; a
/// wrapped crate's atomics are invisible to loom.
pub struct SpinMutex {
    /// `true` while held.
    locked: AtomicBool,
}

// The scheduler shares its mutex between threads; the atomic makes this
// `Send + Sync` with no `unsafe impl`, and this check keeps it so.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SpinMutex>();
};

impl SpinMutex {
    loom_const_fn! {
        /// An unlocked mutex (same as [`RawMutex::INIT`]).
        pub fn new() -> Self {
            Self {
                locked: AtomicBool::new(false),
            }
        }
    }

    /// Whether some thread holds the mutex right now (a racy snapshot, for
    /// assertions and diagnostics only).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

impl Default for SpinMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for SpinMutex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SpinMutex")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl RawMutex for SpinMutex {
    init_from_new!();

    #[inline]
    fn lock(&self) {
        // Weak: a spurious failure only means one more round, and on LL/SC
        // targets (ARM, RISC-V) it saves the retry loop a strong CAS has.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Read-only while held, so waiters do not bounce the cache line.
            while self.is_locked() {
                hint::spin_loop();
            }
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        // Strong: a `false` must mean "held", not "spuriously failed".
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}
