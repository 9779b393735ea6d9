//! [`NullMutex`]: no locking, for one-thread contexts.

use core::cell::Cell;
use core::marker::PhantomData;

use crate::loom::init_from_new;
use crate::RawMutex;

/// A mutex that does nothing, for a context only one thread ever touches.
///
/// It is `Send` (a context may be built on one thread and run on another)
/// but `!Sync`: sharing it across threads is a compile error, which is what
/// makes skipping the lock sound.
///
/// Debug builds remember whether it is held and panic on re-locking (a real
/// mutex would deadlock) or on unlocking it while free: on one thread both
/// can only be bugs. Release builds keep no state, so there `try_lock`
/// always succeeds.
pub struct NullMutex {
    /// `Cell` is `Send + !Sync`: exactly the auto traits wanted.
    _not_sync: PhantomData<Cell<()>>,
    #[cfg(debug_assertions)]
    held: Cell<bool>,
}

impl NullMutex {
    /// An unlocked mutex (same as [`RawMutex::INIT`]).
    pub const fn new() -> Self {
        Self {
            _not_sync: PhantomData,
            #[cfg(debug_assertions)]
            held: Cell::new(false),
        }
    }
}

impl Default for NullMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for NullMutex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NullMutex").finish_non_exhaustive()
    }
}

impl RawMutex for NullMutex {
    init_from_new!();

    #[inline(always)]
    fn lock(&self) {
        #[cfg(debug_assertions)]
        {
            assert!(!self.held.get(), "NullMutex locked while already held");
            self.held.set(true);
        }
    }

    #[inline(always)]
    fn try_lock(&self) -> bool {
        self.lock();
        true
    }

    #[inline(always)]
    unsafe fn unlock(&self) {
        #[cfg(debug_assertions)]
        {
            assert!(self.held.get(), "NullMutex unlocked while not held");
            self.held.set(false);
        }
    }
}
