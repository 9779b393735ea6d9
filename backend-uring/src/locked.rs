//! A value behind a raw mutex, reached through a guard: the lock idiom.
//! (Stands in for `pinion_sync::Locked` until that lands.)

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};

use pinion_sync::RawMutex;

/// A `T` behind the raw mutex `M`.
pub(crate) struct Locked<M: RawMutex, T> {
    lock: M,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through a guard, which holds `lock`.
unsafe impl<M: RawMutex + Sync, T: Send> Sync for Locked<M, T> {}

/// `Locked`'s guard: the value, with the mutex held until it drops.
pub(crate) struct Guard<'a, M: RawMutex, T> {
    l: &'a Locked<M, T>,
}

impl<M: RawMutex, T> Locked<M, T> {
    pub(crate) const fn new(value: T) -> Self {
        Locked {
            lock: M::INIT,
            value: UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> Guard<'_, M, T> {
        self.lock.lock();
        Guard { l: self }
    }
}

impl<M: RawMutex, T> Deref for Guard<'_, M, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mutex is held while the guard lives.
        unsafe { &*self.l.value.get() }
    }
}

impl<M: RawMutex, T> DerefMut for Guard<'_, M, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the mutex is held while the guard lives, and the guard is
        // borrowed mutably.
        unsafe { &mut *self.l.value.get() }
    }
}

impl<M: RawMutex, T> Drop for Guard<'_, M, T> {
    fn drop(&mut self) {
        // SAFETY: locked in `lock`; unlocks once.
        unsafe { self.l.lock.unlock() }
    }
}
