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
//! Every socket and timer object lives in one [`DescriptorSlot`] of a
//! fixed table and is named by `(index, generation)`. Closing bumps the
//! generation, so a stale handle gets `BadDescriptor` and a stale epoll
//! event (its data is the same pair) is ignored. A slot whose descriptor
//! operation is still queued in the scheduler is not reused until that
//! operation has run: the free is deferred to its complete function.
//!
//! Differences from Asio, none visible to a program:
//! - A stream read that returns fewer bytes than asked is
//!   `done_and_exhausted` (Asio: only a read of 0 bytes), so the next read
//!   waits for an edge instead of trying a `recv` bound to fail: one
//!   syscall saved per message in request/response traffic. To keep that
//!   safe when the peer's FIN came with the last data (no edge would follow)
//!   sockets are also registered for `EPOLLRDHUP`, and once it (or
//!   `EPOLLHUP`/`EPOLLERR`) was seen a short read no longer counts.
//! - Epoll data is the slot's `(index, generation)`, not a pointer, so an
//!   event for a closed (or closed and reused) slot is simply ignored.
//! - pinion's scheduler takes batches, so a queued descriptor operation may
//!   sit on a batch whose tail link is null; `OpQueue::is_enqueued` cannot
//!   tell, and a `queued` flag kept under the slot's lock does instead.
//! - On a context built for one thread (concurrency hint 1) the task
//!   performs the ready operations itself, under the slot's lock, right
//!   after `epoll_wait`, and queues the completed ones in Asio's order
//!   (except, write, read) instead of queueing a descriptor operation
//!   that would do the same a moment later on the same thread. No other
//!   thread could have taken that descriptor operation, so only the
//!   round trip through the queue is saved; a program sees its data
//!   arrive in the same order, one queue position earlier. Contexts for
//!   several threads keep Asio's descriptor operations, which let any
//!   idle thread do a descriptor's I/O.
//! - A non-blocking poll (the scheduler's `Wait::Poll`, asked for between
//!   batches of handlers) is skipped when the kernel was asked less than
//!   [`POLL_SKIP_NS`] ago and fewer than [`POLL_SKIP_MAX`] polls in a row
//!   were skipped: to the program this looks like readiness arriving a
//!   moment later, and it saves an `epoll_wait` per batch on chains of
//!   handlers whose I/O the speculative path already served.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use pinion_core::op::CompleteFn;
use pinion_core::timer::{TimerHandle, TimerQueue, TimerSlot};
use pinion_core::{Error, Here, Invoke, OpQueue, Operation, Result, Storage, Task, Wait};
use pinion_sync::{FutexMutex, RawMutex};

use crate::interrupter::Interrupter;
use crate::stats::stat;
use crate::sys::{syscall, Fd};
use crate::ReadBuffers;
use crate::Scheduler;

/// Queue of reads (and accepts) on a descriptor.
pub(crate) const READ_OP: usize = 0;
/// Queue of writes on a descriptor.
pub(crate) const WRITE_OP: usize = 1;
/// Connects wait for writability, like writes (Asio: `connect_op = write_op`).
pub(crate) const CONNECT_OP: usize = WRITE_OP;
/// Queue of out-of-band reads; kept for Asio's ordering rule (a read is
/// not attempted speculatively while one waits).
pub(crate) const EXCEPT_OP: usize = 2;
const MAX_OPS: usize = 3;

/// The events `perform_io` looks at for each queue.
const OP_EVENTS: [u32; MAX_OPS] = [
    libc::EPOLLIN as u32,
    libc::EPOLLOUT as u32,
    libc::EPOLLPRI as u32,
];
/// Registration of every socket, once: edge-triggered, no `EPOLLOUT`.
/// Asio's mask plus `EPOLLRDHUP`: a short read marks the read side
/// exhausted, which is only safe while the peer has not shut down its side
/// (data and FIN that arrive in one edge would otherwise leave the next
/// read waiting for an edge that never comes); `EPOLLRDHUP` tells us.
const REGISTER_EVENTS: u32 = (libc::EPOLLIN
    | libc::EPOLLERR
    | libc::EPOLLHUP
    | libc::EPOLLPRI
    | libc::EPOLLRDHUP
    | libc::EPOLLET) as u32;
/// Events after which reads never block again (end of stream or error).
const READ_CLOSED_EVENTS: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
const INTERRUPTER_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLET) as u32;
/// The timerfd is level-triggered; `timerfd_settime` after each expiry
/// check makes it unreadable again (Asio does the same).
const TIMER_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLERR) as u32;

/// Epoll data of the interrupter and of the timerfd. Slot tokens have an
/// index below `u32::MAX` in their low half, so they never collide.
const INTERRUPTER_TOKEN: u64 = u64::MAX;
const TIMER_TOKEN: u64 = u64::MAX - 1;

/// Events taken per `epoll_wait` (Asio takes 128).
const MAX_EVENTS: usize = 128;
/// Most non-blocking polls skipped in a row.
pub const POLL_SKIP_MAX: u32 = 15;
/// A non-blocking poll is skipped only this soon after the last real wait.
pub const POLL_SKIP_NS: u64 = 1_000_000;

/// What one attempt at an operation achieved (Asio's `reactor_op::status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Would block; stays queued.
    NotDone,
    /// Completed (successfully or with an error).
    Done,
    /// Completed, and the descriptor has nothing more for now (a stream
    /// read or write that moved fewer bytes than asked): do not try the
    /// next operation of this type speculatively.
    DoneAndExhausted,
}

/// Performs an operation once on `fd`, writing its result slot.
///
/// # Safety
/// `op` is a live operation created for this function, not being
/// performed or completed concurrently (it is on a descriptor queue under
/// that descriptor's lock, or being started by its owner).
pub(crate) type PerformFn = unsafe fn(op: NonNull<ReactorOp>, fd: i32) -> Status;

/// The header of every socket operation (Asio's `reactor_op`): the
/// scheduler's operation header plus the perform function.
#[repr(C)]
pub(crate) struct ReactorOp {
    pub(crate) base: Operation,
    perform: PerformFn,
}

impl ReactorOp {
    pub(crate) const fn new(complete: CompleteFn, perform: PerformFn) -> Self {
        ReactorOp {
            base: Operation::new(complete),
            perform,
        }
    }

    /// # Safety
    /// As for [`PerformFn`].
    #[inline]
    unsafe fn perform(op: NonNull<ReactorOp>, fd: i32) -> Status {
        // SAFETY: `op` is live (contract); read the pointer, then call it
        // under the same contract.
        unsafe {
            let f = op.as_ref().perform;
            f(op, fd)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Free,
    Socket,
    Timer,
}

/// A slot's state. For sockets it is guarded by the slot's lock; for timer
/// objects by the reactor's timer lock (a slot's kind never changes while
/// a handle with its generation exists).
struct State {
    kind: Kind,
    fd: i32,
    registered_events: u32,
    ready_events: u32,
    /// The descriptor op is on a queue (local, batch or scheduler's).
    queued: bool,
    /// Closed while queued: its complete function frees the slot.
    free_pending: bool,
    /// The peer shut down its side or the socket failed (sticky): a short
    /// read no longer means "wait for the next edge".
    read_closed: bool,
    try_speculative: [bool; MAX_OPS],
    /// Socket ops per type; for a timer object, `queues[0]` holds its waits.
    queues: [OpQueue; MAX_OPS],
    expiry: u64,
    /// The timer object's entry in the deadline heap, while it has waits.
    heap: Option<TimerHandle>,
}

impl State {
    /// An operation of `op_type` moved fewer bytes than asked: the next
    /// one waits for readiness instead of trying at once, unless the read
    /// side is closed (the next read would return at once, and no edge
    /// would come to wake it).
    #[inline]
    fn exhausted(&mut self, op_type: usize) {
        if op_type != READ_OP || !self.read_closed {
            self.try_speculative[op_type] = false;
        }
    }

    const EMPTY: State = State {
        kind: Kind::Free,
        fd: -1,
        registered_events: 0,
        ready_events: 0,
        queued: false,
        free_pending: false,
        read_closed: false,
        try_speculative: [true; MAX_OPS],
        queues: [const { OpQueue::new() }; MAX_OPS],
        expiry: 0,
        heap: None,
    };
}

/// One entry of the reactor's object table: a socket (Asio's
/// `descriptor_state`) or a timer object.
///
/// Opaque; provide `descriptors + timers` of them to
/// [`Builder::build_static`](crate::Builder::build_static), initialised
/// with [`DescriptorSlot::EMPTY`].
#[repr(C, align(64))]
pub struct DescriptorSlot {
    /// The descriptor operation (for a timer object: its key in the
    /// deadline heap). First, so a header pointer is a slot pointer.
    op: Operation,
    gen: AtomicU32,
    lock: FutexMutex,
    state: UnsafeCell<State>,
    /// Next free slot; guarded by the table's lock.
    next_free: UnsafeCell<u32>,
}

// SAFETY: `state` is guarded by the slot's lock or the timer lock (see
// `State`), `next_free` by the table's lock; the header is only linked by
// whoever holds the `queued` flag.
unsafe impl Sync for DescriptorSlot {}
// SAFETY: as above; the fd it may hold is owned.
unsafe impl Send for DescriptorSlot {}

impl DescriptorSlot {
    /// An unused slot, for `static` initialisers (`[DescriptorSlot::EMPTY; N]`).
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: DescriptorSlot = DescriptorSlot {
        op: Operation::new(descriptor_complete),
        gen: AtomicU32::new(0),
        lock: FutexMutex::new(),
        state: UnsafeCell::new(State::EMPTY),
        next_free: UnsafeCell::new(NIL),
    };

    /// # Safety
    /// The caller holds the lock guarding this slot's state (see `State`)
    /// and makes no other reference to it while this one lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn state(&self) -> &mut State {
        // SAFETY: per this function's contract.
        unsafe { &mut *self.state.get() }
    }

    #[inline]
    fn header(&self) -> NonNull<Operation> {
        NonNull::from(&self.op)
    }
}

/// A socket slot, locked; unlocks on drop.
struct Locked<'a> {
    slot: &'a DescriptorSlot,
}

impl<'a> Locked<'a> {
    #[inline]
    fn new(slot: &'a DescriptorSlot) -> Self {
        slot.lock.lock();
        Locked { slot }
    }

    #[inline]
    fn state(&mut self) -> &mut State {
        // SAFETY: the slot's lock is held while `self` lives, and the
        // returned borrow is tied to `&mut self`.
        unsafe { self.slot.state() }
    }
}

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: locked in `new`.
        unsafe { self.slot.lock.unlock() }
    }
}

const NIL: u32 = u32::MAX;

/// The fixed object table with its free list (Asio's `object_pool`).
struct Table {
    slots: Storage<DescriptorSlot>,
    lock: FutexMutex,
    free: UnsafeCell<u32>,
    bump: UnsafeCell<u32>,
}

impl Table {
    fn new(slots: Storage<DescriptorSlot>) -> Self {
        // Indices of the special epoll tokens must lie past the table
        // (`Task::run` relies on it); 2^32 - 2 slots would be 256 GiB.
        assert!(slots.len() < (TIMER_TOKEN as u32) as usize);
        Table {
            slots,
            lock: FutexMutex::new(),
            free: UnsafeCell::new(NIL),
            bump: UnsafeCell::new(0),
        }
    }

    #[inline]
    fn get(&self, index: u32) -> Option<&DescriptorSlot> {
        if (index as usize) < self.slots.len() {
            // SAFETY: in bounds of the table's initialised storage, which
            // lives as long as `self`.
            Some(unsafe { &*self.slots.as_ptr().add(index as usize) })
        } else {
            None
        }
    }

    fn index_of(&self, slot: &DescriptorSlot) -> u32 {
        let offset = slot as *const DescriptorSlot as usize - self.slots.as_ptr() as usize;
        (offset / core::mem::size_of::<DescriptorSlot>()) as u32
    }

    /// Slots ever handed out (`0..used()` may be in use).
    fn used(&self) -> u32 {
        self.lock.lock();
        // SAFETY: guarded by `lock`, held.
        let n = unsafe { *self.bump.get() };
        // SAFETY: locked above.
        unsafe { self.lock.unlock() };
        n
    }

    /// A free slot and its index; its generation is the one to hand out.
    fn alloc(&self) -> Option<(u32, &DescriptorSlot)> {
        self.lock.lock();
        // SAFETY: `free`, `bump` and free slots' `next_free` are guarded by
        // `lock`, held here.
        let index = unsafe {
            let head = *self.free.get();
            if head != NIL {
                *self.free.get() = *self.get(head).unwrap_unchecked().next_free.get();
                Some(head)
            } else if (*self.bump.get() as usize) < self.slots.len().min(NIL as usize) {
                *self.bump.get() += 1;
                Some(*self.bump.get() - 1)
            } else {
                None
            }
        };
        // SAFETY: locked above.
        unsafe { self.lock.unlock() };
        let index = index?;
        self.get(index).map(|s| (index, s))
    }

    /// Puts a slot whose generation was bumped back on the free list.
    fn release(&self, index: u32) {
        let Some(slot) = self.get(index) else { return };
        self.lock.lock();
        // SAFETY: guarded by `lock`, held; the slot is unreachable by
        // handles (generation bumped) and not queued.
        unsafe {
            *slot.next_free.get() = *self.free.get();
            *self.free.get() = index;
            self.lock.unlock();
        }
    }
}

/// Deadline heap of timer objects plus the timerfd's armed deadline.
struct Timers {
    queue: TimerQueue,
    /// Deadline the timerfd is set to; `u64::MAX` when disarmed.
    armed: u64,
    /// Timer objects open (at most the heap's capacity, so a wait never
    /// finds the heap full).
    open: usize,
}

/// The reactor's timer lock, held; unlocks on drop.
struct TimersLocked<'a> {
    reactor: &'a Reactor,
}

impl<'a> TimersLocked<'a> {
    fn new(reactor: &'a Reactor) -> Self {
        reactor.timer_lock.lock();
        TimersLocked { reactor }
    }

    fn timers(&mut self) -> &mut Timers {
        // SAFETY: the timer lock is held while `self` lives.
        unsafe { &mut *self.reactor.timers.get() }
    }

    /// The timer object `(index, gen)`, if that handle is current.
    #[allow(clippy::mut_from_ref)]
    fn object(&self, index: u32, gen: u32) -> Option<(&'a DescriptorSlot, &'a mut State)> {
        let slot = self.reactor.table.get(index)?;
        if slot.gen.load(Relaxed) != gen {
            return None;
        }
        // SAFETY: the timer lock, held, guards timer objects' state, and
        // the generation matches, so the slot is a timer object. Callers
        // take one object's state at a time.
        let st = unsafe { slot.state() };
        debug_assert_eq!(st.kind, Kind::Timer);
        Some((slot, st))
    }
}

impl Drop for TimersLocked<'_> {
    fn drop(&mut self) {
        // SAFETY: locked in `new`.
        unsafe { self.reactor.timer_lock.unlock() }
    }
}

/// Asio's `epoll_reactor`: the backend task of an [`IoContext`](crate::IoContext).
pub struct Reactor {
    epoll: Fd,
    interrupter: Interrupter,
    timer_fd: Fd,
    table: Table,
    timer_lock: FutexMutex,
    timers: UnsafeCell<Timers>,
    polls_skipped: AtomicU32,
    last_wait_ns: AtomicU64,
    /// Perform I/O in `Task::run` instead of through descriptor ops
    /// (contexts for one thread; see the module docs).
    inline_io: bool,
    /// The pool pooled reads take from, if the context has one.
    read_buffers: Option<ReadBuffers>,
    #[cfg(feature = "stats")]
    pub(crate) stats: crate::stats::Counters,
}

// SAFETY: every mutable part is behind a lock (slots, table, timers) or
// atomic; `run` is called by one thread at a time (Task contract).
unsafe impl Sync for Reactor {}
// SAFETY: owns its descriptors and storage.
unsafe impl Send for Reactor {}

/// Moves every op of `q` to `out` with `OperationAborted`; returns how many.
fn abort_all(q: &mut OpQueue, out: &mut OpQueue) -> usize {
    let mut n = 0;
    while let Some(op) = q.pop() {
        // SAFETY: ops on a reactor queue are live; it now leaves for `out`.
        unsafe {
            op.as_ref().set_result(Err(Error::OperationAborted));
            out.push(op);
        }
        n += 1;
    }
    n
}

#[inline]
fn token(index: u32, gen: u32) -> u64 {
    (gen as u64) << 32 | index as u64
}

impl Reactor {
    /// Opens the epoll instance, the interrupter and the timerfd.
    pub(crate) fn new(
        slots: Storage<DescriptorSlot>,
        timers: Storage<TimerSlot>,
        inline_io: bool,
        read_buffers: Option<ReadBuffers>,
    ) -> Result<Self> {
        let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `epoll_create1` just returned this descriptor.
        let epoll = unsafe { Fd::from_raw(raw) };
        let interrupter = Interrupter::new()?;
        let raw = syscall!(timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK
        ))?;
        // SAFETY: `timerfd_create` just returned this descriptor.
        let timer_fd = unsafe { Fd::from_raw(raw) };
        let r = Reactor {
            epoll,
            interrupter,
            timer_fd,
            table: Table::new(slots),
            timer_lock: FutexMutex::new(),
            timers: UnsafeCell::new(Timers {
                queue: TimerQueue::new(timers),
                armed: u64::MAX,
                open: 0,
            }),
            polls_skipped: AtomicU32::new(0),
            last_wait_ns: AtomicU64::new(0),
            inline_io,
            read_buffers,
            #[cfg(feature = "stats")]
            stats: Default::default(),
        };
        r.ctl(
            libc::EPOLL_CTL_ADD,
            r.interrupter.read_fd(),
            INTERRUPTER_EVENTS,
            INTERRUPTER_TOKEN,
        )?;
        r.ctl(
            libc::EPOLL_CTL_ADD,
            r.timer_fd.raw(),
            TIMER_EVENTS,
            TIMER_TOKEN,
        )?;
        Ok(r)
    }

    /// The context's read-buffer pool, if it has one.
    #[inline]
    pub(crate) fn read_buffers(&self) -> Option<&ReadBuffers> {
        self.read_buffers.as_ref()
    }

    #[inline]
    fn ctl(&self, op: i32, fd: i32, events: u32, data: u64) -> Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid, live epoll_event for the call.
        syscall!(epoll_ctl(self.epoll.raw(), op, fd, &mut ev)).map(drop)
    }

    /// The slot `(index, gen)` names, locked, if that handle is current.
    #[inline]
    fn lock_socket(&self, index: u32, gen: u32) -> Result<Locked<'_>> {
        let slot = self.table.get(index).ok_or(Error::BadDescriptor)?;
        let mut l = Locked::new(slot);
        if slot.gen.load(Relaxed) != gen {
            return Err(Error::BadDescriptor);
        }
        debug_assert_eq!(l.state().kind, Kind::Socket);
        Ok(l)
    }

    // ---- sockets ---------------------------------------------------------

    /// Takes a slot for `fd` and registers it once, edge-triggered, with
    /// `EPOLLIN|EPOLLERR|EPOLLHUP|EPOLLPRI|EPOLLRDHUP|EPOLLET` (Asio's
    /// `register_descriptor`, plus `EPOLLRDHUP`: see [`REGISTER_EVENTS`]).
    /// Returns the handle's `(index, gen)`. On error `fd` is closed.
    pub(crate) fn register(&self, fd: Fd) -> Result<(u32, u32)> {
        let (index, slot) = self.table.alloc().ok_or(Error::PoolExhausted)?;
        let mut l = Locked::new(slot);
        let gen = slot.gen.load(Relaxed);
        let st = l.state();
        debug_assert!(st.kind == Kind::Free && !st.queued);
        st.kind = Kind::Socket;
        st.fd = fd.raw();
        st.registered_events = REGISTER_EVENTS;
        st.ready_events = 0;
        st.read_closed = false;
        st.try_speculative = [true; MAX_OPS];
        match self.ctl(
            libc::EPOLL_CTL_ADD,
            fd.raw(),
            REGISTER_EVENTS,
            token(index, gen),
        ) {
            Ok(()) => stat!(self, ctl_add),
            // Not pollable (a regular file): operations on it complete
            // with OperationNotSupported, as in Asio.
            Err(Error::Os(libc::EPERM)) => st.registered_events = 0,
            Err(e) => {
                st.kind = Kind::Free;
                st.fd = -1;
                slot.gen.store(gen.wrapping_add(1), Relaxed);
                drop(l);
                self.table.release(index);
                return Err(e);
            }
        }
        // The slot owns the descriptor from here on.
        fd.into_raw();
        Ok((index, gen))
    }

    /// Asio's `epoll_reactor::start_op`, with the `done_and_exhausted`
    /// patch, for an op of queue `OP_TYPE`. `perform` is the operation's
    /// own attempt, called inline (the caller knows its type) under the
    /// descriptor's lock. Returns
    /// `BadDescriptor` for a stale handle, with `op` untouched.
    ///
    /// # Safety
    /// `here` is `sched.here()` of the calling thread.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // always inlined into its two callers
    pub(crate) unsafe fn start_op<const OP_TYPE: usize>(
        &self,
        sched: &Scheduler,
        here: Option<Here<'_>>,
        index: u32,
        gen: u32,
        op: NonNull<Operation>,
        allow_speculative: bool,
        perform: impl FnOnce(i32) -> Status,
    ) -> Result<()> {
        let op_type = OP_TYPE;
        let mut l = self.lock_socket(index, gen)?;
        let st = l.state();
        if st.queues[op_type].is_empty() {
            let outcome = if allow_speculative
                && (op_type != READ_OP || st.queues[EXCEPT_OP].is_empty())
            {
                if st.try_speculative[op_type] {
                    stat!(self, op_attempts);
                    let status = perform(st.fd);
                    if status != Status::NotDone {
                        if status == Status::DoneAndExhausted && st.registered_events != 0 {
                            st.exhausted(op_type);
                        }
                        drop(l);
                        stat!(self, speculative_hits);
                        // SAFETY: completed, on no queue, owned by `sched`,
                        // whose thread `here` is (the caller's contract).
                        unsafe { sched.post_immediate_completion_in(here, op) };
                        return Ok(());
                    }
                    stat!(self, speculative_misses);
                }
                if st.registered_events == 0
                    || (op_type == WRITE_OP && st.registered_events & libc::EPOLLOUT as u32 == 0)
                {
                    self.register_interest(st, index, gen, op_type)
                } else {
                    Ok(())
                }
            } else {
                self.rearm(st, index, gen, op_type)
            };
            if let Err(e) = outcome {
                drop(l);
                // SAFETY: `op` is live and on no queue.
                unsafe {
                    op.as_ref().set_result(Err(e));
                    sched.post_immediate_completion(op);
                }
                return Ok(());
            }
        }
        // SAFETY: `op` is live, on no queue, and stays live until it leaves
        // this queue (perform_io, cancel, close or shutdown).
        unsafe { st.queues[op_type].push(op) };
        sched.work_started();
        Ok(())
    }

    /// `start_op`'s speculative branch when the op must wait: not
    /// registered at all (`OperationNotSupported`), or a write while
    /// `EPOLLOUT` is not registered yet (added now, once, for good).
    #[cold]
    fn register_interest(
        &self,
        st: &mut State,
        index: u32,
        gen: u32,
        op_type: usize,
    ) -> Result<()> {
        if st.registered_events == 0 {
            return Err(Error::OperationNotSupported);
        }
        if op_type == WRITE_OP && st.registered_events & libc::EPOLLOUT as u32 == 0 {
            let events = st.registered_events | libc::EPOLLOUT as u32;
            self.ctl(libc::EPOLL_CTL_MOD, st.fd, events, token(index, gen))?;
            stat!(self, ctl_mod);
            st.registered_events = events;
        }
        Ok(())
    }

    /// `start_op`'s non-speculative branch (connect): re-arm, which
    /// reports readiness that is already there.
    #[cold]
    fn rearm(&self, st: &mut State, index: u32, gen: u32, op_type: usize) -> Result<()> {
        if st.registered_events == 0 {
            return Err(Error::OperationNotSupported);
        }
        if op_type == WRITE_OP {
            st.registered_events |= libc::EPOLLOUT as u32;
        }
        let _ = self.ctl(
            libc::EPOLL_CTL_MOD,
            st.fd,
            st.registered_events,
            token(index, gen),
        );
        stat!(self, ctl_mod);
        Ok(())
    }

    /// Runs `f` on the socket's fd, under its lock (so a concurrent close
    /// cannot recycle the number meanwhile).
    pub(crate) fn with_fd<T>(
        &self,
        index: u32,
        gen: u32,
        f: impl FnOnce(i32) -> Result<T>,
    ) -> Result<T> {
        let mut l = self.lock_socket(index, gen)?;
        f(l.state().fd)
    }

    /// The socket's fd, or -1 when the handle is stale.
    pub(crate) fn raw_fd(&self, index: u32, gen: u32) -> i32 {
        self.with_fd(index, gen, Ok).unwrap_or(-1)
    }

    /// Completes every pending op of the socket with `OperationAborted`
    /// (Asio's `cancel_ops`).
    pub(crate) fn cancel(&self, sched: &Scheduler, index: u32, gen: u32) -> Result<()> {
        let mut aborted = OpQueue::new();
        {
            let mut l = self.lock_socket(index, gen)?;
            let st = l.state();
            for q in st.queues.iter_mut() {
                abort_all(q, &mut aborted);
            }
        }
        sched.post_deferred_completions(&mut aborted);
        Ok(())
    }

    /// Cancels, closes the fd and frees the slot (Asio's
    /// `deregister_descriptor(closing = true)`: closing the fd removes it
    /// from the epoll set, so no `EPOLL_CTL_DEL`). The free waits for the
    /// descriptor op if it is queued.
    pub(crate) fn close(&self, sched: &Scheduler, index: u32, gen: u32) -> Result<()> {
        let mut aborted = OpQueue::new();
        let (fd, release_now) = {
            let mut l = self.lock_socket(index, gen)?;
            let slot = l.slot;
            let st = l.state();
            for q in st.queues.iter_mut() {
                abort_all(q, &mut aborted);
            }
            let fd = core::mem::replace(&mut st.fd, -1);
            st.kind = Kind::Free;
            st.registered_events = 0;
            slot.gen.store(gen.wrapping_add(1), Relaxed);
            st.free_pending = st.queued;
            (fd, !st.queued)
        };
        if release_now {
            self.table.release(index);
        }
        // SAFETY: the slot owned `fd`; it was taken out above, once.
        drop(unsafe { Fd::from_raw(fd) });
        sched.post_deferred_completions(&mut aborted);
        Ok(())
    }

    // ---- timers ----------------------------------------------------------

    /// A new timer object, expiring at 0 (already due).
    pub(crate) fn timer_open(&self) -> Result<(u32, u32)> {
        let mut t = TimersLocked::new(self);
        if t.timers().open >= t.timers().queue.capacity() {
            return Err(Error::PoolExhausted);
        }
        let (index, slot) = self.table.alloc().ok_or(Error::PoolExhausted)?;
        // SAFETY: the slot was free, so nothing else refers to its state;
        // from here it is a timer object, guarded by the timer lock (held).
        let st = unsafe { slot.state() };
        debug_assert!(st.kind == Kind::Free && st.heap.is_none());
        st.kind = Kind::Timer;
        st.expiry = 0;
        t.timers().open += 1;
        Ok((index, slot.gen.load(Relaxed)))
    }

    /// Sets the expiry (when `Some`) after cancelling every pending wait.
    /// Returns how many were cancelled; 0 for a stale handle.
    pub(crate) fn timer_cancel(
        &self,
        sched: &Scheduler,
        index: u32,
        gen: u32,
        expiry: Option<u64>,
    ) -> usize {
        let mut aborted = OpQueue::new();
        let n = {
            let mut t = TimersLocked::new(self);
            let Some((_, st)) = t.object(index, gen) else {
                return 0;
            };
            let heap = st.heap.take();
            let n = abort_all(&mut st.queues[0], &mut aborted);
            if let Some(e) = expiry {
                st.expiry = e;
            }
            if let Some(h) = heap {
                t.timers().queue.cancel(h);
            }
            n
        };
        sched.post_deferred_completions(&mut aborted);
        n
    }

    /// Cancels and frees a timer object.
    pub(crate) fn timer_close(&self, sched: &Scheduler, index: u32, gen: u32) {
        self.timer_cancel(sched, index, gen, None);
        let mut t = TimersLocked::new(self);
        let Some((slot, st)) = t.object(index, gen) else {
            return;
        };
        st.kind = Kind::Free;
        slot.gen.store(gen.wrapping_add(1), Relaxed);
        t.timers().open -= 1;
        drop(t);
        self.table.release(index);
    }

    /// Queues a wait on the timer object (Asio's `schedule_timer`); hands
    /// `op` back with `BadDescriptor` for a stale handle.
    pub(crate) fn timer_wait(
        &self,
        sched: &Scheduler,
        index: u32,
        gen: u32,
        op: NonNull<Operation>,
    ) -> core::result::Result<(), (Error, NonNull<Operation>)> {
        let mut t = TimersLocked::new(self);
        let Some((slot, st)) = t.object(index, gen) else {
            return Err((Error::BadDescriptor, op));
        };
        let expiry = st.expiry;
        if st.heap.is_none() {
            // SAFETY: the slot's header is a key that is on no queue while
            // the object is out of the heap, and lives as long as the table.
            match unsafe { t.timers().queue.insert(expiry, slot.header()) } {
                Ok(h) => st.heap = Some(h),
                Err(_) => return Err((Error::PoolExhausted, op)),
            }
        }
        // SAFETY: `op` is live and on no queue; it stays until fired,
        // cancelled or shut down.
        unsafe { st.queues[0].push(op) };
        sched.work_started();
        if expiry < t.timers().armed {
            self.arm_timer_fd(t.timers(), Some(expiry));
        }
        Ok(())
    }

    /// Sets the timerfd to `deadline` (absolute), or disarms it.
    fn arm_timer_fd(&self, t: &mut Timers, deadline: Option<u64>) {
        // SAFETY: itimerspec is plain integers; zero disarms.
        let mut spec: libc::itimerspec = unsafe { core::mem::zeroed() };
        let d = deadline.unwrap_or(u64::MAX);
        if d != u64::MAX {
            // Zero would disarm; the earliest instant is 1 ns.
            let d = d.max(1);
            spec.it_value.tv_sec = (d / 1_000_000_000) as libc::time_t;
            spec.it_value.tv_nsec = (d % 1_000_000_000) as _;
        }
        // SAFETY: `spec` is a valid itimerspec; the old value is not wanted.
        let _ = syscall!(timerfd_settime(
            self.timer_fd.raw(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            ptr::null_mut()
        ));
        stat!(self, timerfd_settime);
        t.armed = d;
    }

    /// Moves the waits of every due timer object to `ops` and re-arms the
    /// timerfd for the next one (which also makes it unreadable again).
    fn fire_timers(&self, ops: &mut OpQueue) {
        let mut t = TimersLocked::new(self);
        let now = self.now_ns();
        let mut due = OpQueue::new();
        t.timers().queue.pop_expired(now, &mut due);
        while let Some(key) = due.pop() {
            // SAFETY: heap keys are the headers at offset 0 of table slots
            // of timer objects, whose state the timer lock (held) guards.
            let st = unsafe { key.cast::<DescriptorSlot>().as_ref().state() };
            st.heap = None;
            ops.push_queue(&mut st.queues[0]);
        }
        let next = t.timers().queue.earliest();
        self.arm_timer_fd(t.timers(), next);
    }

    // ---- run ------------------------------------------------------------

    /// `true` when a non-blocking poll may be skipped (see the module docs).
    #[inline]
    fn skip_poll(&self) -> bool {
        let skipped = self.polls_skipped.load(Relaxed);
        if skipped < POLL_SKIP_MAX
            && self.now_ns().wrapping_sub(self.last_wait_ns.load(Relaxed)) < POLL_SKIP_NS
        {
            self.polls_skipped.store(skipped + 1, Relaxed);
            stat!(self, polls_skipped);
            return true;
        }
        false
    }

    /// Slots ever used, for shutdown and tests.
    fn slots_used(&self) -> u32 {
        self.table.used()
    }

    /// Sockets open in the table (O(slots ever used); for tests and
    /// diagnostics). A closed socket whose descriptor op is still queued
    /// counts until that op has run.
    pub(crate) fn sockets_in_use(&self) -> usize {
        (0..self.slots_used())
            .filter_map(|i| self.table.get(i))
            .filter(|slot| {
                let mut l = Locked::new(slot);
                let st = l.state();
                st.kind == Kind::Socket || st.free_pending
            })
            .count()
    }
}

impl Task for Reactor {
    fn run(&self, wait: Wait, ops: &mut OpQueue) {
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
        // SAFETY: `events` is room for MAX_EVENTS entries.
        let n = syscall!(epoll_wait(
            self.epoll.raw(),
            events.as_mut_ptr() as *mut libc::epoll_event,
            MAX_EVENTS as i32,
            timeout
        ))
        .unwrap_or(0) as usize; // EINTR: nothing ready, the scheduler asks again
        self.polls_skipped.store(0, Relaxed);
        self.last_wait_ns.store(self.now_ns(), Relaxed);

        let mut check_timers = false;
        for ev in &events[..n] {
            // SAFETY: the kernel initialised the first `n` entries.
            let ev = unsafe { ev.assume_init_ref() };
            let (data, bits) = (ev.u64, ev.events);
            let (index, gen) = (data as u32, (data >> 32) as u32);
            // The two special tokens have an index past any table (see
            // INTERRUPTER_TOKEN), so slot events test nothing more.
            let Some(slot) = self.table.get(index) else {
                // The interrupter is left readable on purpose: the next
                // EPOLL_CTL_MOD re-arms it.
                check_timers |= data == TIMER_TOKEN;
                continue;
            };
            let mut l = Locked::new(slot);
            if slot.gen.load(Relaxed) != gen {
                continue; // closed since the event was queued
            }
            let st = l.state();
            if bits & READ_CLOSED_EVENTS != 0 {
                st.read_closed = true;
            }
            if self.inline_io {
                // Asio's perform_io, here and now (see the module docs).
                st.ready_events = bits;
                perform_io(self, st, |op| {
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

    fn shutdown(&self, ops: &mut OpQueue) {
        {
            let mut t = TimersLocked::new(self);
            let mut keys = OpQueue::new();
            t.timers().queue.drain_all(&mut keys);
            while let Some(key) = keys.pop() {
                // SAFETY: as in `fire_timers`; the timer lock is held.
                let st = unsafe { key.cast::<DescriptorSlot>().as_ref().state() };
                st.heap = None;
            }
            t.timers().open = 0;
        }
        // No thread runs the context any more: every slot's state can be
        // reached under its own lock, timer objects included.
        for index in 0..self.slots_used() {
            let Some(slot) = self.table.get(index) else {
                break;
            };
            let mut l = Locked::new(slot);
            let st = l.state();
            if st.kind == Kind::Free {
                continue;
            }
            for q in st.queues.iter_mut() {
                ops.push_queue(q);
            }
            if st.kind == Kind::Socket {
                // SAFETY: the slot owns its fd; taken out once.
                drop(unsafe { Fd::from_raw(core::mem::replace(&mut st.fd, -1)) });
            }
            st.kind = Kind::Free;
            st.free_pending = st.queued;
            slot.gen.fetch_add(1, Relaxed);
        }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        pinion_sync::monotonic_now_ns()
    }
}

/// The descriptor operation's complete function (Asio's
/// `descriptor_state::do_complete` with `perform_io` and
/// `perform_io_cleanup_on_block_exit`).
///
/// # Safety
/// See [`CompleteFn`]: `op` is the header of a slot in the table of the
/// reactor of the scheduler `owner`.
unsafe fn descriptor_complete(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>) {
    // SAFETY: `owner` is the scheduler whose reactor queued this op.
    let sched = unsafe { &*(owner as *const Scheduler) };
    // SAFETY: descriptor ops are the first field of a table slot, which
    // lives as long as the reactor.
    let slot = unsafe { op.cast::<DescriptorSlot>().as_ref() };
    let mut completed = OpQueue::new();
    let mut first = None;
    {
        let mut l = Locked::new(slot);
        let st = l.state();
        st.queued = false;
        if st.free_pending {
            st.free_pending = false;
            drop(l);
            let table = &sched.task().table;
            table.release(table.index_of(slot));
        } else if how.is_run() {
            // The first completion runs inline below, the rest are
            // posted (kept apart: the usual case is exactly one).
            perform_io(sched.task(), st, |op| match first {
                None => first = Some(op),
                // SAFETY: performed and popped, live, on no queue.
                Some(_) => unsafe { completed.push(op) },
            });
        }
    }
    if !how.is_run() {
        return;
    }
    // From here the slot is not touched: a handler may close and free it.
    match first {
        Some(first) => {
            if !completed.is_empty() {
                sched.post_deferred_completions(&mut completed);
            }
            // SAFETY: `first` was performed, popped off its queue, and is
            // owned by `sched`; the scheduler counts its work as this
            // descriptor op's.
            unsafe { Operation::complete(first, owner, how) };
        }
        // No user op completed: make up for the work_finished the
        // scheduler makes for this op.
        // SAFETY: `how` came from this scheduler.
        None => unsafe { sched.compensating_work_started_in(how.here()) },
    }
}

/// Asio's `perform_io`: except, write, then read queue; each type whose
/// events fired may be tried speculatively again. Every op that completed
/// goes to `done`, in that order.
#[inline(always)]
fn perform_io(reactor: &Reactor, st: &mut State, mut done: impl FnMut(NonNull<Operation>)) {
    // Unrolled by hand: the compiler keeps the loop otherwise.
    perform_queue::<EXCEPT_OP>(reactor, st, &mut done);
    perform_queue::<WRITE_OP>(reactor, st, &mut done);
    perform_queue::<READ_OP>(reactor, st, &mut done);
}

/// `perform_io` for the queue of type `J`.
#[inline(always)]
fn perform_queue<const J: usize>(
    _reactor: &Reactor,
    st: &mut State,
    done: &mut impl FnMut(NonNull<Operation>),
) {
    let any = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    if st.ready_events & (OP_EVENTS[J] | any) == 0 {
        return;
    }
    st.try_speculative[J] = true;
    while let Some(op) = st.queues[J].front() {
        stat!(_reactor, op_attempts);
        // SAFETY: queued ops are live reactor ops; the slot is locked.
        let status = unsafe { ReactorOp::perform(op.cast(), st.fd) };
        if status == Status::NotDone {
            break;
        }
        st.queues[J].pop();
        done(op);
        if status == Status::DoneAndExhausted {
            st.exhausted(J);
            break;
        }
    }
}
