//! The one place the primitives get their atomics, cell, spin hint and
//! futex calls from, so that `RUSTFLAGS="--cfg loom"` can swap in loom's
//! model-checked versions (as tokio's `src/loom/` does).
//!
//! Normally every item here is a plain re-export of `core` (or of
//! [`crate::futex`]), or a `#[repr(transparent)]` wrapper whose methods are
//! `#[inline(always)]` one-liners, so the normal build compiles to exactly
//! the code it had before the facade (checked with objdump on x86-64 and
//! armv7: every public lock, unlock, wait and signal is the same, instruction
//! for instruction). Only under `cfg(loom)` do the items
//! change, and with them two things a model cannot have: constants built
//! from atomics (see [`loom_const_fn!`]) and spin loops of hundreds of
//! iterations (see `FutexMutex`'s spin limit).

/// Defines a `const fn` normally and a plain `fn` under loom, whose atomics
/// and cells register with the running model and so cannot be made in a
/// constant. For the same reason [`RawMutex::INIT`](crate::RawMutex::INIT)
/// and [`WakeEvent::INIT`](crate::WakeEvent::INIT) become `init()` there.
macro_rules! loom_const_fn {
    ($(#[$m:meta])* $v:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty $body:block) => {
        $(#[$m])*
        #[cfg(not(loom))]
        $v const fn $name($($a: $t),*) -> $r $body

        $(#[$m])*
        #[cfg(loom)]
        $v fn $name($($a: $t),*) -> $r $body
    };
}
pub(crate) use loom_const_fn;

/// The `INIT` item of a [`RawMutex`](crate::RawMutex) or
/// [`WakeEvent`](crate::WakeEvent) impl from the type's `new()`: a constant
/// normally, the `init()` function under loom.
macro_rules! init_from_new {
    () => {
        #[cfg(not(loom))]
        const INIT: Self = Self::new();
        #[cfg(loom)]
        fn init() -> Self {
            Self::new()
        }
    };
}
pub(crate) use init_from_new;

/// Atomics and their orderings. `AtomicUsize` has no user in sync yet; it is
/// here so that the first one does not reach past the facade to `core`.
#[allow(unused_imports)]
pub(crate) mod atomic {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
}

/// `core::hint::spin_loop`; under loom a yield, which lets the model run
/// the thread being waited for.
pub(crate) mod hint {
    #[cfg(not(loom))]
    pub(crate) use core::hint::spin_loop;
    #[cfg(loom)]
    pub(crate) use loom::hint::spin_loop;
}

/// An `UnsafeCell` whose accesses loom can track: a shared or exclusive
/// access is a [`cell::MutPtr`] held for as long as the access lasts, and
/// under loom two overlapping accesses of which one is exclusive fail the
/// model (a data race the mutex should have prevented).
pub(crate) mod cell {
    /// A pointer to the cell's value that, under loom, marks an exclusive
    /// access while it lives. Normally a bare `*mut T`.
    #[cfg(not(loom))]
    pub(crate) struct MutPtr<T>(*mut T);
    #[cfg(loom)]
    pub(crate) struct MutPtr<T>(loom::cell::MutPtr<T>);

    impl<T> MutPtr<T> {
        /// The value.
        ///
        /// # Safety
        /// No other reference to the value is live while the returned one
        /// is used (`&mut` rules), and the cell outlives it.
        #[inline(always)]
        #[allow(clippy::mut_from_ref)]
        pub(crate) unsafe fn deref(&self) -> &mut T {
            #[cfg(not(loom))]
            // SAFETY: forwarded from this fn's contract.
            unsafe {
                &mut *self.0
            }
            #[cfg(loom)]
            // SAFETY: forwarded from this fn's contract.
            unsafe {
                self.0.deref()
            }
        }
    }

    /// `core::cell::UnsafeCell`, or `loom::cell::UnsafeCell` under loom.
    #[cfg(not(loom))]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);
    #[cfg(loom)]
    pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        loom_const_fn! {
            /// A cell holding `value`.
            #[inline(always)]
            pub(crate) fn new(value: T) -> Self {
                #[cfg(not(loom))]
                let cell = core::cell::UnsafeCell::new(value);
                #[cfg(loom)]
                let cell = loom::cell::UnsafeCell::new(value);
                Self(cell)
            }
        }

        /// Starts an access to the value; see [`MutPtr`].
        #[inline(always)]
        pub(crate) fn get(&self) -> MutPtr<T> {
            #[cfg(not(loom))]
            let ptr = self.0.get();
            #[cfg(loom)]
            let ptr = self.0.get_mut();
            MutPtr(ptr)
        }

        /// The value, through `&mut self` (no access can overlap).
        #[inline(always)]
        pub(crate) fn get_mut(&mut self) -> &mut T {
            #[cfg(not(loom))]
            let value = self.0.get_mut();
            #[cfg(loom)]
            let value = self.0.with_mut(|p| {
                // SAFETY: `&mut self` excludes every other access for as
                // long as the returned borrow lives, so it may outlast
                // loom's check.
                unsafe { &mut *p }
            });
            value
        }

        /// Consumes the cell.
        #[inline(always)]
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }
}

/// `futex(2)` wait and wake: the syscalls normally, an emulation under
/// loom.
#[cfg(target_os = "linux")]
pub(crate) mod futex {
    #[cfg(not(loom))]
    pub(crate) use crate::futex::{wait, wake};

    /// Why a [`wait`] returned.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum WaitOutcome {
        /// Woken by a `FUTEX_WAKE`, or by a signal (`EINTR`); both look
        /// alike to callers, which re-check their state anyway.
        Woken,
        /// The word no longer held the expected value (`EAGAIN`).
        Changed,
        /// The relative timeout elapsed (`ETIMEDOUT`).
        TimedOut,
    }

    #[cfg(loom)]
    pub(crate) use self::emulated::{wait, wake};

    /// The kernel's futex, rebuilt from a loom `Mutex` (the hash-bucket
    /// lock) and `Condvar` over an explicit queue of waiters.
    ///
    /// Why not "yield while the word equals `expected`": such a waiter
    /// leaves as soon as the word changes, whether or not anyone calls
    /// wake, so a signaller that changes the word but wrongly skips
    /// `FUTEX_WAKE` (the "no waiter, no syscall" shortcut both the mutex
    /// and the event take) would pass the model. Here, as in the kernel, a
    /// waiter that found the word equal under the bucket lock sleeps until
    /// a wake dequeues it; only a timed wait may also leave on its own.
    #[cfg(loom)]
    mod emulated {
        use std::vec::Vec;

        use super::WaitOutcome;
        use crate::loom::atomic::{AtomicU32, Ordering};
        use loom::sync::{Condvar, Mutex};

        /// Sleeping waiters in arrival order, by futex word address and a
        /// ticket that tells them apart.
        struct Queue {
            waiters: Vec<(usize, usize)>,
            next_ticket: usize,
        }

        loom::lazy_static! {
            // One per model run, like the kernel's table per process.
            static ref TABLE: (Mutex<Queue>, Condvar) = (
                Mutex::new(Queue { waiters: Vec::new(), next_ticket: 0 }),
                Condvar::new(),
            );
        }

        fn key(word: &AtomicU32) -> usize {
            word as *const AtomicU32 as usize
        }

        /// `FUTEX_WAIT`: compare and enqueue atomically with respect to
        /// [`wake`] (both under the table lock), then sleep until dequeued.
        ///
        /// A timed wait models a time-out that may fire at any moment: it
        /// releases the table lock once, so the model may run any other
        /// thread before it looks again, and then leaves, woken if a wake
        /// dequeued it meanwhile and timed out otherwise. No model time
        /// passes, so callers must treat it as "may return early".
        pub(crate) fn wait(
            word: &AtomicU32, expected: u32, timeout_ns: Option<u64>,
        ) -> WaitOutcome {
            let (lock, condvar) = &*TABLE;
            let mut q = lock.lock().unwrap();
            if word.load(Ordering::Relaxed) != expected {
                return WaitOutcome::Changed;
            }
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            q.waiters.push((key(word), ticket));
            let queued = |q: &Queue| q.waiters.iter().position(|w| w.1 == ticket);
            if timeout_ns.is_some() {
                drop(q);
                let mut q = lock.lock().unwrap();
                return match queued(&q) {
                    Some(i) => {
                        q.waiters.remove(i);
                        WaitOutcome::TimedOut
                    }
                    None => WaitOutcome::Woken,
                };
            }
            while queued(&q).is_some() {
                q = condvar.wait(q).unwrap();
            }
            WaitOutcome::Woken
        }

        /// `FUTEX_WAKE`: dequeues up to `n` waiters on `word`, oldest first.
        pub(crate) fn wake(word: &AtomicU32, n: i32) {
            let (lock, condvar) = &*TABLE;
            let mut q = lock.lock().unwrap();
            let key = key(word);
            let mut left = n;
            q.waiters.retain(|w| {
                if left > 0 && w.0 == key {
                    left -= 1;
                    false
                } else {
                    true
                }
            });
            // One condvar for all words: every sleeper re-checks its ticket.
            condvar.notify_all();
        }
    }
}
