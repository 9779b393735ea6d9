//! [`NullEvent`]: the wake-up event of a one-thread context.

use crate::loom::init_from_new;
use crate::{RawMutex, WakeEvent};

/// A wake-up event that never waits, for a context only one thread runs.
///
/// With one thread there is nobody else to signal, so `wait` and
/// `wait_for` return at once (a spurious wake-up, which the event contract
/// allows: the scheduler re-checks its queue and, finding nothing, goes on
/// to its reactor or returns). No method touches the mutex except
/// `unlock_and_signal_one`, which must release it.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullEvent {
    _private: (),
}

impl NullEvent {
    /// The event (same as [`WakeEvent::INIT`]).
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl WakeEvent for NullEvent {
    init_from_new!();

    /// Returns at once, mutex still held.
    unsafe fn wait<M: RawMutex>(&self, _mutex: &M) {}

    /// Returns `false` at once, mutex still held: nobody can signal, so the
    /// outcome of waiting is known to be a time-out (no time is spent).
    unsafe fn wait_for<M: RawMutex>(&self, _mutex: &M, _timeout_ns: u64) -> bool {
        false
    }

    unsafe fn signal_all<M: RawMutex>(&self, _mutex: &M) {}

    unsafe fn signal_one<M: RawMutex>(&self, _mutex: &M) {}

    unsafe fn unlock_and_signal_one<M: RawMutex>(&self, mutex: &M) {
        // SAFETY: the caller holds `mutex` and gives it up (this fn's
        // contract).
        unsafe { mutex.unlock() };
    }

    /// Always `false` (mutex still held): no thread can be waiting.
    unsafe fn maybe_unlock_and_signal_one<M: RawMutex>(&self, _mutex: &M) -> bool {
        false
    }

    unsafe fn clear<M: RawMutex>(&self, _mutex: &M) {}
}
