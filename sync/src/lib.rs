//! Synchronisation primitives for pinion's scheduler.
//!
//! The scheduler is generic over a [`SyncKit`]: a raw mutex plus the wake-up
//! event that idle threads sleep on (Asio's `conditionally_enabled_mutex` and
//! `conditionally_enabled_event`). Three kits exist:
//!
//! | kit | mutex | event | use |
//! |---|---|---|---|
//! | [`FutexKit`] (Linux) | futex mutex | futex event | threads that may sleep |
//! | [`SpinKit`] | test-and-test-and-set spin lock | spinning event | bare targets, no OS |
//! | [`NullKit`] | no-op, `!Sync` | no-op | one thread; the type system proves it |
//!
//! [`Locked`] puts a value behind any of the raw mutexes, reached only
//! through an RAII guard.
//!
//! Mutex variants live in separate files picked by cfg, as embassy and
//! heapless do for theirs.
//!
//! Only 32-bit and pointer-sized atomics are used, never `AtomicU64`, so
//! cores without `target_has_atomic = "64"` (armv5te, armv4t, MIPS32) are
//! served; `ci/cross-env.sh` runs the tests on armv5te.
#![cfg_attr(not(any(test, feature = "std", loom)), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

mod event;
#[cfg(all(target_os = "linux", not(loom)))]
mod futex;
mod locked;
mod loom;
mod mutex;
mod thread;
#[cfg(target_os = "linux")]
mod time;

// Built on the `INIT` constants, which loom builds do not have; the loom
// models are tests/loom_*.rs.
#[cfg(all(test, not(loom)))]
mod tests;

pub use event::*;
pub use locked::{Locked, LockedGuard};
pub use mutex::*;
pub use thread::current_thread_id;
#[cfg(target_os = "linux")]
pub use time::monotonic_now_ns;

/// A raw mutex: lock and unlock with no guard and no data.
///
/// The scheduler pairs one with a [`WakeEvent`] and passes the mutex to the
/// event's methods, so an event can unlock it and sleep atomically.
pub trait RawMutex {
    /// An unlocked mutex, usable in `const` and `static` initialisers.
    #[cfg(not(loom))]
    const INIT: Self;
    /// An unlocked mutex. Under loom, whose atomics cannot live in
    /// constants, this replaces `INIT`.
    #[cfg(loom)]
    fn init() -> Self;
    /// Blocks (spins or sleeps) until the mutex is held by the caller.
    fn lock(&self);
    /// Takes the mutex if it is free; `true` when the caller now holds it.
    fn try_lock(&self) -> bool;
    /// Releases the mutex.
    ///
    /// # Safety
    /// The calling thread holds the mutex (it locked it and has not
    /// unlocked it since).
    unsafe fn unlock(&self);
}

/// The wake-up event idle scheduler threads wait on.
///
/// Every method is called with `mutex` held by the caller, as in Asio's
/// `posix_event`/`conditionally_enabled_event`. The event keeps its own
/// count of waiters so that signalling with no waiter costs no syscall.
pub trait WakeEvent {
    /// A cleared event with no waiters, usable in `const` initialisers.
    #[cfg(not(loom))]
    const INIT: Self;
    /// A cleared event with no waiters. Under loom, whose atomics cannot
    /// live in constants, this replaces `INIT`.
    #[cfg(loom)]
    fn init() -> Self;
    /// Unlocks `mutex`, sleeps until signalled (or spuriously), relocks.
    ///
    /// # Safety
    /// The caller holds `mutex`; it holds it again when this returns.
    unsafe fn wait<M: RawMutex>(&self, mutex: &M);
    /// As [`wait`](Self::wait) but gives up after `timeout_ns` nanoseconds.
    /// Returns `false` on time-out.
    ///
    /// # Safety
    /// As for [`wait`](Self::wait).
    unsafe fn wait_for<M: RawMutex>(&self, mutex: &M, timeout_ns: u64) -> bool;
    /// Marks the event signalled and wakes every waiter. Mutex stays held.
    ///
    /// # Safety
    /// The caller holds `mutex`.
    unsafe fn signal_all<M: RawMutex>(&self, mutex: &M);
    /// Marks the event signalled and wakes one waiter. Mutex stays held.
    ///
    /// # Safety
    /// The caller holds `mutex`.
    unsafe fn signal_one<M: RawMutex>(&self, mutex: &M);
    /// Marks the event signalled, unlocks `mutex`, then wakes one waiter.
    ///
    /// # Safety
    /// The caller holds `mutex`; it does not hold it when this returns.
    unsafe fn unlock_and_signal_one<M: RawMutex>(&self, mutex: &M);
    /// If a thread is waiting: marks signalled, unlocks `mutex`, wakes one
    /// waiter and returns `true`. Otherwise returns `false` with `mutex`
    /// still held (the caller then interrupts the reactor instead).
    ///
    /// # Safety
    /// The caller holds `mutex`; on `true` it no longer does.
    unsafe fn maybe_unlock_and_signal_one<M: RawMutex>(&self, mutex: &M) -> bool;
    /// Clears the signalled state.
    ///
    /// # Safety
    /// The caller holds `mutex`.
    unsafe fn clear<M: RawMutex>(&self, mutex: &M);
}

/// A pairing of mutex and wake-up event the scheduler is built on.
pub trait SyncKit: 'static {
    /// The scheduler's mutex.
    type Mutex: RawMutex;
    /// The scheduler's wake-up event.
    type Event: WakeEvent;
}

/// Futex mutex + futex event: the default on Linux.
#[cfg(target_os = "linux")]
pub struct FutexKit;
#[cfg(target_os = "linux")]
impl SyncKit for FutexKit {
    type Mutex = FutexMutex;
    type Event = FutexEvent;
}

/// Spin mutex + spinning event: for bare targets with no OS to sleep in.
pub struct SpinKit;
impl SyncKit for SpinKit {
    type Mutex = SpinMutex;
    type Event = SpinEvent;
}

/// No locking at all, for a context only one thread ever touches. The
/// mutex is `!Sync`, so a scheduler built on it is `!Sync` too: the
/// compiler, not a runtime hint, keeps other threads out.
pub struct NullKit;
impl SyncKit for NullKit {
    type Mutex = NullMutex;
    type Event = NullEvent;
}
