//! The one place the scheduler and the strand get their atomics, their
//! shared cell and their kit's initial values from, so that
//! `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked versions (as
//! tokio's `src/loom/` does, and as `pinion-sync`'s own `src/loom.rs` does
//! for the mutexes and the event).
//!
//! Normally every item is a plain re-export of `core`, or an
//! `#[inline(always)]` one-liner over it, so the normal build is the code
//! it was. Under `cfg(loom)`:
//! - the atomics are loom's, so a model explores every order their loads
//!   and stores may be seen in;
//! - [`cell::UnsafeCell::get`] records an exclusive access with loom each
//!   time it is called, so an access to the scheduler's locked state that
//!   the mutex did not order after the previous one fails the model;
//! - [`mutex_init`] and [`event_init`] call the kit's `init()` (loom's
//!   atomics cannot live in the `INIT` constants).
//!
//! The models are `core/tests/loom_*.rs`. Only the protocols they check
//! use this facade (the scheduler, its thread registry); the task pool,
//! the slab and the storage cells keep `core`'s atomics, which loom runs
//! as plain memory.

use pinion_sync::{RawMutex, WakeEvent};

/// Atomics and their orderings.
pub(crate) mod atomic {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
}

/// A cell for state shared under a lock.
pub(crate) mod cell {
    /// `core::cell::UnsafeCell`; under loom a loom cell whose every
    /// [`get`](Self::get) is checked against the accesses before it.
    #[cfg(not(loom))]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);
    #[cfg(loom)]
    pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        /// A cell holding `value`.
        #[inline(always)]
        pub(crate) fn new(value: T) -> Self {
            #[cfg(not(loom))]
            let cell = core::cell::UnsafeCell::new(value);
            #[cfg(loom)]
            let cell = loom::cell::UnsafeCell::new(value);
            Self(cell)
        }

        /// A pointer to the value. Under loom this is an exclusive access
        /// at the moment of the call: it must happen after every earlier
        /// access (through the lock's acquire), or the model fails.
        #[inline(always)]
        pub(crate) fn get(&self) -> *mut T {
            #[cfg(not(loom))]
            let ptr = self.0.get();
            #[cfg(loom)]
            let ptr = self.0.with_mut(|p| p);
            ptr
        }
    }
}

/// An unlocked `M`: its `INIT`, or under loom its `init()`.
#[inline(always)]
pub(crate) fn mutex_init<M: RawMutex>() -> M {
    #[cfg(not(loom))]
    let m = M::INIT;
    #[cfg(loom)]
    let m = M::init();
    m
}

/// A cleared event `E`: its `INIT`, or under loom its `init()`.
#[inline(always)]
pub(crate) fn event_init<E: WakeEvent>() -> E {
    #[cfg(not(loom))]
    let e = E::INIT;
    #[cfg(loom)]
    let e = E::init();
    e
}
