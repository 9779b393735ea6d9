//! Reactor counters, behind the `stats` feature.
//!
//! With the feature off, [`stat!`] expands to nothing: no field, no
//! atomic, no instruction on any path.

/// A snapshot of the reactor's counters ([`IoContext::stats`](crate::IoContext::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `epoll_wait` system calls made.
    pub epoll_wait: u64,
    /// Non-blocking polls skipped because the last real wait was a moment
    /// ago (see the reactor's docs): each one is an `epoll_wait` saved.
    pub polls_skipped: u64,
    /// `EPOLL_CTL_ADD`: descriptors registered.
    pub ctl_add: u64,
    /// `EPOLL_CTL_MOD` on sockets (adding `EPOLLOUT`, re-arming for a
    /// connect). The interrupter's are counted in `interrupts`.
    pub ctl_mod: u64,
    /// `EPOLL_CTL_DEL` calls (closing deregisters implicitly: none today).
    pub ctl_del: u64,
    /// Operations completed by the speculative attempt in `start_op`.
    pub speculative_hits: u64,
    /// Speculative attempts that would have blocked (the op was queued).
    pub speculative_misses: u64,
    /// Interrupts of a blocked `epoll_wait` (`EPOLL_CTL_MOD` on the
    /// interrupter).
    pub interrupts: u64,
    /// `timerfd_settime` calls.
    pub timerfd_settime: u64,
    /// Attempts at an operation's own system call (`recv`, `send`,
    /// `accept4`, `connect`...): speculative ones and those `perform_io`
    /// makes.
    pub op_attempts: u64,
    /// Socket and timer operations whose handler ran.
    pub ops_completed: u64,
}

impl Stats {
    /// System calls the reactor made for the program's I/O: waits,
    /// `epoll_ctl`s (interrupts included), timerfd updates and operation
    /// attempts (one per attempt; a connect's check counts as one).
    /// Opening and configuring sockets is not counted.
    pub fn syscalls(&self) -> u64 {
        self.epoll_wait
            + self.ctl_add
            + self.ctl_mod
            + self.ctl_del
            + self.interrupts
            + self.timerfd_settime
            + self.op_attempts
    }
}

#[cfg(feature = "stats")]
mod imp {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::Stats;

    /// The live counters, one relaxed atomic each.
    #[derive(Default)]
    pub(crate) struct Counters {
        pub(crate) epoll_wait: AtomicU64,
        pub(crate) polls_skipped: AtomicU64,
        pub(crate) ctl_add: AtomicU64,
        pub(crate) ctl_mod: AtomicU64,
        pub(crate) ctl_del: AtomicU64,
        pub(crate) speculative_hits: AtomicU64,
        pub(crate) speculative_misses: AtomicU64,
        pub(crate) interrupts: AtomicU64,
        pub(crate) timerfd_settime: AtomicU64,
        pub(crate) op_attempts: AtomicU64,
        pub(crate) ops_completed: AtomicU64,
    }

    impl Counters {
        pub(crate) fn snapshot(&self) -> Stats {
            Stats {
                epoll_wait: self.epoll_wait.load(Relaxed),
                polls_skipped: self.polls_skipped.load(Relaxed),
                ctl_add: self.ctl_add.load(Relaxed),
                ctl_mod: self.ctl_mod.load(Relaxed),
                ctl_del: self.ctl_del.load(Relaxed),
                speculative_hits: self.speculative_hits.load(Relaxed),
                speculative_misses: self.speculative_misses.load(Relaxed),
                interrupts: self.interrupts.load(Relaxed),
                timerfd_settime: self.timerfd_settime.load(Relaxed),
                op_attempts: self.op_attempts.load(Relaxed),
                ops_completed: self.ops_completed.load(Relaxed),
            }
        }
    }
}

#[cfg(feature = "stats")]
pub(crate) use imp::Counters;

/// Counts one event on the reactor `$r` (a `&Reactor`), when the `stats`
/// feature is on; nothing at all otherwise.
#[cfg(feature = "stats")]
macro_rules! stat {
    ($r:expr, $field:ident) => {{
        $r.stats
            .$field
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }};
}
#[cfg(not(feature = "stats"))]
macro_rules! stat {
    ($r:expr, $field:ident) => {
        ()
    };
}
pub(crate) use stat;
