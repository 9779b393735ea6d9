//! The wake-up events behind the kits, after Asio's `posix_event`.
//!
//! Each keeps Asio's `state_` word: bit 0 is "signalled", the rest counts
//! waiters (each waiter adds 2), so a signal with nobody waiting is one
//! atomic OR and no syscall.

#[cfg(target_os = "linux")]
mod futex;
mod null;
mod spin;

#[cfg(target_os = "linux")]
pub use self::futex::FutexEvent;
pub use self::null::NullEvent;
pub use self::spin::SpinEvent;

/// Bit 0 of an event's state: the event is signalled.
const SIGNALLED: u32 = 1;
/// What each waiter adds to an event's state.
const WAITER: u32 = 2;
