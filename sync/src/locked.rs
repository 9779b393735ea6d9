//! [`Locked`]: a value behind a [`RawMutex`], reached only through an RAII
//! guard, so that no caller can forget to unlock or touch the value
//! unlocked.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use crate::loom::cell::{MutPtr, UnsafeCell};
use crate::loom::loom_const_fn;
use crate::RawMutex;

/// A value of type `T` guarded by a raw mutex `M`.
///
/// [`lock`](Self::lock) and [`try_lock`](Self::try_lock) hand out a
/// [`LockedGuard`] that derefs to the value and unlocks when dropped,
/// including when a panic unwinds past it. With exclusive access
/// ([`get_mut`](Self::get_mut), [`into_inner`](Self::into_inner)) no lock is
/// taken at all.
///
/// ```
/// use pinion_sync::{Locked, SpinMutex};
///
/// // `new` is const, so a `Locked` can be a static.
/// static HITS: Locked<SpinMutex, u32> = Locked::new(0);
///
/// *HITS.lock() += 1;
/// {
///     let mut hits = HITS.lock();
///     *hits += 1;
///     assert!(HITS.try_lock().is_none(), "held until `hits` drops");
/// }
/// assert_eq!(*HITS.lock(), 2);
/// ```
///
/// Behind a [`NullMutex`](crate::NullMutex) it is `!Sync`, so the
/// compiler keeps it on one thread:
///
/// ```compile_fail
/// use pinion_sync::{Locked, NullMutex};
/// static ONE_THREAD: Locked<NullMutex, u32> = Locked::new(0); // error: !Sync
/// ```
pub struct Locked<M: RawMutex, T> {
    mutex: M,
    value: UnsafeCell<T>,
}

// SAFETY: sharing a `Locked` lets any thread reach `&mut T`, but only
// through a guard, and a guard exists only while its thread holds `mutex`,
// so those accesses are serialised and the mutex's acquire/release orders
// them: what `Sync` needs for `T` is therefore only that it may move
// between threads (`T: Send`, as for `std::sync::Mutex`). `M: Sync` because
// every thread calls `lock`/`unlock` on the shared mutex; a `!Sync` mutex
// (`NullMutex`) keeps `Locked` on one thread, which is what makes skipping
// the lock sound there.
unsafe impl<M: RawMutex + Sync, T: Send> Sync for Locked<M, T> {}

impl<M: RawMutex, T> Locked<M, T> {
    loom_const_fn! {
        /// `value` behind an unlocked mutex; usable in `const` and `static`.
        pub fn new(value: T) -> Self {
            Self {
                #[cfg(not(loom))]
                mutex: M::INIT,
                #[cfg(loom)]
                mutex: M::init(),
                value: UnsafeCell::new(value),
            }
        }
    }

    /// Blocks (spins or sleeps, as `M` does) until the mutex is held, and
    /// returns the guard that releases it.
    #[inline]
    pub fn lock(&self) -> LockedGuard<'_, M, T> {
        self.mutex.lock();
        LockedGuard::new(self)
    }

    /// Takes the mutex if it is free, else returns `None` at once.
    #[inline]
    pub fn try_lock(&self) -> Option<LockedGuard<'_, M, T>> {
        if self.mutex.try_lock() {
            Some(LockedGuard::new(self))
        } else {
            None
        }
    }

    /// The value, without locking: `&mut self` proves no guard exists.
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Consumes the lock and returns the value.
    #[inline]
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<M: RawMutex, T: Default> Default for Locked<M, T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<M: RawMutex, T: fmt::Debug> fmt::Debug for Locked<M, T> {
    /// Shows the value only if the mutex is free right now: formatting
    /// must not block, nor deadlock when the caller holds the guard.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Locked");
        match self.try_lock() {
            Some(guard) => d.field("value", &&*guard),
            None => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Proof that the calling thread holds a [`Locked`]'s mutex; derefs to the
/// value and unlocks on drop.
///
/// It is `!Send`: [`RawMutex::unlock`] must run on the thread that locked.
///
/// ```compile_fail
/// use pinion_sync::{Locked, SpinMutex};
/// fn send<T: Send>(_: T) {}
/// let l = Locked::<SpinMutex, u8>::new(0);
/// send(l.lock()); // error: the guard cannot leave its thread
/// ```
#[must_use = "dropping the guard unlocks at once"]
pub struct LockedGuard<'a, M: RawMutex, T> {
    // Fields drop in declaration order: the access ends (under loom, its
    // tracking), and only then the mutex is released.
    /// The guarded value; under loom it also marks the access as exclusive
    /// for the guard's life, so the models catch two guards at once.
    value: MutPtr<T>,
    /// Unlocks on drop.
    _unlock: Unlock<'a, M>,
    /// A raw pointer is `!Send`, which is the point; `Sync` is given back
    /// below.
    _not_send: PhantomData<*const ()>,
}

/// The part of a [`LockedGuard`] that releases the mutex when dropped.
struct Unlock<'a, M: RawMutex>(&'a M);

impl<M: RawMutex> Drop for Unlock<'_, M> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: an `Unlock` is made only inside a guard, right after this
        // thread took the mutex (`lock`/`try_lock`); the guard cannot leave
        // the thread (`!Send`), and this is its only unlock.
        unsafe { self.0.unlock() };
    }
}

// SAFETY: `&LockedGuard` only yields `&T` (`DerefMut` needs `&mut`), so
// sharing a guard between threads shares `&T`, which `T: Sync` allows.
unsafe impl<M: RawMutex + Sync, T: Sync> Sync for LockedGuard<'_, M, T> {}

impl<'a, M: RawMutex, T> LockedGuard<'a, M, T> {
    /// Wraps a mutex the calling thread has just taken.
    #[inline]
    fn new(locked: &'a Locked<M, T>) -> Self {
        Self {
            value: locked.value.get(),
            _unlock: Unlock(&locked.mutex),
            _not_send: PhantomData,
        }
    }
}

impl<M: RawMutex, T> Deref for LockedGuard<'_, M, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard exists only while its thread holds the mutex,
        // so no `&mut T` is live elsewhere; a `&mut T` from this guard needs
        // `&mut self`, which this `&self` borrow excludes.
        unsafe { self.value.deref() }
    }
}

impl<M: RawMutex, T> DerefMut for LockedGuard<'_, M, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the mutex is held (see `deref`) and `&mut self` makes this
        // the only reference derived from the guard.
        unsafe { self.value.deref() }
    }
}

impl<M: RawMutex, T: fmt::Debug> fmt::Debug for LockedGuard<'_, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
