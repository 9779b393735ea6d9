//! The io_uring proactor: pinion's scheduler task on io_uring (Asio's
//! `io_uring_service`).
//!
//! ```text
//!   initiating call ──► op in a pool slot ──► SQE (user_data = op) ──► SQ
//!                                                                      │
//!   Task::run: one io_uring_enter submits the SQ *and* waits ◄─────────┘
//!        │
//!        ▼
//!   reap every CQE: user_data ──► op, result ──► scheduler queue (batch)
//!        │
//!        ▼
//!   scheduler runs the handler: moves handler + buffer out, frees slot
//! ```
//!
//! The proactor is split by mechanism:
//! - `setup`: the ring, its probes and options, the interrupter;
//! - `submit`: the SQ, every push, submission and the wait;
//! - `reap`: the CQ and what each CQE hands on;
//! - `desc`, `accept`, `ops`, [`crate::bufs`]:
//!   descriptors (and closing), accepts, the socket operations, pooled
//!   reads.
//!
//! # user_data
//!
//! Operation slots are 16-byte aligned, so the low four bits of a pointer
//! are free for a tag:
//!
//! | tag | meaning |
//! |---|---|
//! | `TAG_OP` | the whole value is a `*mut Operation` waiting for exactly one CQE |
//! | `TAG_ACCEPT` | a listener's multishot accept; the high bits are its descriptor index |
//! | `UD_INTERRUPT` | the interrupter's eventfd read |
//! | `UD_IGNORE` | cancel requests, whose CQEs carry no operation |
//! | `TAG_POOLED` | a pooled read ([`crate::bufs`]): like `TAG_OP`, and the reaper keeps the CQE's flags (the buffer the kernel picked) in the operation |
//!
//! `user_data` is 64 bits on every target, so pointers and descriptor keys
//! (index and generation) travel whole on 32-bit CPUs too.
//!
//! # The buffer-lifetime rule
//!
//! `Sq::push` (`pinion_sys::uring`) is unsafe because the kernel may
//! read or write everything an SQE points to until the SQE's last CQE.
//! This module is the one place that keeps the rule: `Proactor::push` (for
//! the proactor's own requests) and `push_sqe_on`/`push_on` (for requests
//! on a socket) are the only ways to queue an SQE, and every caller points
//! it only into its own operation slot (buffer handles, addresses,
//! `msghdr`), into the proactor's boxed state, or into the read pool: a
//! pooled read's buffer is out of the pool, untouched by anyone else, from
//! the kernel's pick (or the fallback's take) until the read's completion
//! hands it on or back. A slot is freed only by its complete function,
//! which runs after the scheduler took the op off the queue it was put on
//! *by the reaper*, i.e. after its final CQE. Cancelling does not change
//! this: a cancelled op still waits for its own CQE (`ECANCELED` or the
//! real result). Multishot requests (accept) live in a descriptor slot that
//! is not reused before their final CQE (no `IORING_CQE_F_MORE`).
//!
//! # Submission and waiting
//!
//! SQEs pushed while handlers run stay in the SQ; the next `Task::run`
//! submits them and waits in the same `io_uring_enter`. If completions are
//! already in the CQ the run reaps them without a syscall and leaves the
//! SQ for the next run (at most once in a row, so submissions are never
//! starved). A push made while another thread is blocked in
//! `io_uring_enter` interrupts that thread (one eventfd write per wait),
//! which then submits; only the thread that runs the task submits in the
//! steady state. A full SQ is back-pressure: the pusher submits it and
//! retries, it is never an error.
//!
//! # Timed waits
//!
//! `IORING_ENTER_EXT_ARG` with a relative timespec (no timeout SQE): the
//! time-out is `min(Wait::Until, earliest timer) - now`. Timers are pinion's
//! one timer service, fired after every wait; a timer queued from another
//! thread with a deadline before the one the runner sleeps until
//! interrupts it.
//!
//! # Shutdown
//!
//! Every socket is closed by the close protocol (`desc`), and parked
//! accepts are handed over for destruction; then
//! `IORING_ASYNC_CANCEL_ANY` and waits until every SQE that expects a CQE
//! has had its final one (user operations, multishot accepts, the
//! interrupter read); only then are the operations destroyed (by the
//! scheduler). The ring, its eventfd and the provided buffer ring stay
//! until the proactor is dropped (a context shut down in place keeps
//! them, so late calls stay memory-safe), holding no socket.

use core::cell::UnsafeCell;

use pinion_core::backend::{Task, Wait};
use pinion_core::timer::TimerService;
use pinion_core::OpQueue;
use pinion_sync::{FutexKit, FutexMutex};
use pinion_sys::uring::abi::IOSQE_CQE_SKIP_SUCCESS;
use pinion_sys::uring::{Cq, Ring, Sqe};
use pinion_sys::{event, Fd};

use crate::bufs::ReadBuffers;
use crate::desc::DescTable;
use pinion_sync::Locked;

#[cfg(feature = "fault-injection")]
pub(crate) mod faults;
pub(crate) mod reap;
pub(crate) mod setup;
pub(crate) mod stats;
pub(crate) mod submit;

pub(crate) use stats::stat;
pub use stats::{RingInfo, Stats};
use submit::SqState;

/// The scheduler this proactor is the task of.
pub(crate) type Sched = pinion_core::Scheduler<Proactor, FutexKit>;

/// Bits of `user_data` that hold the tag.
pub(crate) const TAG_MASK: u64 = 0xF;
/// `user_data` is a pointer to an [`Operation`](pinion_core::Operation)
/// awaiting one CQE.
pub(crate) const TAG_OP: u64 = 0;
/// `user_data >> 4` is a listener's descriptor index: its multishot accept.
pub(crate) const TAG_ACCEPT: u64 = 1;
/// The interrupter's eventfd read.
pub(crate) const UD_INTERRUPT: u64 = 2;
/// A request whose CQE is ignored (cancels).
pub(crate) const UD_IGNORE: u64 = 3;
/// `user_data & !TAG_MASK` is a pooled read awaiting one CQE, whose flags
/// it needs.
pub(crate) const TAG_POOLED: u64 = 4;
/// `user_data & !TAG_MASK` is a zero-copy write (`IORING_OP_SEND_ZC`):
/// its first CQE carries the result, its last (the notification, or a
/// first one without `IORING_CQE_F_MORE`) completes it.
pub(crate) const TAG_ZC: u64 = 5;

/// How long the runner sleeps at most while a close waits for the kernel.
const PARKED_CLOSE_POLL_NS: u64 = 1_000_000;

/// Cap on how long shutdown waits for the kernel to give back operations.
const SHUTDOWN_DRAIN_NS: u64 = 10_000_000_000;

/// State touched only by the thread running the task (or by shutdown).
pub(crate) struct RunnerState {
    /// Final CQEs reaped for SQEs counted by `SqState::expected`.
    pub(crate) completed: u64,
    /// The interrupter read completed and must be queued again.
    pub(crate) rearm_interrupter: bool,
    /// The last run left the SQ unsubmitted; the next one must submit.
    pub(crate) deferred: bool,
    pub(crate) shutting_down: bool,
    /// CQEs a fault schedule holds back (`faults`).
    #[cfg(feature = "fault-injection")]
    pub(crate) held: faults::Held,
}

impl RunnerState {
    /// CQEs are held back by a fault schedule: the runner must not sleep.
    #[inline(always)]
    fn holding(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.held.holding()
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
}

/// The io_uring proactor: the scheduler's task.
pub struct Proactor {
    /// The ring: its fd and mappings. `cq` and `sq_state.sq` point into
    /// it; neither is used once the proactor is dropped.
    pub(crate) ring: Ring,
    /// The read pool (pooled reads). After `ring`: dropped after the ring,
    /// whose buffer ring points into it.
    pub(crate) read_bufs: Option<ReadBuffers>,
    /// The completion ring, read in place by the runner.
    pub(crate) cq: Cq,
    pub(crate) sq_lock: FutexMutex,
    pub(crate) sq_state: UnsafeCell<SqState>,
    /// A thread is (about to be) blocked in `io_uring_enter`; a push
    /// interrupts it. Set under `sq_lock`, together with making the SQ
    /// look full, so only a push's slow path needs to look at it.
    pub(crate) waiting: core::sync::atomic::AtomicBool,
    pub(crate) runner: UnsafeCell<RunnerState>,
    pub(crate) efd: Fd,
    /// The interrupter read's target: kernel-visible, so boxed (stable
    /// while the context moves).
    pub(crate) efd_buf: Box<UnsafeCell<u64>>,
    pub(crate) timers: TimerService<FutexMutex>,
    /// Deadline the blocked runner sleeps until; 0 when nobody blocks.
    /// Guarded by the timer service's lock (read in its `changed`
    /// callbacks, written in `with_earliest`).
    pub(crate) blocked_until: UnsafeCell<u64>,
    pub(crate) descs: DescTable,
    /// Closes whose cancel the kernel has not consumed yet: (head, tail)
    /// of a list through `Desc::closing_next`.
    pub(crate) closing: Locked<FutexMutex, (u32, u32)>,
    /// `closing` is not empty (a lock-free peek for the runner).
    pub(crate) closes_pending: core::sync::atomic::AtomicBool,
    /// Writes of at least this many bytes are zero-copy sends on sockets
    /// that take them (`u32::MAX`: none; see `ops`).
    pub(crate) zc_min: u32,
    pub(crate) info: RingInfo,
    #[cfg(feature = "stats")]
    pub(crate) stats: stats::StatCells,
    /// Operations whose cancel was sent, for a fault schedule (`faults`).
    #[cfg(feature = "fault-injection")]
    pub(crate) cancelled: faults::Cancelled,
}

// SAFETY: the SQ and `sq_state` are touched only under `sq_lock`; the CQ
// and `runner` only by the one thread running the task (the `Task`
// contract) or by shutdown, when no thread runs; `blocked_until` under
// the timer service's lock; descriptor and timer state are behind their
// own mutexes; the rest is atomics or immutable.
unsafe impl Sync for Proactor {}
// SAFETY: as above; every field is owned.
unsafe impl Send for Proactor {}

impl Proactor {
    /// What the ring looks like (sizes, pinned memory, features in use).
    pub fn ring_info(&self) -> RingInfo {
        self.info
    }

    /// The read pool, if the context has one.
    #[inline]
    pub(crate) fn read_pool(&self) -> Option<&ReadBuffers> {
        self.read_bufs.as_ref()
    }

    /// The counters now (zeros without the `stats` feature).
    pub(crate) fn counters(&self) -> Stats {
        #[cfg(feature = "stats")]
        {
            self.stats.snapshot()
        }
        #[cfg(not(feature = "stats"))]
        {
            Stats::default()
        }
    }

    /// Counts a pooled read that found no buffer (`Stats`).
    #[inline]
    pub(crate) fn note_read_buffers_empty(&self) {
        stat!(self, read_buffers_empty);
    }

    /// Wakes the runner blocked in `io_uring_enter`.
    pub(crate) fn signal(&self) {
        stat!(self, interrupts);
        // A full counter still wakes the reader: nothing to do on error.
        let _ = event::eventfd_signal(self.efd.raw());
    }

    /// The earliest timer deadline changed: a runner asleep past it must
    /// wake. Called under the timer service's lock.
    pub(crate) fn wake_for_timer(&self, earliest: Option<u64>) {
        // SAFETY: `blocked_until` is guarded by the timer lock, held by
        // the caller (the service calls this under it).
        let until = unsafe { *self.blocked_until.get() };
        // Nobody asleep (0) never compares greater.
        if earliest.is_some_and(|e| e < until) {
            self.signal();
        }
    }

    /// How long the runner may sleep for `wait`: `None` means not at all
    /// (a deadline has passed), `Some(u64::MAX)` until woken. Publishes
    /// the answer for `timers_changed`, under the timer lock.
    fn sleep_until(&self, wait: Wait, parked_close: bool) -> Option<u64> {
        let mut deadline = match wait {
            Wait::Poll => return None,
            Wait::Forever => u64::MAX,
            Wait::Until(d) => d,
        };
        if parked_close {
            deadline = deadline.min(self.now_ns().saturating_add(PARKED_CLOSE_POLL_NS));
        }
        self.timers.with_earliest(|earliest| {
            let until = earliest.unwrap_or(u64::MAX).min(deadline);
            if until != u64::MAX && until <= self.now_ns() {
                return None;
            }
            // SAFETY: under the timer lock (`with_earliest`).
            unsafe { *self.blocked_until.get() = until };
            Some(until)
        })
    }

    /// The runner is awake again: no timer needs to interrupt it.
    fn awake(&self) {
        // SAFETY: under the timer lock (`with_earliest`).
        self.timers
            .with_earliest(|_| unsafe { *self.blocked_until.get() = 0 });
    }
}

// SAFETY: `run` is the one user of the runner state and the CQ, which the
// scheduler guarantees by calling it from one thread at a time; `shutdown`
// waits for every final CQE before it hands operations over.
unsafe impl Task for Proactor {
    // Every completion comes from the ring; none is found done at start.
    const CONTINUATIONS: bool = false;

    unsafe fn run(&self, wait: Wait, ops: &mut OpQueue) {
        // SAFETY: the scheduler runs the task on one thread at a time, so
        // this is the only reference to the runner state.
        let rs = unsafe { &mut *self.runner.get() };
        // Completions already waiting cost no syscall.
        let mut reaped = self.reap(rs, ops);
        if rs.rearm_interrupter {
            rs.rearm_interrupter = false;
            self.arm_interrupter();
        }
        // A close whose teardown waits for the kernel (see `desc`) must not
        // wait for a wake-up that its own teardown would cause (a peer's
        // end of stream): finish what can be finished, and sleep briefly
        // while one is still parked.
        let parked = self
            .closes_pending
            .load(core::sync::atomic::Ordering::Acquire)
            && self.finish_closes();
        let until = if reaped == 0 && !rs.holding() {
            self.sleep_until(wait, parked)
        } else {
            None
        };
        if let Some(until) = until {
            self.with_sq(|st| {
                self.waiting
                    .store(true, core::sync::atomic::Ordering::Relaxed);
                // The next push then takes its slow path, which wakes us.
                st.sq.look_full();
            });
            self.enter_and_wait((until != u64::MAX).then_some(until));
            self.waiting
                .store(false, core::sync::atomic::Ordering::Relaxed);
            self.awake();
            rs.deferred = false;
            reaped = self.reap(rs, ops);
        } else if self.sq_pending() {
            // Completions are being handed out: let their handlers add to
            // the SQ and submit it with the next wait, but never twice in
            // a row.
            if rs.deferred || reaped == 0 {
                rs.deferred = false;
                self.enter_submit();
                reaped = self.reap(rs, ops);
            } else {
                rs.deferred = true;
            }
        }
        if reaped >= self.info.cq_entries as usize && self.cq_overflowed() {
            self.enter_submit();
            self.reap(rs, ops);
        }
        if self
            .closes_pending
            .load(core::sync::atomic::Ordering::Acquire)
        {
            self.finish_closes();
        }
        if self.timers.earliest().is_some() {
            let now = self.now_ns();
            self.timers.fire(now, ops, |e| self.wake_for_timer(e));
        }
    }

    fn interrupt(&self) {
        self.signal();
    }

    unsafe fn shutdown(&self, ops: &mut OpQueue) {
        // SAFETY: no thread runs the context during shutdown.
        let rs = unsafe { &mut *self.runner.get() };
        rs.shutting_down = true;
        // Every socket closed first (keys retired under the SQ lock, their
        // cancels queued, registered files removed, fds closed), so no SQE
        // can name one once the kernel is drained below; parked accepts
        // are handed over with them.
        self.close_all_descs(ops);
        // Accepts parked in user space are not in the kernel.
        self.take_all_waiters(ops);
        // CQEs a fault schedule held back are final CQEs already.
        #[cfg(feature = "fault-injection")]
        self.release_held(rs, ops);
        // Cancel everything in the kernel and wait for every final CQE:
        // only then may the slots (and buffers) be destroyed.
        let start = self.now_ns();
        loop {
            // SAFETY: exclusive at shutdown.
            let expected = unsafe { (*self.sq_state.get()).expected() };
            if rs.completed >= expected {
                break;
            }
            let e = Sqe::cancel_any()
                .with_flags(IOSQE_CQE_SKIP_SUCCESS)
                .user_data(UD_IGNORE);
            // SAFETY: a cancel carries no pointer.
            unsafe { self.push(&e, false) };
            self.enter_and_wait(Some(self.now_ns() + 50_000_000));
            self.reap(rs, ops);
            if self.now_ns().saturating_sub(start) > SHUTDOWN_DRAIN_NS {
                // Freeing slots the kernel may still write into would be
                // unsound; refusing to go on is the only safe answer.
                eprintln!(
                    "pinion-uring: {} io_uring requests did not complete within 10 s of \
                     shutdown; aborting rather than freeing memory the kernel may write",
                    expected - rs.completed
                );
                std::process::abort();
            }
        }
        // Every SQE has been consumed: parked closes can finish.
        self.finish_closes();
        self.timers.shutdown(ops);
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        pinion_sync::monotonic_now_ns()
    }

    /// A parked close (`desc`) keeps its socket open until the kernel has
    /// consumed its cancel: `run` must not return before then, or the
    /// socket stays open (and its slot taken) until some later call.
    fn busy(&self) -> bool {
        self.closes_pending
            .load(core::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Proactor {
    fn drop(&mut self) {
        // Shutdown has drained every request. Close the sockets still
        // open (the interrupter's fd closes with its field); the ring goes
        // last (field drop), its buffer ring unregistered first so the
        // kernel lets go of the entries before they are unmapped.
        self.close_all_fds();
        if let Some(b) = &self.read_bufs {
            b.unregister(&self.ring);
        }
    }
}
