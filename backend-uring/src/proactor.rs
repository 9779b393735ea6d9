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
//! # The buffer-lifetime rule
//!
//! io-uring's `SubmissionQueue::push` is unsafe because the kernel may
//! read or write everything an SQE points to until the SQE's last CQE.
//! This module is the one place that keeps the rule: `Proactor::push` (for
//! the proactor's own requests) and `push_sqe_on`/`push_on` (for requests
//! on a socket) are the only ways to queue an SQE, and every caller points
//! it only into its own operation slot
//! (buffer handles, addresses, `msghdr`), into the proactor's boxed
//! state, or into the read pool: a pooled read's buffer is out of the
//! pool, untouched by anyone else, from the kernel's pick (or the
//! fallback's take) until the read's completion hands it on or back. A
//! slot is freed only by its complete function, which runs after
//! the scheduler took the op off the queue it was put on *by the reaper*,
//! i.e. after its final CQE. Cancelling does not change this: a cancelled
//! op still waits for its own CQE (`ECANCELED` or the real result).
//! Multishot requests (accept) live in a descriptor slot that is not
//! reused before their final CQE (no `IORING_CQE_F_MORE`).
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
//! The SQ ring is written through pinion's own mapping of it
//! (module `ring`), only under `sq_lock`: the SQE goes in place and the
//! tail, kept in the locked state, is published before the lock is
//! released. The CQ is read the same way by the one thread running the
//! task. The io-uring crate sets the ring up and makes the system calls.
//!
//! # Timed waits
//!
//! `IORING_ENTER_EXT_ARG` with a relative timespec (no timeout SQE): the
//! time-out is `min(Wait::Until, earliest timer) - now`. Timers are a
//! [`TimerQueue`] under a mutex, fired after every wait. A timer queued
//! from another thread with a deadline before the one the runner sleeps
//! until interrupts it.
//!
//! # Cancellation and close
//!
//! `cancel()` queues one `IORING_OP_ASYNC_CANCEL` matching every request
//! on the socket's fd (`IORING_ASYNC_CANCEL_FD | ALL`); each cancelled
//! operation then completes through its own CQE (`ECANCELED` →
//! `OperationAborted`, or its real result if it finished first), buffer
//! included.
//!
//! Handles are `Copy` and `Send`, so one thread may start an operation
//! while another closes the socket and opens the next one, which takes the
//! same descriptor slot, registered-file index and fd number. The rule:
//! an operation runs on the socket its handle named or is refused with
//! `BadDescriptor`, never on a successor. It holds because
//! - every SQE that names a socket is written by `push_sqe_on`/`push_on`,
//!   which check the handle's generation and write the SQE in one stretch
//!   under `sq_lock`;
//! - `close()` moves the generation on and queues its cancel in one
//!   stretch under the same lock, so every SQE of the old handle is ahead
//!   of the cancel in the SQ and none can follow it;
//! - the socket is torn down (registered file removed, fd closed, slot
//!   freed) only once the kernel's SQ head has passed the cancel: every
//!   earlier SQE has been issued, its file looked up, and the cancel has
//!   found it. `close()` submits until then; if the kernel has not got
//!   there (an SQPOLL thread busy elsewhere, a failed submission) the
//!   teardown waits in a list the runner finishes after its next
//!   `io_uring_enter`, and shutdown at the latest. The handle is stale
//!   from the moment `close()` takes the lock either way.
//! - Calls that use the fd directly (options, addresses, `shutdown`) run
//!   under the descriptor's lock, which `close()` takes to move the
//!   generation on.
//!
//! # Registered files
//!
//! With `Builder::registered_files` (default on) the ring gets a sparse
//! registered-file table as large as the descriptor table. A socket
//! entering the table (bind, connect, accept) is installed at its
//! descriptor index (`IORING_REGISTER_FILES_UPDATE`), and its SQEs name it
//! as `types::Fixed(index)` (`Target`); cancels add
//! `IORING_ASYNC_CANCEL_FD_FIXED`. Close removes it (update to `-1`) after
//! the cancel was submitted and before the fd is closed and the index
//! freed, so an index never names an old socket. The raw fd is kept for
//! socket options, addresses and `shutdown`. Accept still returns a plain
//! fd (no direct descriptors). Two `io_uring_register` calls per socket,
//! none per message; counted in `Stats::files_updates`. If the kernel
//! refuses the table (or one update), sockets are named by fd.
//!
//! # Multishot accept
//!
//! A listener keeps one multishot accept armed while an `async_accept`
//! waits. Connections it accepts with nobody waiting are registered in
//! the descriptor table and queued on the listener; past a high-water
//! mark the request is cancelled until the next `async_accept`. The CQEs
//! already in flight are still queued (the mark is soft), bounded by the
//! descriptor table: a connection that finds the table full is closed and
//! counted (`Stats::accepts_dropped`). `Builder::multishot_accept(false)`
//! gives one `IORING_OP_ACCEPT` per call, leaving waiting connections in
//! the kernel's listen queue.
//!
//! # Shutdown
//!
//! Parked accepts are handed over for destruction; then
//! `IORING_ASYNC_CANCEL_ANY` and waits until every SQE that expects a CQE
//! has had its final one (user operations, multishot accepts, the
//! interrupter read); only then are the operations destroyed (by the
//! scheduler), the sockets closed and the ring unmapped.

use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use pinion_core::timer::{TimerHandle, TimerQueue, TimerSlot};
use pinion_core::{Error, Here, OpQueue, Operation, Result, Storage, Task, Wait};
use pinion_sync::{FutexKit, FutexMutex, RawMutex};

use crate::bufs::{PooledHdr, ReadBuffers, IORING_CQE_F_BUFFER};
use crate::ring::{Cqe, Rings, Sq, Sqe};
use crate::sys;

/// The scheduler this proactor is the task of.
pub(crate) type Sched = pinion_core::Scheduler<Proactor, FutexKit>;

/// Bits of `user_data` that hold the tag.
pub(crate) const TAG_MASK: u64 = 0xF;
/// `user_data` is a pointer to an [`Operation`] awaiting one CQE.
pub(crate) const TAG_OP: u64 = 0;
/// `user_data >> 4` is a listener's descriptor index: its multishot accept.
pub(crate) const TAG_ACCEPT: u64 = 1;
/// The interrupter's eventfd read.
pub(crate) const UD_INTERRUPT: u64 = 2;
/// A request whose CQE is ignored (cancels).
pub(crate) const UD_IGNORE: u64 = 3;
/// `user_data & !TAG_MASK` is a pooled read ([`PooledHdr`]) awaiting one
/// CQE, whose flags it needs.
pub(crate) const TAG_POOLED: u64 = 4;

/// Accepted connections a listener holds for `async_accept` before its
/// multishot accept is stopped (until the next `async_accept`); the
/// kernel's listen queue holds the rest.
const ACCEPT_HIGH_WATER: usize = 16;

/// Submission attempts a close makes for its cancel before it leaves the
/// teardown to the runner (see `Proactor::submit_through`).
const SUBMIT_TRIES: usize = 1000;

/// Cap on how long shutdown waits for the kernel to give back operations.
const SHUTDOWN_DRAIN_NS: u64 = 10_000_000_000;

/// A `T` behind a futex mutex, reached through a closure.
pub(crate) struct Locked<T> {
    lock: FutexMutex,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached with `lock` held (see `with`).
unsafe impl<T: Send> Sync for Locked<T> {}

struct Unlock<'a>(&'a FutexMutex);
impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        // SAFETY: made right after `lock()` in `with`; unlocks once.
        unsafe { self.0.unlock() }
    }
}

impl<T> Locked<T> {
    pub(crate) fn new(value: T) -> Self {
        Locked {
            lock: FutexMutex::INIT,
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the value, the mutex held (and released on unwind).
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.lock.lock();
        let _u = Unlock(&self.lock);
        // SAFETY: the mutex is held until `_u` drops; closures given to
        // `with` never call `with` on the same value.
        f(unsafe { &mut *self.value.get() })
    }
}

/// Kernel features found at start-up and the Builder's toggles, as used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// Submission queue entries (the kernel rounds up to a power of two).
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// Bytes the ring pins in locked kernel memory: SQ ring, SQE array, CQ
    /// ring, and the provided buffer ring's entries when there is one (the
    /// read buffers themselves are ordinary memory the kernel copies into).
    /// No registered buffers are used, so this is all of it.
    pub pinned_bytes: usize,
    /// Listeners use one multishot accept instead of one SQE per accept.
    pub multishot_accept: bool,
    /// The ring was set up with `IORING_SETUP_SQPOLL`.
    pub sqpoll: bool,
    /// Sockets are registered files (`IORING_REGISTER_FILES`, one slot per
    /// descriptor-table entry) and SQEs name them by index. Off when the
    /// Builder switched it off or the kernel refused the table.
    pub registered_files: bool,
    /// Pooled reads are served by a provided buffer ring
    /// (`IORING_REGISTER_PBUF_RING`): the kernel picks a read buffer only
    /// when data arrives. `false` without read buffers, or when they are a
    /// software pool, where a waiting pooled read holds its buffer
    /// (`Builder::buffer_ring(false)`, more than 32768 buffers, or a
    /// kernel that refused the ring).
    pub buffer_ring: bool,
}

/// Proactor counters (feature `stats`), a plain snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `io_uring_enter` calls made by pinion.
    pub enter_calls: u64,
    /// SQEs queued.
    pub sqes_submitted: u64,
    /// CQEs reaped.
    pub cqes_reaped: u64,
    /// Times a push found the SQ full and submitted to make room.
    pub sq_full_events: u64,
    /// Interrupter (eventfd) writes.
    pub interrupts: u64,
    /// User operations whose completion was handed to the scheduler.
    pub ops_completed: u64,
    /// Connections a listener had to close because the descriptor table
    /// was full.
    pub accepts_dropped: u64,
    /// `io_uring_register` calls that install or remove a registered file
    /// (one when a socket enters the table, one when it leaves).
    pub files_updates: u64,
    /// Pooled reads that ended in `PoolExhausted`: data arrived while the
    /// buffer ring was empty (`ENOBUFS`), or, in the software fallback,
    /// while the pool was.
    pub read_buffers_empty: u64,
}

impl Stats {
    /// System calls the proactor made for the program's I/O:
    /// `io_uring_enter` calls, interrupter (eventfd) writes and registered
    /// file updates. Opening, configuring and closing sockets is not
    /// counted.
    pub fn syscalls(&self) -> u64 {
        self.enter_calls + self.interrupts + self.files_updates
    }
}

#[cfg(feature = "stats")]
#[derive(Default)]
struct StatCells {
    enter_calls: AtomicU64,
    sqes_submitted: AtomicU64,
    cqes_reaped: AtomicU64,
    sq_full_events: AtomicU64,
    interrupts: AtomicU64,
    ops_completed: AtomicU64,
    accepts_dropped: AtomicU64,
    files_updates: AtomicU64,
    read_buffers_empty: AtomicU64,
}

/// Adds to a stats counter; nothing without feature `stats`.
macro_rules! stat {
    ($self:expr, $field:ident) => {
        stat!($self, $field, 1)
    };
    ($self:expr, $field:ident, $n:expr) => {{
        #[cfg(feature = "stats")]
        $self.stats.$field.fetch_add($n as u64, Ordering::Relaxed);
        #[cfg(not(feature = "stats"))]
        let _ = &$n;
    }};
}

/// What the user asked for in the Builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub sq_entries: u32,
    pub cq_entries: Option<u32>,
    pub descriptors: usize,
    pub timers: usize,
    pub multishot_accept: bool,
    pub sqpoll_idle_ms: Option<u32>,
    pub registered_files: bool,
    /// (count, size) of the read pool; no pool when count is 0.
    pub read_buffers: (usize, usize),
    /// Serve the read pool by a provided buffer ring if the kernel takes it.
    pub buffer_ring: bool,
}

/// Why the proactor could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// `io_uring_setup` failed with this errno.
    Setup(i32),
    /// `/proc/sys/kernel/io_uring_disabled` forbids it.
    Disabled(i32),
    /// A kernel feature pinion needs is missing.
    Missing(&'static str),
    /// Another system call failed while setting up.
    Os(Error),
}

/// State touched only by the thread running the task (or by shutdown).
struct RunnerState {
    /// Final CQEs reaped for SQEs counted by `SqState::expected`.
    completed: u64,
    /// The interrupter read completed and must be queued again.
    rearm_interrupter: bool,
    /// The last run left the SQ unsubmitted; the next one must submit.
    deferred: bool,
    shutting_down: bool,
}

/// State guarded by `sq_lock`.
struct SqState {
    /// SQEs queued that post no CQE we wait for (cancels): counting
    /// these, rarely queued, instead of the others spares every
    /// operation an increment.
    no_cqe: u64,
    /// The submission ring (points into `Proactor::rings`).
    sq: Sq,
}

impl SqState {
    /// SQEs queued that will post a final CQE we wait for.
    fn expected(&self) -> u64 {
        self.sq.pushed() - self.no_cqe
    }
}

/// A listener's multishot accept state (under the descriptor's lock).
///
/// Connections the kernel accepted while nobody waited in `async_accept`
/// are registered in the descriptor table at once and queued here, linked
/// through their descriptors' `pending_next`: bounded by the table, never
/// dropped while it has room.
pub(crate) struct ListenerState {
    armed: bool,
    cancel_sent: bool,
    waiters: OpQueue,
    pend_head: u32,
    pend_tail: u32,
    len: usize,
}

impl ListenerState {
    const fn new() -> Self {
        ListenerState {
            armed: false,
            cancel_sent: false,
            waiters: OpQueue::new(),
            pend_head: NIL,
            pend_tail: NIL,
            len: 0,
        }
    }

    fn push_pending(&mut self, slots: &[Desc], idx: u32) {
        slots[idx as usize].pending_next.set(NIL);
        if self.pend_tail == NIL {
            self.pend_head = idx;
        } else {
            slots[self.pend_tail as usize].pending_next.set(idx);
        }
        self.pend_tail = idx;
        self.len += 1;
    }

    /// The oldest pending connection, as (index, generation).
    fn pop_pending(&mut self, slots: &[Desc]) -> Option<(u32, u32)> {
        if self.pend_head == NIL {
            return None;
        }
        let idx = self.pend_head;
        let d = &slots[idx as usize];
        self.pend_head = d.pending_next.get();
        if self.pend_head == NIL {
            self.pend_tail = NIL;
        }
        self.len -= 1;
        Some((idx, d.gen.load(Ordering::Relaxed)))
    }
}

/// A registered descriptor as an operation result: generation and index.
pub(crate) fn pack_desc(idx: u32, gen: u32) -> usize {
    ((gen as u64) << 32 | idx as u64) as usize
}

/// The inverse of [`pack_desc`].
pub(crate) fn unpack_desc(v: usize) -> (u32, u32) {
    (v as u64 as u32, ((v as u64) >> 32) as u32)
}

struct DescState {
    /// A handle may use the socket (from open to `close_desc`).
    open: bool,
    /// After `close_desc`: what the slot still waits for before it may be
    /// reused. One for the teardown (once the kernel has taken the close's
    /// cancel, the registered file is removed and the fd closed), one more
    /// while the listener's multishot accept is still in the kernel (its
    /// final CQE). The last to finish frees the slot.
    holds: u8,
    listener: ListenerState,
}

/// A descriptor key's flag: the low bits are a registered-file index.
const KEY_FIXED: u64 = 1 << 31;
/// A descriptor key's low 31 bits: the fd or the registered-file index.
const KEY_LOW: u64 = 0x7FFF_FFFF;
/// Low bits of the key of a descriptor with no socket open (neither an
/// fd nor an index can be this large).
const KEY_CLOSED: u64 = KEY_LOW;

/// A descriptor key (see [`Desc::key`]).
#[inline]
fn desc_key(gen: u32, low: u64) -> u64 {
    (gen as u64) << 32 | low
}

/// One entry of the descriptor table: a socket's fd and the generation
/// that handles must match.
pub(crate) struct Desc {
    lock: FutexMutex,
    /// Everything starting an operation needs, in one load: the
    /// generation in the high half, then [`KEY_FIXED`] and the fd or
    /// registered-file index (or [`KEY_CLOSED`]). Stored whenever `gen`,
    /// `fd` or `fixed` change while handles may exist, in the same store
    /// that moves the generation on at close, so a stale handle never
    /// matches it.
    key: AtomicU64,
    fd: AtomicI32,
    gen: AtomicU32,
    /// `fd` is installed in the ring's registered-file table at this
    /// slot's index: SQEs name it as `types::Fixed(index)`.
    fixed: AtomicBool,
    /// Free-list link, guarded by the table's lock.
    next_free: Cell<u32>,
    /// Link in a listener's list of accepted connections, guarded by that
    /// listener's lock (nobody else can reach a pending descriptor).
    pending_next: Cell<u32>,
    /// Link in the proactor's list of closes waiting for the kernel, and
    /// the SQ position their cancel must be consumed before; guarded by
    /// that list's lock.
    closing_next: Cell<u32>,
    closing_fence: Cell<u64>,
    st: UnsafeCell<DescState>,
}

impl Desc {
    fn with<R>(&self, f: impl FnOnce(&mut DescState) -> R) -> R {
        self.lock.lock();
        let _u = Unlock(&self.lock);
        // SAFETY: `st` is only reached with `lock` held.
        f(unsafe { &mut *self.st.get() })
    }
}

const NIL: u32 = u32::MAX;

/// How an SQE names a socket: `types::Fixed` (a registered file, by its
/// descriptor-table index) or `types::Fd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Fd(i32),
    Fixed(u32),
}

impl Target {
    /// The SQE's `fd` field and whether it is a registered-file index
    /// (`IOSQE_FIXED_FILE`).
    #[inline(always)]
    pub(crate) fn raw(self) -> (i32, bool) {
        match self {
            Target::Fd(fd) => (fd, false),
            Target::Fixed(i) => (i as i32, true),
        }
    }
}

/// Builds an SQE for a [`Target`]: `$body` sees `$t` as `types::Fixed` or
/// `types::Fd` (io-uring's target trait is sealed, so it cannot be named).
macro_rules! with_target {
    ($target:expr, |$t:ident| $body:expr) => {
        match $target {
            $crate::proactor::Target::Fixed(i) => {
                let $t = io_uring::types::Fixed(i);
                $body
            }
            $crate::proactor::Target::Fd(fd) => {
                let $t = io_uring::types::Fd(fd);
                $body
            }
        }
    };
}
pub(crate) use with_target;

/// The fixed table of open sockets.
pub(crate) struct DescTable {
    slots: Box<[Desc]>,
    /// (free-list head, never-used bump index).
    alloc: Locked<(u32, u32)>,
}

impl DescTable {
    fn new(n: usize) -> Self {
        // Indices fit the key's 31 bits (and an SQE's i32 fd field).
        let n = n.min(KEY_CLOSED as usize - 1);
        let slots = (0..n)
            .map(|_| Desc {
                lock: FutexMutex::INIT,
                key: AtomicU64::new(desc_key(0, KEY_CLOSED)),
                fd: AtomicI32::new(-1),
                gen: AtomicU32::new(0),
                fixed: AtomicBool::new(false),
                next_free: Cell::new(NIL),
                pending_next: Cell::new(NIL),
                closing_next: Cell::new(NIL),
                closing_fence: Cell::new(0),
                st: UnsafeCell::new(DescState {
                    open: false,
                    holds: 0,
                    listener: ListenerState::new(),
                }),
            })
            .collect();
        DescTable {
            slots,
            alloc: Locked::new((NIL, 0)),
        }
    }

    /// Registers `fd`; `PoolExhausted` when every slot is in use (the
    /// caller still owns `fd` then).
    pub(crate) fn open(&self, fd: i32) -> Result<(u32, u32)> {
        let n = self.slots.len() as u32;
        let slots = &self.slots;
        let idx = self.alloc.with(|(free, bump)| {
            if *free != NIL {
                let i = *free;
                *free = slots[i as usize].next_free.get();
                Some(i)
            } else if *bump < n {
                *bump += 1;
                Some(*bump - 1)
            } else {
                None
            }
        });
        let idx = idx.ok_or(Error::PoolExhausted)?;
        let d = &self.slots[idx as usize];
        let gen = d.with(|st| {
            st.open = true;
            st.holds = 0;
            d.fd.store(fd, Ordering::Release);
            let gen = d.gen.load(Ordering::Relaxed);
            d.key
                .store(desc_key(gen, fd as u32 as u64 & KEY_LOW), Ordering::Release);
            gen
        });
        Ok((idx, gen))
    }

    fn release(&self, idx: u32) {
        let slots = &self.slots;
        self.alloc.with(|(free, _)| {
            slots[idx as usize].next_free.set(*free);
            *free = idx;
        });
    }

    /// Closes a descriptor no operation ever used (a pending accepted
    /// connection) and frees its slot.
    fn close_unused(&self, idx: u32) {
        let d = &self.slots[idx as usize];
        let fd = d.with(|st| {
            st.open = false;
            let gen = d.gen.load(Ordering::Relaxed).wrapping_add(1);
            d.gen.store(gen, Ordering::Release);
            d.key.store(desc_key(gen, KEY_CLOSED), Ordering::Release);
            d.fd.swap(-1, Ordering::AcqRel)
        });
        if fd >= 0 {
            sys::close(fd);
        }
        self.release(idx);
    }

    /// Runs `f` on the fd of a live handle, under the descriptor's lock:
    /// `close_desc` moves the generation on under the same lock, so the
    /// fd cannot be closed (and its number reused) while `f` runs.
    pub(crate) fn with_fd<R>(
        &self,
        idx: u32,
        gen: u32,
        f: impl FnOnce(i32) -> Result<R>,
    ) -> Result<R> {
        let d = self.slots.get(idx as usize).ok_or(Error::BadDescriptor)?;
        d.with(|st| {
            if !st.open || d.gen.load(Ordering::Relaxed) != gen {
                return Err(Error::BadDescriptor);
            }
            f(d.fd.load(Ordering::Relaxed))
        })
    }

    /// `Ok` while the handle is current: a check for paths that queue no
    /// SQE (an SQE's own check is [`Proactor::push_sqe_on`]'s).
    #[inline]
    pub(crate) fn check(&self, idx: u32, gen: u32) -> Result<()> {
        self.target(idx, gen).map(drop)
    }

    /// How SQEs name the socket of a live handle: its registered-file
    /// index, or its fd.
    #[inline]
    pub(crate) fn target(&self, idx: u32, gen: u32) -> Result<Target> {
        let d = self.slots.get(idx as usize).ok_or(Error::BadDescriptor)?;
        Self::target_of(d, gen)
    }

    /// [`target`](Self::target) without the bounds check, for a socket
    /// handle's own index (every initiation checks its handle).
    ///
    /// # Safety
    /// `idx` was handed out by this table's [`open`](Self::open), as every
    /// handle's index is, so it is below the table's fixed length.
    #[inline(always)]
    pub(crate) unsafe fn handle_target(&self, idx: u32, gen: u32) -> Result<Target> {
        debug_assert!((idx as usize) < self.slots.len());
        // SAFETY: in bounds, per contract.
        Self::target_of(unsafe { self.slots.get_unchecked(idx as usize) }, gen)
    }

    #[inline(always)]
    fn target_of(d: &Desc, gen: u32) -> Result<Target> {
        // One load: a matching generation means the socket is open (close
        // moves the generation on in the store that marks the key closed).
        let key = d.key.load(Ordering::Acquire);
        if (key >> 32) as u32 != gen {
            return Err(Error::BadDescriptor);
        }
        debug_assert_ne!(key & KEY_LOW, KEY_CLOSED);
        let low = (key & KEY_LOW) as u32;
        Ok(if key & KEY_FIXED != 0 {
            Target::Fixed(low)
        } else {
            Target::Fd(low as i32)
        })
    }

    /// Slots in use (for tests).
    pub(crate) fn in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|d| d.fd.load(Ordering::Relaxed) >= 0)
            .count()
    }
}

/// One timer object (`SteadyTimer`): its expiry and its pending waits.
struct TimerObj {
    gen: u32,
    live: bool,
    expiry: u64,
    head: *mut WaitHdr,
    tail: *mut WaitHdr,
    next_free: u32,
}

/// The start of every timer-wait operation: the header, then its links in
/// its timer's list of waits and its entry in the deadline queue.
#[repr(C)]
pub(crate) struct WaitHdr {
    pub(crate) op: Operation,
    prev: *mut WaitHdr,
    next: *mut WaitHdr,
    handle: Option<TimerHandle>,
    obj: u32,
}

impl WaitHdr {
    pub(crate) fn new(op: Operation) -> Self {
        WaitHdr {
            op,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
            handle: None,
            obj: NIL,
        }
    }
}

struct TimerState {
    queue: TimerQueue,
    objs: Box<[TimerObj]>,
    free: u32,
    bump: u32,
}

// SAFETY: the raw pointers name waits owned by this state (under its
// mutex); operations travel between threads like the scheduler's.
unsafe impl Send for TimerState {}

impl TimerState {
    fn obj(&mut self, idx: u32, gen: u32) -> Option<&mut TimerObj> {
        self.objs
            .get_mut(idx as usize)
            .filter(|o| o.live && o.gen == gen)
    }

    /// Takes `w` out of its timer's list.
    ///
    /// # Safety
    /// `w` is a live wait on the list of timer `w.obj`.
    unsafe fn unlink(&mut self, w: *mut WaitHdr) {
        // SAFETY: per contract; neighbours are live waits on the same list.
        unsafe {
            let (prev, next) = ((*w).prev, (*w).next);
            let o = &mut self.objs[(*w).obj as usize];
            if prev.is_null() {
                o.head = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                o.tail = prev;
            } else {
                (*next).prev = prev;
            }
            (*w).prev = ptr::null_mut();
            (*w).next = ptr::null_mut();
            (*w).handle = None;
        }
    }

    /// Cancels every wait of `obj`, appending them to `out` with
    /// `OperationAborted`. Returns how many.
    fn cancel_all(&mut self, idx: u32, out: &mut OpQueue) -> usize {
        let mut n = 0;
        loop {
            let w = self.objs[idx as usize].head;
            if w.is_null() {
                return n;
            }
            // SAFETY: `w` heads the list, so it is a live wait on it; its
            // handle names its queue entry.
            unsafe {
                let h = (*w).handle.expect("a listed wait is queued");
                self.unlink(w);
                let op = self.queue.cancel(h).expect("a listed wait is queued");
                op.as_ref().set_result(Err(Error::OperationAborted));
                out.push(op);
            }
            n += 1;
        }
    }
}

/// The io_uring proactor: the scheduler's task.
pub struct Proactor {
    ring: IoUring,
    /// The read pool (pooled reads). After `ring`: dropped after the ring,
    /// whose buffer ring points into it.
    read_bufs: Option<ReadBuffers>,
    /// Our mappings of the ring and the CQ view; the SQ view is in
    /// `sq_state`.
    rings: Rings,
    sq_lock: FutexMutex,
    sq_state: UnsafeCell<SqState>,
    /// A thread is (about to be) blocked in `io_uring_enter`; a push
    /// interrupts it. Set under `sq_lock`, together with making the SQ
    /// look full, so only a push's slow path needs to look at it.
    waiting: AtomicBool,
    runner: UnsafeCell<RunnerState>,
    efd: i32,
    /// The interrupter read's target: kernel-visible, so boxed (stable
    /// while the context moves).
    efd_buf: Box<UnsafeCell<u64>>,
    timers: Locked<TimerState>,
    /// Earliest timer deadline, `u64::MAX` when none (a lock-free peek).
    next_timer: AtomicU64,
    /// Deadline the blocked runner sleeps until; 0 when nobody blocks.
    blocked_until: AtomicU64,
    pub(crate) descs: DescTable,
    /// Closes whose cancel the kernel has not consumed yet: (head, tail)
    /// of a list through `Desc::closing_next`.
    closing: Locked<(u32, u32)>,
    /// `closing` is not empty (a lock-free peek for the runner).
    closes_pending: AtomicBool,
    info: RingInfo,
    #[cfg(feature = "stats")]
    stats: StatCells,
}

// SAFETY: the SQ and `sq_state` are touched only under `sq_lock`; the CQ
// and `runner` only by the one thread running the task (the `Task`
// contract) or by shutdown, when no thread runs; descriptor and timer
// state are behind their own mutexes; the rest is atomics or immutable.
unsafe impl Sync for Proactor {}
// SAFETY: as above; every field is owned.
unsafe impl Send for Proactor {}

/// Stores a negative CQE result as the error, out of the reaping loop.
#[cold]
#[inline(never)]
fn set_errno_result(op: &Operation, res: i32) {
    op.set_result(Err(Error::from_errno(-res)))
}

fn to_result(res: i32) -> Result<usize> {
    if res >= 0 {
        Ok(res as usize)
    } else {
        Err(Error::from_errno(-res))
    }
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Reads `/proc/sys/kernel/io_uring_disabled` (0 when absent).
fn io_uring_disabled() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Proactor {
    /// Sets up the ring, the interrupter, the descriptor table and the
    /// timer queue: every allocation this backend makes, made here.
    pub(crate) fn new(cfg: &Config) -> core::result::Result<Self, SetupError> {
        let setup = |sqpoll: Option<u32>, submit_all: bool| {
            let mut b = IoUring::builder();
            b.dontfork();
            if let Some(cq) = cfg.cq_entries {
                b.setup_cqsize(cq.max(cfg.sq_entries));
            }
            if submit_all {
                b.setup_submit_all();
            }
            if let Some(idle) = sqpoll {
                b.setup_sqpoll(idle);
            }
            b.build(cfg.sq_entries.max(1))
        };
        let ring = match setup(cfg.sqpoll_idle_ms, true) {
            Ok(r) => r,
            Err(e) => {
                let errno = io_errno(&e);
                if errno == libc::ENOSYS || errno == libc::EPERM {
                    let disabled = io_uring_disabled();
                    return Err(if disabled != 0 {
                        SetupError::Disabled(disabled as i32)
                    } else {
                        SetupError::Setup(errno)
                    });
                }
                // Older kernels refuse SUBMIT_ALL (5.18) or unprivileged
                // SQPOLL: fall back to the plain ring.
                setup(None, false).map_err(|e| SetupError::Setup(io_errno(&e)))?
            }
        };
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(SetupError::Missing(
                "IORING_FEAT_EXT_ARG (Linux 5.11) for timed waits",
            ));
        }
        if !params.is_feature_nodrop() {
            return Err(SetupError::Missing(
                "IORING_FEAT_NODROP (Linux 5.5): completions could be lost",
            ));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| SetupError::Setup(io_errno(&e)))?;
        for (code, what) in [
            (opcode::Recv::CODE, "IORING_OP_RECV"),
            (opcode::Send::CODE, "IORING_OP_SEND"),
            (opcode::Accept::CODE, "IORING_OP_ACCEPT"),
            (opcode::Connect::CODE, "IORING_OP_CONNECT"),
            (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
            (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG"),
            (opcode::Read::CODE, "IORING_OP_READ"),
            (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(SetupError::Missing(what));
            }
        }
        // Cancel by fd and cancel-any (5.19) arrived with IORING_OP_SOCKET,
        // and so did multishot accept: the opcode is their marker.
        if !probe.is_supported(opcode::Socket::CODE) {
            return Err(SetupError::Missing(
                "Linux 5.19 io_uring (cancel by fd, IORING_OP_SOCKET)",
            ));
        }
        let sq_entries = params.sq_entries();
        let cq_entries = params.cq_entries();
        let sqe_bytes = sq_entries as usize * 64;
        // Ring headers are well under a page; count one page for each ring.
        let sq_ring = 4096 + sq_entries as usize * 4;
        let cq_ring = 4096 + cq_entries as usize * 16;
        // One registered-file slot per descriptor-table entry, all empty
        // (sparse, Linux 5.19). Any refusal (EINVAL/ENOSYS on kernels
        // without it, ENOMEM, EMFILE past RLIMIT_NOFILE) leaves plain fds.
        let descriptors = cfg.descriptors.min(NIL as usize - 1);
        let registered_files = cfg.registered_files
            && descriptors > 0
            && ring
                .submitter()
                .register_files_sparse(descriptors as u32)
                .is_ok();
        let (rings, sq) =
            Rings::map(&ring).map_err(|e| SetupError::Os(Error::from_errno(io_errno(&e))))?;
        let efd = sys::eventfd().map_err(SetupError::Os)?;
        // The read pool, ring registration probed here: a kernel that
        // refuses it gets the software pool (see `bufs`).
        let (count, size) = cfg.read_buffers;
        let read_bufs = if count > 0 {
            let b = ReadBuffers::new(&ring, count, size, cfg.buffer_ring).inspect_err(|_| {
                sys::close(efd);
            });
            Some(b.map_err(SetupError::Os)?)
        } else {
            None
        };
        let info = RingInfo {
            sq_entries,
            cq_entries,
            pinned_bytes: sqe_bytes
                + sq_ring
                + cq_ring
                + read_bufs.as_ref().map_or(0, ReadBuffers::pinned_bytes),
            multishot_accept: cfg.multishot_accept,
            sqpoll: params.is_setup_sqpoll(),
            registered_files,
            buffer_ring: read_bufs.as_ref().is_some_and(ReadBuffers::is_ring),
        };
        let timers = cfg.timers.max(1);
        let p = Proactor {
            ring,
            read_bufs,
            rings,
            sq_lock: FutexMutex::INIT,
            sq_state: UnsafeCell::new(SqState { no_cqe: 0, sq }),
            waiting: AtomicBool::new(false),
            runner: UnsafeCell::new(RunnerState {
                completed: 0,
                rearm_interrupter: false,
                deferred: false,
                shutting_down: false,
            }),
            efd,
            efd_buf: Box::new(UnsafeCell::new(0)),
            timers: Locked::new(TimerState {
                queue: TimerQueue::new(Storage::boxed_with(timers, || TimerSlot::EMPTY)),
                objs: (0..timers)
                    .map(|_| TimerObj {
                        gen: 0,
                        live: false,
                        expiry: 0,
                        head: ptr::null_mut(),
                        tail: ptr::null_mut(),
                        next_free: NIL,
                    })
                    .collect(),
                free: NIL,
                bump: 0,
            }),
            next_timer: AtomicU64::new(u64::MAX),
            blocked_until: AtomicU64::new(0),
            descs: DescTable::new(cfg.descriptors),
            closing: Locked::new((NIL, NIL)),
            closes_pending: AtomicBool::new(false),
            info,
            #[cfg(feature = "stats")]
            stats: StatCells::default(),
        };
        p.arm_interrupter();
        Ok(p)
    }

    /// What the ring looks like (sizes, pinned memory, features in use).
    pub fn ring_info(&self) -> RingInfo {
        self.info
    }

    /// A snapshot of the counters.
    #[cfg(feature = "stats")]
    pub fn stats(&self) -> Stats {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            enter_calls: l(&s.enter_calls),
            sqes_submitted: l(&s.sqes_submitted),
            cqes_reaped: l(&s.cqes_reaped),
            sq_full_events: l(&s.sq_full_events),
            interrupts: l(&s.interrupts),
            ops_completed: l(&s.ops_completed),
            accepts_dropped: l(&s.accepts_dropped),
            files_updates: l(&s.files_updates),
            read_buffers_empty: l(&s.read_buffers_empty),
        }
    }

    /// The read pool, if the context has one.
    #[inline]
    pub(crate) fn read_pool(&self) -> Option<&ReadBuffers> {
        self.read_bufs.as_ref()
    }

    /// Counts a pooled read that found no buffer (`Stats`).
    #[inline]
    pub(crate) fn note_read_buffers_empty(&self) {
        stat!(self, read_buffers_empty);
    }

    // ---- submission ----------------------------------------------------

    /// Queues one SQE that names no socket (the proactor's own requests).
    /// `expects_cqe`: the SQE will post a final CQE that shutdown must
    /// wait for (every user operation and internal request; not cancels,
    /// whose CQEs are ignored).
    ///
    /// A full SQ is submitted to make room, then the push is retried:
    /// back-pressure, never an error. If a thread is blocked in
    /// `io_uring_enter`, it is interrupted so that it submits.
    ///
    /// # Safety
    /// The buffer-lifetime rule (io-uring's `SubmissionQueue::push`):
    /// every pointer `sqe` carries (buffer, address, `msghdr`, and the
    /// operation its `user_data` names) stays valid, unmoved and unfreed
    /// until the kernel has posted the SQE's final CQE and the reaper has
    /// handed it on. Operations keep it by pointing only into their own
    /// slot, which is freed only by their complete function.
    #[inline]
    pub(crate) unsafe fn push(&self, sqe: &squeue::Entry, expects_cqe: bool) {
        let e = Sqe::from_entry(sqe.clone());
        // SAFETY: forwarded.
        unsafe { self.push_with(expects_cqe, |sq| sq.push(&e)) }
    }

    /// The body of every push: `write` puts the entry at the tail.
    ///
    /// # Safety
    /// `write` is a push (`Sq::push` or `Sq::push_lean`) of an SQE that
    /// keeps [`push`](Self::push)'s rule; it is called with room in the SQ.
    #[inline(always)]
    unsafe fn push_with(&self, expects_cqe: bool, write: impl FnOnce(&mut Sq)) {
        self.sq_lock.lock();
        let _u = Unlock(&self.sq_lock);
        // SAFETY: `sq_state` is only touched under `sq_lock`, held until
        // `_u` drops: this is the only reference.
        let st = unsafe { &mut *self.sq_state.get() };
        // SAFETY: forwarded.
        unsafe { self.push_locked(st, expects_cqe, write) }
    }

    /// [`push_with`](Self::push_with) with `sq_lock` already held.
    ///
    /// # Safety
    /// As for `push_with`; `st` is the SQ state, reached under `sq_lock`.
    #[inline(always)]
    unsafe fn push_locked(&self, st: &mut SqState, expects_cqe: bool, write: impl FnOnce(&mut Sq)) {
        if st.sq.looks_full() {
            self.push_slow(&mut st.sq);
        }
        // There is room; the entry's pointers stay valid per the callers'
        // contract. The tail is published before the lock drops.
        write(&mut st.sq);
        if !expects_cqe {
            st.no_cqe += 1;
        }
        stat!(self, sqes_submitted);
    }

    /// Queues the SQE `make` builds for the socket that handle `(idx,
    /// gen)` names, or refuses with `BadDescriptor` if the handle is
    /// stale. The handle is checked and the SQE written in one stretch
    /// under `sq_lock`, the lock under which [`close_desc`](Self::close_desc)
    /// moves the generation on and queues its cancel: an SQE pushed here
    /// is either refused or ahead of that cancel in the SQ, and the close
    /// tears the socket down (registered file, fd, slot) only once the
    /// kernel has taken every SQE up to its cancel. So an operation never
    /// reaches the socket that reuses the slot, index or fd number.
    /// `started` runs once the handle passed, before the SQE is visible
    /// (where an operation counts its work: it cannot complete earlier).
    ///
    /// # Safety
    /// [`push`](Self::push)'s rule for the SQE `make` returns, which is
    /// lean ([`Sqe::is_lean`], as one made by `Sqe::new` for `RECV`/`SEND`
    /// is): only the fields such SQEs use are written. `idx` came from
    /// this table (every handle's does).
    #[inline(always)]
    pub(crate) unsafe fn push_sqe_on(
        &self,
        idx: u32,
        gen: u32,
        started: impl FnOnce(),
        make: impl FnOnce(Target) -> Sqe,
    ) -> Result<()> {
        // SAFETY: forwarded; `make`'s SQE is lean per contract.
        unsafe {
            self.push_checked(idx, gen, true, started, |sq, t| {
                let e = make(t);
                debug_assert!(e.is_lean());
                sq.push_lean(&e)
            })
        }
    }

    /// [`push_sqe_on`](Self::push_sqe_on) for an SQE from io-uring's
    /// opcode builders. `expects_cqe` as for [`push`](Self::push).
    ///
    /// # Safety
    /// As for `push_sqe_on`, without the leanness.
    #[inline]
    pub(crate) unsafe fn push_on(
        &self,
        idx: u32,
        gen: u32,
        expects_cqe: bool,
        started: impl FnOnce(),
        make: impl FnOnce(Target) -> squeue::Entry,
    ) -> Result<()> {
        // SAFETY: forwarded.
        unsafe {
            self.push_checked(idx, gen, expects_cqe, started, |sq, t| {
                sq.push(&Sqe::from_entry(make(t)))
            })
        }
    }

    /// The body of the checked pushes.
    ///
    /// # Safety
    /// As for [`push_with`](Self::push_with); `idx` came from this table.
    #[inline(always)]
    unsafe fn push_checked(
        &self,
        idx: u32,
        gen: u32,
        expects_cqe: bool,
        started: impl FnOnce(),
        write: impl FnOnce(&mut Sq, Target),
    ) -> Result<()> {
        self.sq_lock.lock();
        let _u = Unlock(&self.sq_lock);
        // SAFETY: `idx` came from the table (contract).
        let target = unsafe { self.descs.handle_target(idx, gen) }?;
        started();
        // SAFETY: `sq_state` is only touched under `sq_lock`, held until
        // `_u` drops; the rest is forwarded.
        unsafe {
            let st = &mut *self.sq_state.get();
            self.push_locked(st, expects_cqe, |sq| write(sq, target));
        }
        Ok(())
    }

    /// A push found the SQ full by the last head read, or made to look
    /// full by a thread about to block (`Task::run`): interrupt that
    /// thread if it still waits, then make room. Called with `sq_lock`
    /// held; the lock is kept until the entry is published, so the woken
    /// thread sees it before it can wait again.
    #[cold]
    #[inline(never)]
    fn push_slow(&self, sq: &mut Sq) {
        if self.waiting.load(Ordering::Relaxed) {
            self.wake_waiter();
        }
        if !sq.sync_head() {
            self.make_room(sq);
        }
    }

    /// A thread is blocked in `io_uring_enter` with SQEs it has not seen:
    /// interrupt it (once per wait) so that it submits them. Called with
    /// `sq_lock` held.
    #[cold]
    #[inline(never)]
    fn wake_waiter(&self) {
        self.waiting.store(false, Ordering::Relaxed);
        stat!(self, interrupts);
        sys::eventfd_signal(self.efd);
    }

    /// The SQ is full even by the kernel's latest head: submit until it
    /// is not. Called with `sq_lock` held.
    #[cold]
    #[inline(never)]
    fn make_room(&self, sq: &mut Sq) {
        loop {
            stat!(self, sq_full_events);
            self.submit_for_room();
            if sq.sync_head() {
                return;
            }
        }
    }

    /// Runs `f` with the SQ state under `sq_lock`.
    #[inline]
    fn with_sq<R>(&self, f: impl FnOnce(&mut SqState) -> R) -> R {
        self.sq_lock.lock();
        let _u = Unlock(&self.sq_lock);
        // SAFETY: `sq_state` is only touched under `sq_lock`, held.
        f(unsafe { &mut *self.sq_state.get() })
    }

    /// The SQ is full: have the kernel consume it. Called with `sq_lock`
    /// held. Only fails to make room on kernels that refuse submission
    /// while completions overflow (before 5.19-ish, `EBUSY`); then waits
    /// for the runner to reap, briefly sleeping.
    fn submit_for_room(&self) {
        stat!(self, enter_calls);
        match self.ring.submitter().submit() {
            Ok(_) => {}
            Err(e) if io_errno(&e) == libc::EINTR => {}
            Err(_) => {
                sys::eventfd_signal(self.efd);
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// Queues the interrupter's read of its eventfd.
    fn arm_interrupter(&self) {
        let e = opcode::Read::new(types::Fd(self.efd), self.efd_buf.get() as *mut u8, 8)
            .build()
            .user_data(UD_INTERRUPT);
        // SAFETY: `efd_buf` is boxed, lives as long as the proactor, and
        // the ring is dropped (after every CQE was reaped in shutdown)
        // before it is.
        unsafe { self.push(&e, true) };
    }

    // ---- completion ----------------------------------------------------

    /// Reaps every CQE, handing completed operations to `ops`. Runner
    /// only. Returns how many CQEs were reaped.
    #[inline(always)]
    fn reap(&self, rs: &mut RunnerState, ops: &mut OpQueue) -> usize {
        // SAFETY: runner only (as `reap_some`).
        if unsafe { self.rings.cq.head() } == self.rings.cq.tail() {
            // An empty CQ (often, before the wait) costs no call.
            return 0;
        }
        self.reap_some(rs, ops)
    }

    /// [`reap`](Self::reap) when the CQ holds something.
    #[inline(never)]
    fn reap_some(&self, rs: &mut RunnerState, ops: &mut OpQueue) -> usize {
        let cq = &self.rings.cq;
        let entries = cq.entries();
        // Completed operations gather here (in registers) and join `ops`
        // in one splice, in CQ order.
        let mut local = OpQueue::new();
        let mut internal = 0usize;
        let mut n = 0usize;
        // SAFETY: only the thread running the task (one at a time) or
        // shutdown reaps; each entry is read, through a pointer inside the
        // stretch `run` gave, before the head passes it.
        unsafe {
            let mut head = cq.head();
            loop {
                let tail = cq.tail();
                if head == tail {
                    break;
                }
                n += tail.wrapping_sub(head) as usize;
                while head != tail {
                    // One stretch of the array at a time (two when the
                    // published entries wrap), walked by pointer.
                    let (mut p, len) = entries.run(head, tail);
                    head = head.wrapping_add(len);
                    let end = p.add(len as usize);
                    while p != end {
                        let cqe = *p;
                        p = p.add(1);
                        if cqe.user_data & TAG_MASK == TAG_OP {
                            let op = cqe.user_data as *mut Operation;
                            // SAFETY: a TAG_OP user_data is a live operation
                            // that waits for exactly this CQE and is on no
                            // queue (push's contract).
                            if cqe.res >= 0 {
                                (*op).set_result(Ok(cqe.res as usize));
                            } else {
                                set_errno_result(&*op, cqe.res);
                            }
                            local.push(NonNull::new_unchecked(op));
                        } else if cqe.user_data & TAG_MASK == TAG_POOLED {
                            // SAFETY: as for TAG_OP, the op being a pooled read.
                            local.push(self.pooled_cqe(cqe));
                        } else {
                            internal += 1;
                            // Keep CQ order: what came before goes first.
                            ops.push_queue(&mut local);
                            self.dispatch_internal(rs, cqe.user_data, cqe.res, cqe.flags, ops);
                        }
                    }
                }
                cq.set_head(head);
            }
        }
        ops.push_queue(&mut local);
        let done = (n - internal) as u64;
        rs.completed += done;
        stat!(self, ops_completed, done);
        stat!(self, cqes_reaped, n);
        n
    }

    /// A pooled read's CQE: its result, and its flags (the buffer the
    /// kernel picked, now out of the ring and owned by the operation).
    ///
    /// # Safety
    /// `cqe.user_data` is a `TAG_POOLED` pooled read that waits for
    /// exactly this CQE and is on no queue (push's contract).
    #[inline]
    unsafe fn pooled_cqe(&self, cqe: Cqe) -> NonNull<Operation> {
        let op = (cqe.user_data & !TAG_MASK) as *mut PooledHdr;
        // SAFETY: per contract, `op` is live and ours until queued.
        unsafe {
            if cqe.res >= 0 {
                (*op).op.set_result(Ok(cqe.res as usize));
            } else {
                set_errno_result(&(*op).op, cqe.res);
            }
            (*op).cqe_flags.set(cqe.flags);
        }
        if cqe.flags & IORING_CQE_F_BUFFER != 0 {
            if let Some(b) = &self.read_bufs {
                b.picked_by_kernel();
            }
        }
        // SAFETY: `op` came from a non-null user_data.
        unsafe { NonNull::new_unchecked(op.cast()) }
    }

    /// A CQE of one of the proactor's own requests (rare: cold, so the
    /// reaping loop tests for a user operation first).
    #[cold]
    #[inline(never)]
    fn dispatch_internal(
        &self,
        rs: &mut RunnerState,
        ud: u64,
        res: i32,
        flags: u32,
        ops: &mut OpQueue,
    ) {
        match ud & TAG_MASK {
            TAG_ACCEPT => {
                let more = cqueue::more(flags);
                if !more {
                    rs.completed += 1;
                }
                self.on_accept((ud >> 4) as u32, res, more, rs.shutting_down, ops);
            }
            UD_INTERRUPT => {
                rs.completed += 1;
                rs.rearm_interrupter = !rs.shutting_down;
            }
            _ => {}
        }
    }

    // ---- multishot accept ----------------------------------------------

    /// Arms listener `idx`'s multishot accept. Called under the
    /// listener's lock with the socket open, so no close can come between
    /// (`close_desc` needs that lock to move the generation on).
    fn arm_accept(&self, idx: u32, gen: u32) {
        // SAFETY: a multishot accept carries no pointer; its descriptor
        // slot is not reused before its final CQE (`DescState::holds`);
        // `idx` is a table index.
        let armed = unsafe {
            self.push_on(
                idx,
                gen,
                true,
                || {},
                |t| {
                    with_target!(t, |t| opcode::AcceptMulti::new(t)
                        .flags(libc::SOCK_CLOEXEC)
                        .build())
                    .user_data(((idx as u64) << 4) | TAG_ACCEPT)
                },
            )
        };
        debug_assert!(armed.is_ok(), "an open listener refused its accept");
    }

    /// One CQE of a listener's multishot accept. An accepted connection
    /// is registered in the descriptor table here, then handed to the
    /// oldest waiting `async_accept` (result: [`pack_desc`]) or queued on
    /// the listener.
    fn on_accept(&self, idx: u32, res: i32, more: bool, shutting_down: bool, ops: &mut OpQueue) {
        let d = &self.descs.slots[idx as usize];
        let mut close_fd = -1;
        let free = d.with(|st| {
            let ls = &mut st.listener;
            if !more {
                ls.armed = false;
                ls.cancel_sent = false;
            }
            let outcome = if res >= 0 {
                if !st.open {
                    close_fd = res;
                    None
                } else {
                    match self.open_desc(res) {
                        Ok((i, g)) => Some(Ok(pack_desc(i, g))),
                        Err(e) => {
                            stat!(self, accepts_dropped);
                            close_fd = res;
                            Some(Err(e))
                        }
                    }
                }
            } else if res != -libc::ECANCELED && st.open {
                Some(to_result(res))
            } else {
                None
            };
            match (outcome, ls.waiters.pop()) {
                (Some(r), Some(w)) => {
                    // SAFETY: waiters are live accept ops, their work
                    // counted, now off the list.
                    unsafe {
                        w.as_ref().set_result(r);
                        ops.push(w);
                    }
                }
                (Some(Ok(v)), None) => ls.push_pending(&self.descs.slots, unpack_desc(v).0),
                // An error with nobody waiting: the next accept re-arms
                // and meets the condition again if it persists.
                (_, Some(w)) => {
                    // SAFETY: `w` was popped just above and is live.
                    unsafe { ls.waiters.push_front(w) }
                }
                _ => {}
            }
            if more
                && ls.armed
                && ls.waiters.is_empty()
                && ls.len >= ACCEPT_HIGH_WATER
                && !ls.cancel_sent
            {
                ls.cancel_sent = true;
                let e = opcode::AsyncCancel::new(((idx as u64) << 4) | TAG_ACCEPT)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(UD_IGNORE);
                // SAFETY: a cancel carries no pointer.
                unsafe { self.push(&e, false) };
            }
            if !more && !st.open {
                // Closed while armed: the close counted this CQE as a hold.
                debug_assert!(st.holds > 0);
                st.holds -= 1;
                return st.holds == 0;
            }
            if !more && st.open && !shutting_down && !ls.waiters.is_empty() {
                ls.armed = true;
                self.arm_accept(idx, d.gen.load(Ordering::Relaxed));
            }
            false
        });
        if close_fd >= 0 {
            sys::close(close_fd);
        }
        if free {
            self.descs.release(idx);
        }
    }

    /// Queues a user accept operation on listener `idx`: completed from
    /// the listener's accepted connections if one waits, else parked until
    /// the multishot accept delivers one (armed if it is not). A stale
    /// handle is `BadDescriptor`, the op untouched and still the caller's.
    ///
    /// # Safety
    /// `op` is a live accept operation on no queue; its result slot is
    /// set before it is handed to the scheduler. `here` came from `sched`.
    pub(crate) unsafe fn accept_multishot(
        &self,
        sched: &Sched,
        here: Option<Here<'_>>,
        idx: u32,
        gen: u32,
        op: NonNull<Operation>,
    ) -> Result<()> {
        let d = self
            .descs
            .slots
            .get(idx as usize)
            .ok_or(Error::BadDescriptor)?;
        let ready = d.with(|st| {
            if !st.open || d.gen.load(Ordering::Relaxed) != gen {
                return Err(Error::BadDescriptor);
            }
            // SAFETY: `here` came from `sched` (contract).
            unsafe { sched.compensating_work_started_in(here) };
            let ls = &mut st.listener;
            if let Some((i, g)) = ls.pop_pending(&self.descs.slots) {
                return Ok(Some(pack_desc(i, g)));
            }
            // SAFETY: per contract.
            unsafe { ls.waiters.push(op) };
            if !ls.armed {
                ls.armed = true;
                ls.cancel_sent = false;
                self.arm_accept(idx, gen);
            }
            Ok(None)
        })?;
        if let Some(v) = ready {
            // SAFETY: per contract; the op is on no queue, its work counted.
            unsafe {
                op.as_ref().set_result(Ok(v));
                sched.post_deferred_completion(op);
            }
        }
        Ok(())
    }

    // ---- descriptors ---------------------------------------------------

    /// Puts `fd` in the descriptor table and, with registered files on,
    /// installs it in the ring's file table at the same index (one
    /// `io_uring_register`). If the kernel refuses that one update, the
    /// socket simply keeps being named by fd. `PoolExhausted` when the
    /// table is full (the caller still owns `fd` then).
    pub(crate) fn open_desc(&self, fd: i32) -> Result<(u32, u32)> {
        let (idx, gen) = self.descs.open(fd)?;
        if self.info.registered_files {
            stat!(self, files_updates);
            let ok = matches!(
                self.ring.submitter().register_files_update(idx, &[fd]),
                Ok(1)
            );
            let d = &self.descs.slots[idx as usize];
            d.fixed.store(ok, Ordering::Release);
            if ok {
                // Not handed out yet: nobody reads the key meanwhile.
                d.key
                    .store(desc_key(gen, KEY_FIXED | idx as u64), Ordering::Release);
            }
        }
        Ok((idx, gen))
    }

    /// Empties registered-file slot `idx` if it holds a file. Called
    /// once no SQE can name the index any more and before the slot is
    /// freed, so the index is never reused while the old file sits in it.
    fn unregister_file(&self, idx: u32) {
        if self.descs.slots[idx as usize]
            .fixed
            .swap(false, Ordering::AcqRel)
        {
            stat!(self, files_updates);
            let _ = self.ring.submitter().register_files_update(idx, &[-1]);
        }
    }

    /// How SQEs name the socket in slot `idx` (its registered file, or
    /// its fd while the slot holds one).
    fn slot_target(&self, idx: u32) -> Target {
        let d = &self.descs.slots[idx as usize];
        if d.fixed.load(Ordering::Acquire) {
            Target::Fixed(idx)
        } else {
            Target::Fd(d.fd.load(Ordering::Acquire))
        }
    }

    /// Cancels every pending operation of a socket: parked accepts at
    /// once, kernel requests by `IORING_OP_ASYNC_CANCEL` (their CQEs then
    /// complete them).
    pub(crate) fn cancel_desc(&self, sched: &Sched, idx: u32, gen: u32) -> Result<()> {
        let d = self
            .descs
            .slots
            .get(idx as usize)
            .ok_or(Error::BadDescriptor)?;
        let mut aborted = OpQueue::new();
        d.with(|st| {
            if !st.open || d.gen.load(Ordering::Relaxed) != gen {
                return Err(Error::BadDescriptor);
            }
            take_waiters(&mut st.listener, &mut aborted);
            // Under the descriptor's lock, which `close_desc` needs, so
            // the cancel names this socket and no successor.
            // SAFETY: a cancel carries no pointer; `idx` is a table index.
            unsafe { self.push_on(idx, gen, false, || {}, cancel_entry) }
        })?;
        sched.post_deferred_completions(&mut aborted);
        Ok(())
    }

    /// Cancels everything pending on the socket and closes it: a handle
    /// is stale from here on, and the socket is torn down (registered
    /// file removed, fd closed, slot freed) once the kernel has taken
    /// every SQE queued for it, which [`push_sqe_on`](Self::push_sqe_on)
    /// puts ahead of this close's cancel. A listener's
    /// accepted-but-unclaimed connections are closed too.
    pub(crate) fn close_desc(&self, sched: &Sched, idx: u32, gen: u32) -> Result<()> {
        let d = self
            .descs
            .slots
            .get(idx as usize)
            .ok_or(Error::BadDescriptor)?;
        let mut aborted = OpQueue::new();
        let fence = d.with(|st| {
            if !st.open || d.gen.load(Ordering::Relaxed) != gen {
                return Err(Error::BadDescriptor);
            }
            st.open = false;
            take_waiters(&mut st.listener, &mut aborted);
            st.holds = 1 + st.listener.armed as u8;
            let target = self.slot_target(idx);
            // The generation moves on and the cancel is queued in one
            // stretch under `sq_lock`: every SQE a handle of this socket
            // pushed (under the same lock, checking the generation) is
            // ahead of the cancel, and none can follow it.
            Ok(self.with_sq(|sq| {
                let next = gen.wrapping_add(1);
                d.gen.store(next, Ordering::Release);
                d.key.store(desc_key(next, KEY_CLOSED), Ordering::Release);
                // SAFETY: a cancel carries no pointer.
                unsafe {
                    self.push_locked(sq, false, |q| {
                        q.push(&Sqe::from_entry(cancel_entry(target)))
                    })
                };
                sq.sq.tail_pos()
            }))
        })?;
        // Closed, the listener gets no new pending connections; hand back
        // the ones it holds (one at a time: each close takes locks). No
        // SQE ever named them, so they go at once.
        while let Some((i, _)) = d.with(|st| st.listener.pop_pending(&self.descs.slots)) {
            self.unregister_file(i);
            self.descs.close_unused(i);
        }
        sched.post_deferred_completions(&mut aborted);
        if self.submit_through(fence) {
            self.teardown(idx);
        } else {
            self.defer_teardown(idx, fence);
        }
        Ok(())
    }

    /// The end of a close, once the kernel has consumed its cancel: no SQE
    /// can name the socket any more, so its registered file goes, its fd
    /// is closed, and its slot is freed unless a multishot accept still
    /// holds it.
    fn teardown(&self, idx: u32) {
        self.unregister_file(idx);
        let d = &self.descs.slots[idx as usize];
        let fd = d.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            sys::close(fd);
        }
        let free = d.with(|st| {
            st.holds -= 1;
            st.holds == 0
        });
        if free {
            self.descs.release(idx);
        }
    }

    /// Parks a close whose cancel the kernel has not consumed yet (an
    /// SQPOLL thread that has not got to it, or a failed submission);
    /// [`finish_closes`](Self::finish_closes) tears it down once it has.
    #[cold]
    fn defer_teardown(&self, idx: u32, fence: u64) {
        let slots = &self.descs.slots;
        self.closing.with(|(head, tail)| {
            let d = &slots[idx as usize];
            d.closing_fence.set(fence);
            d.closing_next.set(NIL);
            if *tail == NIL {
                *head = idx;
            } else {
                slots[*tail as usize].closing_next.set(idx);
            }
            *tail = idx;
        });
        self.closes_pending.store(true, Ordering::Release);
    }

    /// Tears down the parked closes whose cancels the kernel has consumed
    /// (in close order; fences grow along the list).
    #[cold]
    #[inline(never)]
    fn finish_closes(&self) {
        let head_pos = self.with_sq(|st| st.sq.head_pos());
        let slots = &self.descs.slots;
        loop {
            let next = self.closing.with(|(head, tail)| {
                if *head == NIL || slots[*head as usize].closing_fence.get() > head_pos {
                    if *head == NIL {
                        self.closes_pending.store(false, Ordering::Release);
                    }
                    return None;
                }
                let idx = *head;
                *head = slots[idx as usize].closing_next.get();
                if *head == NIL {
                    *tail = NIL;
                }
                Some(idx)
            });
            match next {
                Some(idx) => self.teardown(idx),
                None => return,
            }
        }
    }

    /// Has the kernel take the SQ up to `fence` (a [`Sq::tail_pos`]):
    /// submits what is queued, retrying an interrupted call; with SQPOLL,
    /// wakes the kernel thread and gives it a moment. `false` if the
    /// kernel has not consumed it yet (a failed submission, a busy SQPOLL
    /// thread); never `true` before it has.
    fn submit_through(&self, fence: u64) -> bool {
        for _ in 0..SUBMIT_TRIES {
            let r = self.with_sq(|st| {
                if st.sq.consumed_before(fence) {
                    return Some(true);
                }
                stat!(self, enter_calls);
                match self.ring.submitter().submit() {
                    Ok(_) => None,
                    Err(e) if io_errno(&e) == libc::EINTR => None,
                    Err(_) => Some(false),
                }
            });
            match r {
                Some(done) => return done,
                None if self.info.sqpoll => std::thread::yield_now(),
                None => {}
            }
        }
        self.with_sq(|st| st.sq.consumed_before(fence))
    }

    // ---- timers --------------------------------------------------------

    pub(crate) fn timer_new(&self) -> Result<(u32, u32)> {
        self.timers.with(|ts| {
            let i = if ts.free != NIL {
                let i = ts.free;
                ts.free = ts.objs[i as usize].next_free;
                i
            } else if (ts.bump as usize) < ts.objs.len() {
                ts.bump += 1;
                ts.bump - 1
            } else {
                return Err(Error::PoolExhausted);
            };
            let o = &mut ts.objs[i as usize];
            o.live = true;
            o.expiry = 0;
            o.head = ptr::null_mut();
            o.tail = ptr::null_mut();
            Ok((i, o.gen))
        })
    }

    fn timer_update_next(&self, ts: &TimerState) {
        self.next_timer
            .store(ts.queue.earliest().unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Cancels the waits of a timer and, with `expiry`, sets its deadline;
    /// with `close`, frees it. Returns how many waits were cancelled.
    pub(crate) fn timer_reset(
        &self,
        sched: &Sched,
        idx: u32,
        gen: u32,
        expiry: Option<u64>,
        close: bool,
    ) -> usize {
        let mut out = OpQueue::new();
        let n = self.timers.with(|ts| {
            if ts.obj(idx, gen).is_none() {
                return 0;
            }
            let n = ts.cancel_all(idx, &mut out);
            let o = &mut ts.objs[idx as usize];
            if let Some(e) = expiry {
                o.expiry = e;
            }
            if close {
                o.live = false;
                o.gen = o.gen.wrapping_add(1);
                o.next_free = ts.free;
                ts.free = idx;
            }
            self.timer_update_next(ts);
            n
        });
        sched.post_deferred_completions(&mut out);
        n
    }

    /// Queues a wait on timer `idx` at its expiry and counts its work
    /// (under the timer lock, so the runner cannot fire it first).
    ///
    /// # Safety
    /// `w` is a live wait operation on no queue; on error it was not
    /// queued, no work was counted, and it still belongs to the caller.
    /// `here` came from `sched`.
    pub(crate) unsafe fn timer_wait(
        &self,
        sched: &Sched,
        here: Option<Here<'_>>,
        idx: u32,
        gen: u32,
        w: NonNull<WaitHdr>,
    ) -> Result<()> {
        let deadline = self.timers.with(|ts| {
            let o = ts.obj(idx, gen).ok_or(Error::BadDescriptor)?;
            let deadline = o.expiry;
            // SAFETY: per contract, `w` stays live until it leaves the
            // queue (fired, cancelled or drained).
            let h =
                unsafe { ts.queue.insert(deadline, w.cast()) }.map_err(|_| Error::PoolExhausted)?;
            // Append: waits of one timer are cancelled first in, first out.
            let o = &mut ts.objs[idx as usize];
            let tail = o.tail;
            // SAFETY: `w` is ours; `tail` is a live wait of this timer.
            unsafe {
                let p = w.as_ptr();
                (*p).handle = Some(h);
                (*p).obj = idx;
                (*p).prev = tail;
                (*p).next = ptr::null_mut();
                if tail.is_null() {
                    o.head = p;
                } else {
                    (*tail).next = p;
                }
            }
            o.tail = w.as_ptr();
            self.timer_update_next(ts);
            // SAFETY: `here` came from `sched` (per contract).
            unsafe { sched.compensating_work_started_in(here) };
            Ok::<u64, Error>(deadline)
        })?;
        if deadline < self.blocked_until.load(Ordering::Acquire) {
            stat!(self, interrupts);
            sys::eventfd_signal(self.efd);
        }
        Ok(())
    }

    fn fire_timers(&self, ops: &mut OpQueue) {
        // No clock read while no timer is pending.
        let next = self.next_timer.load(Ordering::Acquire);
        if next == u64::MAX {
            return;
        }
        let now = self.now_ns();
        if next > now {
            return;
        }
        self.timers.with(|ts| {
            let mut due = OpQueue::new();
            ts.queue.pop_expired(now, &mut due);
            while let Some(op) = due.pop() {
                // SAFETY: every queued timer op is a WaitHdr on its timer's
                // list (timer_wait put it on both).
                unsafe {
                    ts.unlink(op.cast::<WaitHdr>().as_ptr());
                    ops.push(op);
                }
            }
            self.timer_update_next(ts);
        });
    }

    // ---- the wait --------------------------------------------------------

    /// One `io_uring_enter`: submit the SQ and wait for a CQE, at most
    /// until `deadline` (ns on the monotonic clock).
    fn enter_and_wait(&self, deadline: Option<u64>, now: u64) {
        let submitter = self.ring.submitter();
        stat!(self, enter_calls);
        let r = match deadline {
            None => submitter.submit_and_wait(1),
            Some(d) => {
                let rel = d.saturating_sub(now);
                let ts = types::Timespec::new()
                    .sec(rel / 1_000_000_000)
                    .nsec((rel % 1_000_000_000) as u32);
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
        };
        // ETIME: the time-out passed; EINTR: a signal; EBUSY/EAGAIN:
        // completions to reap first. The scheduler simply runs us again.
        let _ = r;
    }

    /// Submits without waiting.
    fn enter_submit(&self) {
        stat!(self, enter_calls);
        let _ = self.ring.submitter().submit();
    }

    /// Whether SQEs wait to be submitted.
    fn sq_pending(&self) -> bool {
        self.with_sq(|st| st.sq.pending())
    }

    /// The CQ overflowed into the kernel's backlog and must be flushed.
    fn cq_overflowed(&self) -> bool {
        self.with_sq(|st| st.sq.cq_overflow())
    }
}

/// `IORING_OP_ASYNC_CANCEL` for every request on the socket `target`
/// names (`IORING_ASYNC_CANCEL_FD`, with `_FD_FIXED` for a registered
/// file: the kernel matches requests by file, however they named it).
fn cancel_entry(target: Target) -> squeue::Entry {
    let cb = with_target!(target, |t| types::CancelBuilder::fd(t).all());
    opcode::AsyncCancel2::new(cb)
        .build()
        .flags(squeue::Flags::SKIP_SUCCESS)
        .user_data(UD_IGNORE)
}

fn take_waiters(ls: &mut ListenerState, aborted: &mut OpQueue) {
    while let Some(w) = ls.waiters.pop() {
        // SAFETY: parked accept ops are live and their work counted.
        unsafe {
            w.as_ref().set_result(Err(Error::OperationAborted));
            aborted.push(w);
        }
    }
}

impl Task for Proactor {
    fn run(&self, wait: Wait, ops: &mut OpQueue) {
        // SAFETY: the scheduler runs the task on one thread at a time, so
        // this is the only reference to the runner state.
        let rs = unsafe { &mut *self.runner.get() };
        // Completions already waiting cost no syscall.
        let mut reaped = self.reap(rs, ops);
        if rs.rearm_interrupter {
            rs.rearm_interrupter = false;
            self.arm_interrupter();
        }
        // The clock is read only when a deadline needs it.
        let mut deadline = match wait {
            Wait::Poll => None,
            Wait::Forever => Some(u64::MAX),
            Wait::Until(d) => Some(d),
        };
        let mut now = 0;
        let block = reaped == 0 && deadline.is_some() && {
            // Publish how long we sleep, under the timer lock, so a timer
            // queued meanwhile with an earlier deadline interrupts us.
            self.timers.with(|ts| {
                let until = ts
                    .queue
                    .earliest()
                    .map_or(u64::MAX, |t| t)
                    .min(deadline.unwrap_or(u64::MAX));
                deadline = Some(until);
                if until != u64::MAX {
                    now = self.now_ns();
                    if until <= now {
                        return false;
                    }
                }
                self.blocked_until.store(until, Ordering::Release);
                true
            })
        };
        if block {
            self.with_sq(|st| {
                self.waiting.store(true, Ordering::Relaxed);
                // The next push then takes its slow path, which wakes us.
                st.sq.look_full();
            });
            let until = deadline.unwrap_or(u64::MAX);
            self.enter_and_wait((until != u64::MAX).then_some(until), now);
            self.waiting.store(false, Ordering::Relaxed);
            self.blocked_until.store(0, Ordering::Release);
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
        if self.closes_pending.load(Ordering::Acquire) {
            self.finish_closes();
        }
        self.fire_timers(ops);
    }

    fn interrupt(&self) {
        stat!(self, interrupts);
        sys::eventfd_signal(self.efd);
    }

    fn shutdown(&self, ops: &mut OpQueue) {
        // SAFETY: no thread runs the context during shutdown.
        let rs = unsafe { &mut *self.runner.get() };
        rs.shutting_down = true;
        // Accepts parked in user space are not in the kernel.
        for d in self.descs.slots.iter() {
            d.with(|st| take_waiters(&mut st.listener, ops));
        }
        // Cancel everything in the kernel and wait for every final CQE:
        // only then may the slots (and buffers) be destroyed.
        let start = self.now_ns();
        loop {
            // SAFETY: exclusive at shutdown.
            let expected = unsafe { (*self.sq_state.get()).expected() };
            if rs.completed >= expected {
                break;
            }
            let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(UD_IGNORE);
            // SAFETY: a cancel carries no pointer.
            unsafe { self.push(&e, false) };
            let now = self.now_ns();
            self.enter_and_wait(Some(now + 50_000_000), now);
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
        self.timers.with(|ts| {
            ts.queue.drain_all(ops);
            for o in ts.objs.iter_mut() {
                o.head = ptr::null_mut();
                o.tail = ptr::null_mut();
            }
        });
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        pinion_sync::monotonic_now_ns()
    }
}

impl Drop for Proactor {
    fn drop(&mut self) {
        // Shutdown has drained every request. Close the sockets still
        // open, then the interrupter; the ring goes last (field drop),
        // its buffer ring unregistered first so the kernel lets go of
        // the entries before they are unmapped.
        for d in self.descs.slots.iter() {
            let fd = d.fd.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                sys::close(fd);
            }
        }
        sys::close(self.efd);
        if let Some(b) = &self.read_bufs {
            b.unregister(&self.ring);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_desc_round_trips() {
        for (i, g) in [(0, 0), (1, 7), (1023, u32::MAX), (u32::MAX - 1, 3)] {
            assert_eq!(unpack_desc(pack_desc(i, g)), (i, g));
        }
    }

    #[test]
    fn listener_queue_is_fifo_through_descriptor_links() {
        let t = DescTable::new(8);
        let mut ls = ListenerState::new();
        assert_eq!(ls.pop_pending(&t.slots), None);
        for i in [3, 5, 1] {
            ls.push_pending(&t.slots, i);
        }
        assert_eq!(ls.len, 3);
        assert_eq!(ls.pop_pending(&t.slots).map(|p| p.0), Some(3));
        ls.push_pending(&t.slots, 6);
        let rest: Vec<u32> = std::iter::from_fn(|| ls.pop_pending(&t.slots).map(|p| p.0)).collect();
        assert_eq!(rest, vec![5, 1, 6]);
        assert_eq!(ls.len, 0);
    }

    #[test]
    fn descriptor_table_generations_refuse_stale_handles() {
        let t = DescTable::new(2);
        let (a, ga) = t.open(100).unwrap();
        let (b, _) = t.open(101).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.open(102), Err(Error::PoolExhausted));
        assert_eq!(t.with_fd(a, ga, Ok), Ok(100));
        assert_eq!(t.target(a, ga), Ok(Target::Fd(100)));
        assert_eq!(t.target(a, ga.wrapping_add(1)), Err(Error::BadDescriptor));
        // Close by hand (no ring here): bump the generation, free the slot.
        let d = &t.slots[a as usize];
        d.with(|st| st.open = false);
        d.gen.store(ga.wrapping_add(1), Ordering::Release);
        d.key
            .store(desc_key(ga.wrapping_add(1), KEY_CLOSED), Ordering::Release);
        d.fd.store(-1, Ordering::Release);
        t.release(a);
        assert_eq!(t.with_fd(a, ga, Ok), Err(Error::BadDescriptor));
        assert_eq!(t.target(a, ga), Err(Error::BadDescriptor));
        let (c, gc) = t.open(103).unwrap();
        assert_eq!(c, a, "the freed slot is reused");
        assert_ne!(gc, ga);
        assert_eq!(
            t.with_fd(a, ga, Ok),
            Err(Error::BadDescriptor),
            "old handle stays stale"
        );
        assert_eq!(t.with_fd(c, gc, Ok), Ok(103));
        assert_eq!(t.target(c, gc), Ok(Target::Fd(103)));
        assert_eq!(t.with_fd(99, 0, Ok), Err(Error::BadDescriptor));
        assert_eq!(t.target(99, 0), Err(Error::BadDescriptor));
        assert_eq!(t.in_use(), 2);
    }

    #[test]
    fn user_data_tags_fit_under_slot_alignment() {
        assert!(TAG_MASK < pinion_core::pool::OP_SLOT_ALIGN as u64);
        for tag in [TAG_OP, TAG_ACCEPT, UD_INTERRUPT, UD_IGNORE, TAG_POOLED] {
            assert_eq!(tag & !TAG_MASK, 0);
        }
    }
}
