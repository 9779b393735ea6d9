//! Asio's `epoll_reactor`: descriptor states from a fixed table, the
//! speculative `start_op`, `perform_io`, the interrupter and the timerfd.
//!
//! ```text
//!  start_op(op, type)                       epoll_wait (Task::run)
//!    queue[type] empty and speculation         event for slot (index, gen)
//!    allowed and try_speculative[type]:          gen matches, not queued:
//!      perform now ── done ─► post_immediate       queued = true, push the
//!      (exhausted: try_speculative = false)        slot's descriptor op
//!    write would block, no EPOLLOUT yet:       descriptor op completes:
//!      EPOLL_CTL_MOD += EPOLLOUT (once)          queued = false; perform_io
//!    push on queue[type], work_started           in except, write, read
//!                                                order; the first completed
//!                                                op runs inline, the rest are
//!                                                posted as one batch
//! ```
//!
//! - `table`: descriptor slots and what is done to them (register,
//!   `start_op`, cancel, close);
//! - `perform`: `perform_io` and the descriptor operation.
//!
//! Differences from Asio, none visible to a program:
//! - A stream read that returns fewer bytes than asked is
//!   `done_and_exhausted` (Asio: only a read of 0 bytes), so the next read
//!   waits for an edge instead of trying a `recv` bound to fail: one
//!   syscall saved per message in request/response traffic. To keep that
//!   safe when the peer's FIN came with the last data (no edge would follow)
//!   sockets are also registered for `EPOLLRDHUP`, and once it (or
//!   `EPOLLHUP`/`EPOLLERR`) was seen a short read no longer counts. Nor
//!   once `EPOLLPRI` was seen: TCP urgent data (`MSG_OOB`) stops a read at
//!   the urgent mark with the bytes behind it queued and no edge to come
//!   (`tcp_recvmsg`), so on such a socket a short read is followed by a
//!   `recv` that finds out.
//! - Epoll data is the slot's key (index, generation), not a pointer, so an
//!   event for a closed (or closed and reused) slot is simply ignored.
//! - pinion's scheduler takes batches, so a queued descriptor operation may
//!   sit on a batch whose tail link is null; `OpQueue::is_enqueued` cannot
//!   tell, and a `queued` flag kept under the slot's lock does instead.
//! - On a context built for one thread (concurrency hint 1) the task
//!   performs the ready operations itself, under the slot's lock, right
//!   after `epoll_wait`, and queues the completed ones in Asio's order
//!   (except, write, read) instead of queueing a descriptor operation
//!   that would do the same a moment later on the same thread. Contexts for
//!   several threads keep Asio's descriptor operations, which let any idle
//!   thread do a descriptor's I/O.
//! - A non-blocking poll (the scheduler's `Wait::Poll`, asked for between
//!   batches of handlers) is skipped when the kernel was asked less than
//!   [`POLL_SKIP_NS`] ago and fewer than [`POLL_SKIP_MAX`] polls in a row
//!   were skipped: to the program this looks like readiness arriving a
//!   moment later, and it saves an `epoll_wait` per batch on chains of
//!   handlers whose I/O the speculative path already served.
//! - Timers are pinion's one timer service; the reactor arms its timerfd
//!   for the service's earliest deadline.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use pinion_core::backend::{BuildError, Key, Task, Wait};
use pinion_core::timer::TimerService;
use pinion_core::{OpQueue, Result};
use pinion_sync::FutexMutex;
use pinion_sys::{event, syscall, Errno, Fd};

use crate::interrupter::Interrupter;
use crate::stats::stat;
use crate::ReadBuffers;

pub(crate) mod perform;
pub(crate) mod table;

pub use table::DescriptorSlot;
pub(crate) use table::Table;

/// Queue of reads (and accepts) on a descriptor.
pub(crate) const READ_OP: usize = 0;
/// Queue of writes on a descriptor.
pub(crate) const WRITE_OP: usize = 1;
/// Connects wait for writability, like writes (Asio: `connect_op = write_op`).
pub(crate) const CONNECT_OP: usize = WRITE_OP;
/// Queue of out-of-band reads; kept for Asio's ordering rule (a read is
/// not attempted speculatively while one waits).
pub(crate) const EXCEPT_OP: usize = 2;
pub(crate) const MAX_OPS: usize = 3;

/// Events after which a short read no longer means "drained": end of
/// stream or error (reads never block again), or urgent data (a read
/// stops at the urgent mark with data behind it).
const SHORT_READ_UNSURE_EVENTS: u32 =
    (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
const INTERRUPTER_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLET) as u32;
/// The timerfd is level-triggered; re-arming it after each expiry check
/// makes it unreadable again (Asio does the same).
const TIMER_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLERR) as u32;

/// Epoll data of the interrupter and of the timerfd: index `u32::MAX`,
/// which no table slot has.
const INTERRUPTER_TOKEN: u64 = u64::MAX;
const TIMER_TOKEN: u64 = u64::MAX - (1 << 32);

/// Events taken per `epoll_wait` (Asio takes 128).
const MAX_EVENTS: usize = 128;
/// Most non-blocking polls skipped in a row.
pub const POLL_SKIP_MAX: u32 = 15;
/// A non-blocking poll is skipped only this soon after the last real wait.
pub const POLL_SKIP_NS: u64 = 1_000_000;
/// The last wait's time is kept in units of 2^10 ns in 32 bits (wrapping
/// after 73 minutes, compared by wrapping difference): no 64-bit atomic,
/// which not every target has.
const WAIT_CLOCK_SHIFT: u32 = 10;

/// Asio's `epoll_reactor`: the backend task of an epoll context.
pub struct Reactor {
    epoll: Fd,
    interrupter: Interrupter,
    timer_fd: Fd,
    pub(crate) table: Table,
    pub(crate) timers: TimerService<FutexMutex>,
    polls_skipped: AtomicU32,
    last_wait: AtomicU32,
    /// Perform I/O in `Task::run` instead of through descriptor ops
    /// (contexts for one thread; see the module docs).
    inline_io: bool,
    /// The pool pooled reads take from, if the context has one.
    pub(crate) read_buffers: Option<ReadBuffers>,
    #[cfg(feature = "stats")]
    pub(crate) stats: crate::stats::Counters,
}

// SAFETY: every mutable part is behind a lock (slots, table, timers) or
// atomic; `run` is called by one thread at a time (Task contract).
unsafe impl Sync for Reactor {}
// SAFETY: owns its descriptors and storage.
unsafe impl Send for Reactor {}

/// What the reactor is built on.
pub(crate) struct Setup {
    pub(crate) table: Table,
    pub(crate) timers: TimerService<FutexMutex>,
    pub(crate) read_buffers: Option<ReadBuffers>,
    pub(crate) inline_io: bool,
}

impl Reactor {
    /// Opens the epoll instance, the interrupter and the timerfd.
    pub(crate) fn new(setup: Setup) -> core::result::Result<Self, BuildError> {
        let os = |what: &'static str| {
            move |e: Errno| BuildError::Os {
                what,
                error: e.into(),
            }
        };
        // SAFETY: no pointers; the new fd is wrapped on the next line.
        let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map_err(os("epoll_create1"))?;
        // SAFETY: `epoll_create1` just returned this descriptor.
        let epoll = unsafe { Fd::from_raw(raw) };
        let interrupter = Interrupter::new().map_err(os("the reactor's interrupter"))?;
        let timer_fd = event::timerfd_create().map_err(os("timerfd_create"))?;
        let r = Reactor {
            epoll,
            interrupter,
            timer_fd,
            table: setup.table,
            timers: setup.timers,
            polls_skipped: AtomicU32::new(0),
            last_wait: AtomicU32::new(0),
            inline_io: setup.inline_io,
            read_buffers: setup.read_buffers,
            #[cfg(feature = "stats")]
            stats: Default::default(),
        };
        let ctl = |fd, events, token| {
            r.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
                .map_err(|error| BuildError::Os {
                    what: "epoll_ctl (registering the interrupter and the timerfd)",
                    error,
                })
        };
        ctl(
            r.interrupter.read_fd(),
            INTERRUPTER_EVENTS,
            INTERRUPTER_TOKEN,
        )?;
        ctl(r.timer_fd.raw(), TIMER_EVENTS, TIMER_TOKEN)?;
        Ok(r)
    }

    #[inline]
    pub(crate) fn ctl(&self, op: i32, fd: i32, events: u32, data: u64) -> Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid, live epoll_event for the call.
        Ok(syscall!(epoll_ctl(self.epoll.raw(), op, fd, &mut ev)).map(drop)?)
    }

    /// Sets the timerfd to `deadline` (absolute), or disarms it. Called
    /// under the timer service's lock, so calls come in order.
    pub(crate) fn arm_timer_fd(&self, deadline: Option<u64>) {
        // A failure leaves the previous setting: nothing to do about it.
        let _ = event::timerfd_set_abs(self.timer_fd.raw(), deadline);
        stat!(self, timerfd_settime);
    }

    /// Moves the waits of every due timer to `ops` and re-arms the timerfd
    /// for the next one (which also makes it unreadable again).
    fn fire_timers(&self, ops: &mut OpQueue) {
        let now = self.now_ns();
        let fired = self.timers.fire(now, ops, |e| self.arm_timer_fd(e));
        if fired == 0 {
            // Woken early (or by a timer cancelled since): the level-
            // triggered timerfd must be made unreadable again.
            self.arm_timer_fd(self.timers.earliest());
        }
    }

    /// `true` when a non-blocking poll may be skipped (see the module docs).
    #[inline]
    fn skip_poll(&self) -> bool {
        let skipped = self.polls_skipped.load(Relaxed);
        if skipped < POLL_SKIP_MAX {
            let now = (self.now_ns() >> WAIT_CLOCK_SHIFT) as u32;
            if now.wrapping_sub(self.last_wait.load(Relaxed))
                < (POLL_SKIP_NS >> WAIT_CLOCK_SHIFT) as u32
            {
                self.polls_skipped.store(skipped + 1, Relaxed);
                stat!(self, polls_skipped);
                return true;
            }
        }
        false
    }
}

// SAFETY: `run` touches no runner-only state without a lock (the slots
// are locked per event); `shutdown` runs with no thread in the context.
unsafe impl Task for Reactor {
    unsafe fn run(&self, wait: Wait, ops: &mut OpQueue) {
        let timeout = match wait {
            Wait::Poll => {
                if self.skip_poll() {
                    return;
                }
                0
            }
            Wait::Forever => -1,
            Wait::Until(d) => {
                let now = self.now_ns();
                // Round up so a wait never ends just before the deadline.
                d.saturating_sub(now)
                    .div_ceil(1_000_000)
                    .min(i32::MAX as u64) as i32
            }
        };
        let mut events = [const { MaybeUninit::<libc::epoll_event>::uninit() }; MAX_EVENTS];
        stat!(self, epoll_wait);
        let n = match pinion_sys::fault::fail(pinion_sys::fault::Site::EpollWait) {
            Some(e) => Err(e),
            // SAFETY: `events` is room for MAX_EVENTS entries.
            None => syscall!(epoll_wait(
                self.epoll.raw(),
                events.as_mut_ptr() as *mut libc::epoll_event,
                MAX_EVENTS as i32,
                timeout
            )),
        }
        .unwrap_or(0) as usize; // EINTR: nothing ready, the scheduler asks again
        self.polls_skipped.store(0, Relaxed);
        self.last_wait
            .store((self.now_ns() >> WAIT_CLOCK_SHIFT) as u32, Relaxed);

        let mut check_timers = false;
        for ev in &events[..n] {
            // SAFETY: the kernel initialised the first `n` entries.
            let ev = unsafe { ev.assume_init_ref() };
            let (data, bits) = (ev.u64, ev.events);
            // The two special tokens have index u32::MAX, which no slot
            // has, so slot events test nothing more.
            let Some(mut l) = self.event_slot(Key::from_bits(data)) else {
                // The interrupter is left readable on purpose: the next
                // EPOLL_CTL_MOD re-arms it. A stale event is ignored.
                check_timers |= data == TIMER_TOKEN;
                continue;
            };
            let slot = l.slot;
            let st = l.state();
            if bits & SHORT_READ_UNSURE_EVENTS != 0 {
                st.short_read_unsure = true;
            }
            if self.inline_io {
                // Asio's perform_io, here and now (see the module docs).
                st.ready_events = bits;
                perform::perform_io(self, st, |op| {
                    // SAFETY: performed and popped: live, on no queue.
                    unsafe { ops.push(op) }
                });
            } else if st.queued {
                st.ready_events |= bits;
            } else {
                st.ready_events = bits;
                st.queued = true;
                // SAFETY: `queued` was false, so the header is on no
                // queue; the slot lives as long as the reactor.
                unsafe { ops.push(slot.header()) };
            }
        }
        if check_timers {
            self.fire_timers(ops);
        }
    }

    fn interrupt(&self) {
        let _ = self.ctl(
            libc::EPOLL_CTL_MOD,
            self.interrupter.read_fd(),
            INTERRUPTER_EVENTS,
            INTERRUPTER_TOKEN,
        );
        stat!(self, interrupts);
    }

    unsafe fn shutdown(&self, ops: &mut OpQueue) {
        // The table first, so a socket registered meanwhile is either
        // seen by the walk or refused (see `register_in`).
        self.table.close();
        self.timers.shutdown(ops);
        self.close_all(ops);
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        pinion_sync::monotonic_now_ns()
    }
}
