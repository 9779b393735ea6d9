//! Timers, shared by every backend: the deadline heap ([`TimerQueue`],
//! Asio's `timer_queue`) and the service on top of it that backs
//! `SteadyTimer` ([`TimerService`]: timer objects, their waits, firing).
//!
//! A backend owns one [`TimerService`], tells the kernel when to wake it
//! (epoll: a timerfd; io_uring: the time-out of its `io_uring_enter`) from
//! the service's [`earliest`](TimerService::earliest) deadline and the
//! `changed` callbacks, and calls [`fire`](TimerService::fire) after every
//! wait. Everything else about timers is written once, here.

mod heap;
mod service;

pub use heap::{TimerHandle, TimerQueue, TimerSlot, MAX_CAPACITY};
#[cfg(target_os = "linux")]
pub use service::{async_wait, open, reset};
pub use service::{TimerEntry, TimerObj, TimerService};
