//! Reactor counters, behind the `stats` feature.
//!
//! With the feature off, `stat!` expands to nothing: no field, no atomic,
//! no instruction on any path.

pinion_core::counters! {
    /// A snapshot of the reactor's counters (`IoContext::stats`).
    pub struct Stats / Counters {
    /// `epoll_wait` system calls made.
    epoll_wait,
    /// Non-blocking polls skipped because the last real wait was a moment
    /// ago (see the reactor's docs): each one is an `epoll_wait` saved.
    polls_skipped,
    /// `EPOLL_CTL_ADD`: descriptors registered.
    ctl_add,
    /// `EPOLL_CTL_MOD` on sockets (adding `EPOLLOUT`, re-arming for a
    /// connect). The interrupter's are counted in `interrupts`.
    ctl_mod,
    /// `EPOLL_CTL_DEL` calls (closing deregisters implicitly: none today).
    ctl_del,
    /// Operations completed by the speculative attempt in `start_op`.
    speculative_hits,
    /// Speculative attempts that would have blocked (the op was queued).
    speculative_misses,
    /// Interrupts of a blocked `epoll_wait` (`EPOLL_CTL_MOD` on the
    /// interrupter).
    interrupts,
    /// `timerfd_settime` calls.
    timerfd_settime,
    /// Attempts at an operation's own system call (`recv`, `send`,
    /// `accept4`, `connect`...): speculative ones and those `perform_io`
    /// makes.
    op_attempts,
    /// Socket and timer operations whose handler ran.
    ops_completed,
    }
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

/// The reactor's counters now (zeros without the `stats` feature).
pub(crate) fn snapshot(r: &crate::Reactor) -> Stats {
    #[cfg(feature = "stats")]
    {
        r.stats.snapshot()
    }
    #[cfg(not(feature = "stats"))]
    {
        let _ = r;
        Stats::default()
    }
}

pub(crate) use pinion_core::stat;
