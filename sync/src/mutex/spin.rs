//! [`SpinMutex`]: the `spin` crate's test-and-set lock behind [`RawMutex`].

use crate::RawMutex;

/// A spinning mutex for targets with no OS to sleep in.
///
/// Wraps `spin::mutex::SpinMutex<()>`; the guard is forgotten on lock and
/// the lock is released with `force_unlock`, because [`RawMutex`] is
/// guard-less (the scheduler hands the mutex to the event, which unlocks
/// and relocks it itself).
pub struct SpinMutex {
    inner: ::spin::mutex::SpinMutex<()>,
}

// The scheduler shares its mutex between threads. `spin::mutex::SpinMutex<()>`
// is already `Send + Sync`, so no `unsafe impl` is needed; this check keeps it
// that way should the inner type ever change.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SpinMutex>();
};

impl SpinMutex {
    /// An unlocked mutex (same as [`RawMutex::INIT`]).
    pub const fn new() -> Self {
        Self {
            inner: ::spin::mutex::SpinMutex::new(()),
        }
    }

    /// Whether some thread holds the mutex right now (a racy snapshot, for
    /// assertions and diagnostics only).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
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
    const INIT: Self = Self::new();

    #[inline]
    fn lock(&self) {
        // The guard would unlock on drop; ownership is tracked by the caller
        // instead, and `unlock` releases it.
        core::mem::forget(self.inner.lock());
    }

    #[inline]
    fn try_lock(&self) -> bool {
        match self.inner.try_lock() {
            Some(guard) => {
                core::mem::forget(guard);
                true
            }
            None => false,
        }
    }

    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: the caller holds the mutex (this fn's contract), so the
        // guard we forgot in `lock`/`try_lock` is the only one, and
        // releasing it here cannot break another thread's exclusion.
        unsafe { self.inner.force_unlock() }
    }
}
