//! The backend contract: everything only a backend may use, and the trait
//! both backends implement.
//!
//! This is the one place where backends plug in, like Asio's `reactor`
//! typedef or mio's `sys` module. A backend (the epoll reactor, the
//! io_uring proactor) is two things:
//!
//! - the scheduler's [`Task`]: run once whenever the task sentinel reaches
//!   the front of the scheduler's queue (Asio's `task_operation_`), and
//!   interrupted when work arrives for a thread blocked inside it;
//! - a [`Backend`]: how each operation reaches the kernel and comes back.
//!   The user types (`TcpListener`, `TcpStream`, `UdpSocket`,
//!   `SteadyTimer`, `Strand`, `IoContext`, `Builder`) are written once, in
//!   the `pinion` facade, over this trait; a backend that drifts from it
//!   fails to compile, and the conformance suite instantiates every test
//!   for every backend.
//!
//! What a program could misuse into undefined behaviour or broken counts
//! is `unsafe` here: [`Task`] is an `unsafe trait` whose `run` only the
//! scheduler may call, and the scheduler's plumbing (operation slots,
//! queueing completions, counting work) consists of `unsafe fn`s on
//! [`Scheduler`] with their `# Safety` sections. A user never holds a
//! `Scheduler` of a context: `IoContext` keeps it private and has its own
//! user methods.
//!
//! # The rules every backend keeps
//!
//! - **Handlers run from `run()`**, on a thread running the context, never
//!   inside the initiating call.
//! - **Exactly once.** Every operation's handler runs once, or is dropped
//!   without running when the context is destroyed with it pending; its
//!   buffer always comes back (in the handler, or dropped with it).
//! - **Refusals hand everything back.** A full pool, a stale handle, a
//!   shut-down context: the initiating call returns `Err(Rejected)` with
//!   the handler (and buffer) and queues nothing. A full pool's error
//!   names the pool ([`Error::PoolFull`]).
//! - **Work.** An operation counts as outstanding work from start to
//!   completion, so `run()` returns when the last one completes.
//! - **Handles.** A [`Key`] names a descriptor (index and generation).
//!   Handles are `Copy` and `Send`: one thread may start an operation while
//!   another closes the descriptor and at once opens a new one, which takes
//!   the same slot, the same fd number and (io_uring) the same
//!   registered-file index. Under every interleaving, an operation started
//!   on a key runs on the descriptor the key named, or is refused at the
//!   call with `BadDescriptor` (handler and buffer handed back), or is
//!   aborted by the close (`OperationAborted`); it never runs on the
//!   successor, so no byte reaches a handler or a peer it was not meant
//!   for. Calls on the fd itself ([`with_fd`](Backend::with_fd): options,
//!   addresses, `shutdown`) run on the key's descriptor or answer
//!   `BadDescriptor`. The epoll reactor keeps this by checking the key and
//!   queueing (or performing) under the descriptor's lock, which `close`
//!   takes to retire the key before the fd is closed. The io_uring
//!   proactor, where the kernel looks a socket up only when it issues the
//!   SQE, checks the key and writes the SQE in one stretch under its SQ
//!   lock; `close` retires the key and queues its cancel under that lock,
//!   and tears the socket down only once the kernel's SQ head has passed
//!   the cancel. `tests/suite/race.rs` races starts against
//!   close-and-reopen on both.
//! - **Cancel and close.** `cancel` completes every pending operation of
//!   the descriptor with `OperationAborted` (or its real result if it
//!   finished first); `close` does the same, then frees the descriptor.
//! - **No allocation** after the backend is built, on any path.
//! - **Errors.** End of stream is `Eof` (a read of 0 bytes from a peer
//!   that closed), a reset `ConnectionReset`, a write to a closed peer
//!   `BrokenPipe` (never SIGPIPE), a refused connect `ConnectionRefused`,
//!   the fd limit on accept `TooManyOpenFiles` (the listener keeps
//!   working), a full descriptor table on accept `PoolFull(Descriptors)`
//!   with the connection left in the listen backlog.

use core::fmt;
#[cfg(target_os = "linux")]
use core::net::SocketAddr;
use core::ptr::NonNull;

#[cfg(target_os = "linux")]
use pinion_sync::SyncKit;

#[cfg(target_os = "linux")]
use crate::buf::{IoBuf, IoBufMut, IoBufs, IoBufsMut};
use crate::error::write_strs;
#[cfg(target_os = "linux")]
use crate::memory::Region;
#[cfg(target_os = "linux")]
use crate::pooled::{PooledBuf, ReadBufferCount};
#[cfg(target_os = "linux")]
use crate::timer::TimerService;
use crate::Error;
#[cfg(target_os = "linux")]
use crate::Result;

pub use crate::op::{CompleteFn, Invoke, OpResult, Operation};
pub use crate::pool::{emplace, OpSlot, SlotPool, SlotStorage};
pub use crate::queue::OpQueue;
pub use crate::scheduler::{Here, Scheduler};
pub use crate::slab::Key;
#[cfg(target_os = "linux")]
pub use pinion_sys::addr::SockAddr;
#[cfg(target_os = "linux")]
pub use pinion_sys::Fd;

/// How long [`Task::run`] may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Return at once with whatever is ready (Asio's `usec == 0`).
    Poll,
    /// Block until something is ready or [`Task::interrupt`] is called.
    Forever,
    /// Block at most until this monotonic time (ns of [`Task::now_ns`]).
    Until(u64),
}

/// A backend the scheduler drives: a reactor (epoll) or a proactor
/// (io_uring).
///
/// # Safety
/// Implementors rely on the scheduler's guarantees, stated on each method,
/// and keep the rules in the [module docs](self). `run` touches runner-only
/// state without locks because the scheduler calls it from one thread at a
/// time.
pub unsafe trait Task: Send + Sync + 'static {
    /// `false` only for [`NoTask`]: the scheduler then keeps no task
    /// sentinel and idle threads simply wait for posted work.
    const PRESENT: bool = true;

    /// `false` for a backend that never queues I/O continuations
    /// ([`Scheduler::post_continuation_in`](crate::Scheduler::post_continuation_in)):
    /// the run loop then leaves out its per-operation test for them
    /// (io_uring, whose completions all come from the ring: about five
    /// instructions per operation, ten per echoed message).
    const CONTINUATIONS: bool = true;

    /// Waits per `wait` for readiness or completions and pushes the
    /// operations that are ready onto `ops`, which the scheduler splices
    /// into its queue as one batch.
    ///
    /// # Safety
    /// Only the scheduler calls it, from one thread at a time (the thread
    /// that took the task sentinel), with no other reference to `ops`.
    unsafe fn run(&self, wait: Wait, ops: &mut OpQueue);

    /// Makes a `run` blocked in another thread return soon. Called with the
    /// scheduler's mutex held, at most once per blocking `run`; harmless at
    /// any other time.
    fn interrupt(&self);

    /// Hands every operation the backend still holds to `ops` for
    /// destruction, once no operation can be in the kernel any more, and
    /// lets go of every kernel object a program opened through it: every
    /// descriptor is closed (its key retired, so a handle to it answers
    /// `BadDescriptor` and never reaches a reused slot), the descriptor
    /// and timer tables take no new entry (`PoolFull`, which the facade
    /// reports as `ContextShutDown`), every timer is retired. The
    /// backend's own objects (its epoll or ring fd, interrupter, timerfd)
    /// may stay until it is dropped, so that late calls stay memory-safe.
    ///
    /// # Safety
    /// Only the scheduler calls it, at shutdown, when no thread runs the
    /// context. Other threads may still start or close operations on it
    /// meanwhile (`IoContext::shutdown` on a shared context): each is
    /// refused, or handed over here. It may be called again (at drop),
    /// and then finds nothing left.
    unsafe fn shutdown(&self, ops: &mut OpQueue);

    /// The monotonic clock, in nanoseconds, that deadlines refer to.
    fn now_ns(&self) -> u64;

    /// `true` while the backend has a teardown of its own to finish that
    /// holds a kernel object (io_uring: a close parked until the kernel has
    /// consumed its cancel, whose socket is still open). When work runs
    /// out meanwhile the scheduler does not stop: it keeps running the
    /// task (which must then not block for long) and stops once this is
    /// `false`, so `run` never returns with a socket half closed. Read
    /// only when the work count is zero: off the per-operation path.
    fn busy(&self) -> bool {
        false
    }
}

/// The task of a context without I/O: posted handlers, strands and work
/// guards only. Idle threads sleep on the scheduler's wake-up event.
///
/// Its clock is `CLOCK_MONOTONIC` on Linux. On targets with no clock it
/// reads `u64::MAX`, so every deadline has passed and `run_for` behaves
/// like `poll`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTask;

// SAFETY: holds nothing; every method is a no-op.
unsafe impl Task for NoTask {
    const PRESENT: bool = false;
    unsafe fn run(&self, _: Wait, _: &mut OpQueue) {}
    fn interrupt(&self) {}
    unsafe fn shutdown(&self, _: &mut OpQueue) {}
    fn now_ns(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            pinion_sync::monotonic_now_ns()
        }
        #[cfg(not(target_os = "linux"))]
        {
            u64::MAX
        }
    }
}

#[cfg(target_os = "linux")]
/// The scheduler of a context on backend `B`.
pub type Sched<B> = Scheduler<B, <B as Backend>::Kit>;

#[cfg(target_os = "linux")]
/// How a backend hands an operation's result to whoever started it.
///
/// The facade's user types wrap the user's closure in a small struct that
/// implements this (turning a [`Key`] into a `TcpStream`, say); a refused
/// operation hands the struct back, and the facade takes the closure out
/// of it again, so a refusal always returns the user's own handler.
/// `sched` is the scheduler the operation ran on.
pub trait Handler<B: Backend, T>: OpHooks + Send {
    /// Delivers the result. Called once, from `run()`.
    fn call(self, sched: &Sched<B>, result: T);

    /// [`call`](Self::call) from a completion that knows its run thread:
    /// `here` is the [`Invoke::Run`] the scheduler `sched` passed it, so
    /// a handler that needs the thread does not look it up again.
    #[inline(always)]
    fn call_here(self, sched: &Sched<B>, here: Option<Here<'_>>, result: T)
    where
        Self: Sized,
    {
        let _ = here;
        self.call(sched, result)
    }
}

/// Names one started operation for [`Backend::cancel_op`]: what a
/// backend reports to [`OpHooks::bind`]. The operation's address, and a
/// small tag of the backend's own in its low bits (operation slots are
/// [`OP_SLOT_ALIGN`](crate::pool::OP_SLOT_ALIGN)-aligned): how the
/// backend named the operation to the kernel, where that differs by kind
/// (io_uring's tagged `user_data`), so that a cancel reaches every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(NonNull<Operation>);

// SAFETY: an address, only used as a name (by `cancel_op`, under its
// contract).
unsafe impl Send for OpId {}
// SAFETY: as above.
unsafe impl Sync for OpId {}

impl OpId {
    /// Tags are below this.
    pub const TAGS: usize = crate::pool::OP_SLOT_ALIGN;

    /// The id of the operation at `op`, with tag 0.
    pub fn new(op: NonNull<Operation>) -> Self {
        OpId(op)
    }

    /// The id of the operation at `op` (in an operation slot), with the
    /// backend's `tag`.
    ///
    /// # Panics
    /// If `tag` is not below [`TAGS`](Self::TAGS); in debug builds also if
    /// `op` is not aligned as operation slots are.
    pub fn tagged(op: NonNull<Operation>, tag: usize) -> Self {
        assert!(tag < Self::TAGS, "pinion: an OpId tag is below OpId::TAGS");
        debug_assert_eq!(op.as_ptr() as usize % Self::TAGS, 0);
        // The low bits of an aligned address are zero: the tag fills them
        // without leaving the operation's memory (provenance kept).
        OpId(op.map_addr(|a| a | tag))
    }

    /// The operation's address.
    pub fn as_ptr(self) -> NonNull<Operation> {
        self.0.map_addr(|a| {
            // SAFETY: an operation's address is at least `TAGS` (aligned,
            // not null), so clearing the tag leaves it non-zero.
            unsafe { core::num::NonZeroUsize::new_unchecked(a.get() & !(Self::TAGS - 1)) }
        })
    }

    /// The backend's tag (0 for [`new`](Self::new)).
    pub fn tag(self) -> usize {
        self.0.as_ptr() as usize & (Self::TAGS - 1)
    }
}

/// What a backend tells a handler about its operation's life, for
/// cancelling one operation (futures dropped mid-flight). Both default to
/// nothing, which costs nothing.
pub trait OpHooks {
    /// The operation was started and is `op` until [`completing`](Self::completing)
    /// is called; called before it becomes visible to any other
    /// thread.
    #[inline(always)]
    fn bind(&mut self, _op: OpId) {}

    /// The operation is about to give its slot back: from here on its
    /// `OpId` names nothing. Called once, before the slot is freed and
    /// before [`Handler::call`] (or the handler's drop, when destroyed).
    #[inline(always)]
    fn completing(&self) {}
}

/// What a descriptor will be used for, so a backend can set up what that
/// use needs (a listener's accept state, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescKind {
    /// A listening stream socket.
    Listener,
    /// A connected (or connecting) stream socket.
    Stream,
    /// A datagram socket.
    Datagram,
    /// Any other pollable descriptor (pipe, tty, eventfd, signalfd, ...),
    /// read and written with `read(2)`/`write(2)` after a readiness wait.
    Other,
}

/// The sizes every backend is built with: each an exact cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Operation slots (pending operations, posted handlers, strands).
    pub ops: usize,
    /// Descriptors (sockets) open at once.
    pub descriptors: usize,
    /// Timer objects open at once.
    pub timers: usize,
    /// Threads expected to run the context (Asio's concurrency hint).
    pub concurrency_hint: usize,
    /// Read buffers for pooled reads: (count, bytes each); none if 0.
    pub read_buffers: (usize, usize),
    /// Task slots: (count, bytes of future each); none if 0. The
    /// scheduler's, not the backend's.
    pub tasks: (usize, usize),
}

/// Where an initiating call starts: the scheduler the backend is the task
/// of (`sched.task()` is the backend), and the key of the descriptor.
#[cfg(target_os = "linux")]
pub struct At<'a, B: Backend> {
    /// The scheduler.
    pub sched: &'a Sched<B>,
    /// The descriptor.
    pub key: Key,
}

#[cfg(target_os = "linux")]
impl<B: Backend> Clone for At<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
#[cfg(target_os = "linux")]
impl<B: Backend> Copy for At<'_, B> {}

/// What an initiating call returns: started, or refused with what the
/// caller gave (handler, buffer) in the [`Rejected`](crate::Rejected).
pub type Started<T> = core::result::Result<(), crate::Rejected<T>>;

/// Defines a named bound for a handler of one result type: a subtrait of
/// [`Handler`] with a blanket impl, so signatures stay short.
macro_rules! handler_alias {
    ($(#[$m:meta])* $name:ident<$($p:ident),*> = $t:ty) => {
        $(#[$m])*
        #[cfg(target_os = "linux")]
        pub trait $name<B: Backend, $($p),*>: Handler<B, $t> {}
        #[cfg(target_os = "linux")]
        impl<B: Backend, $($p,)* H: Handler<B, $t>> $name<B, $($p),*> for H {}
    };
}

handler_alias!(
    /// A read or write handler: the byte count and the buffer back.
    IoHandler<Buf> = (Result<usize>, Buf)
);
handler_alias!(
    /// A datagram receive's handler: length and sender (an address of
    /// family `A`), and the buffer.
    RecvHandler<Buf, A> = (Result<(usize, A)>, Buf)
);
handler_alias!(
    /// An accept's handler: the new descriptor's key and the peer.
    AcceptHandler<> = Result<(Key, SocketAddr)>
);
handler_alias!(
    /// A connect's handler.
    ConnectHandler<> = Result<()>
);
handler_alias!(
    /// A readiness wait's handler: `Ok(())` once the descriptor is ready.
    WaitHandler<> = Result<()>
);

/// What a readiness wait ([`Backend::wait`]) waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Data to read, end of stream, or an error.
    Readable,
    /// Room to write, or an error.
    Writable,
}

/// A pooled read's handler: the filled buffer, borrowing the read pool.
#[cfg(target_os = "linux")]
pub trait PooledHandler<B: Backend>: for<'p> Handler<B, Result<PooledBuf<'p>>> {}
#[cfg(target_os = "linux")]
impl<B: Backend, H: for<'p> Handler<B, Result<PooledBuf<'p>>>> PooledHandler<B> for H {}

/// The operations both backends provide, written once in the facade's user
/// types over this trait.
///
/// Every initiating function takes an [`At`] (the scheduler and a key from
/// [`register`](Self::register)) and a [`Handler`], and keeps the rules in
/// the [module docs](self). A read is only ever given a buffer with room
/// (the facade refuses one without, with `BufferFull`), so a read of 0
/// bytes always means end of stream.
///
/// # Safety
/// Implementors keep those rules, in particular the handle rule (an
/// operation never reaches a successor of the descriptor its key named)
/// and the buffer rule (a buffer the kernel may still write is not handed
/// back, dropped or freed before the kernel is done with it).
#[cfg(target_os = "linux")]
pub unsafe trait Backend: Task + Sized {
    /// The mutex and wake-up event the scheduler is built on: shareable,
    /// since any thread may run a context.
    type Kit: SyncKit<Mutex: Send + Sync, Event: Send + Sync>;
    /// The backend's own build options (io_uring: ring sizes, registered
    /// files, ...); empty for backends with none.
    type Options: Clone + fmt::Debug + Default + Send + Sync + 'static;
    /// The backend's counters (`stats` feature); zeros without it.
    type Stats: Copy + fmt::Debug + Default + PartialEq;
    /// The backend's own fixed memory (descriptor table, timer objects,
    /// read buffers): boxed once by [`boxed_parts`](Self::boxed_parts), or
    /// made from `static` storage by a backend that supports no_std.
    type Parts;
    /// The backend's name, for messages: `"epoll"`, `"io_uring"`.
    const NAME: &'static str;
    /// Sockets for this backend are blocking (io_uring waits in the
    /// kernel; a non-blocking socket would make it return `EAGAIN`) or
    /// non-blocking (epoll).
    const BLOCKING_SOCKETS: bool;

    /// Boxes this backend's parts for `config`: the one allocation a
    /// context makes besides its operation slots. `None` when the backend
    /// was built without allocation (its `std` feature off).
    fn boxed_parts(config: &Config) -> Option<Self::Parts>;

    /// Builds the backend for a context of `config` on `parts`, setting up
    /// everything it will ever use (kernel objects included). A size the
    /// backend cannot honour exactly is `BuildError::Invalid`.
    fn build(
        config: &Config, options: &Self::Options, parts: Self::Parts,
    ) -> core::result::Result<Self, BuildError>;

    /// The counters so far.
    fn stats(&self) -> Self::Stats;

    /// The context's timers.
    fn timers(&self) -> &TimerService<<Self::Kit as SyncKit>::Mutex>;

    /// The earliest timer deadline changed to `earliest` (`None`: no timer
    /// pending). Called under the timer lock, so calls come in order.
    fn timers_changed(&self, earliest: Option<u64>);

    /// Free and total buffers of the read pool, if the context has one.
    fn read_buffers(&self) -> Option<ReadBufferCount>;

    /// Descriptors open now (closed ones the kernel still holds included).
    fn descriptors_in_use(&self) -> usize;

    /// Hands `out` one [`Region`] per pool of this backend's fixed memory
    /// (descriptor table, timer objects and heap, read buffers, rings),
    /// for the memory report and for committing and locking the memory
    /// at build. The scheduler lists its own pools
    /// ([`Scheduler::memory`]).
    fn memory(&self, out: &mut dyn FnMut(Region));

    /// Registers `fd` (a socket of `kind`) and returns its key. On error
    /// the fd is closed; a full table is `PoolFull(Descriptors)`.
    fn register(sched: &Sched<Self>, fd: Fd, kind: DescKind) -> crate::Result<Key>;

    /// Completes every pending operation of the descriptor with
    /// `OperationAborted`.
    fn cancel(at: At<'_, Self>) -> crate::Result<()>;

    /// Cancels the one operation `op` on the descriptor: it completes with
    /// `OperationAborted`, or with its result if it finished first. A
    /// no-op when it is already completing or the descriptor is closed.
    /// Every operation that reports itself to [`OpHooks::bind`] can be
    /// cancelled so: reads (plain, vectored, pooled), writes, accepts,
    /// connects, readiness waits and datagrams.
    ///
    /// # Safety
    /// `op` was reported to [`OpHooks::bind`] for an operation started on
    /// `at.key`, whose [`OpHooks::completing`] has not run yet and does not
    /// run until this returns (the caller holds it off), so that `op`
    /// still names that operation.
    unsafe fn cancel_op(at: At<'_, Self>, op: OpId);

    /// Cancels, closes the fd and frees the descriptor; the key and every
    /// copy of it are stale from here on.
    fn close(at: At<'_, Self>) -> crate::Result<()>;

    /// Runs `f` on the descriptor's fd, which no close can free (or its
    /// number reuse) while `f` runs.
    fn with_fd<R>(&self, key: Key, f: impl FnOnce(i32) -> crate::Result<R>) -> crate::Result<R>;

    /// Reads at most `buf.spare()` bytes into `buf`'s room (`Eof` for a
    /// peer that closed).
    fn read_some<T: IoBufMut, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)>;

    /// Writes at most `buf.bytes_len()` bytes of `buf`.
    fn write_some<T: IoBuf, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)>;

    /// Whether [`write_now`](Self::write_now) can ever complete anything
    /// (callers skip it, and what it costs, otherwise).
    const COMPLETES_NOW: bool = false;

    /// Writes at once if this backend can do so without an operation: the
    /// backend's own first attempt of a [`write_some`](Self::write_some)
    /// started now (epoll: no write waits on the descriptor and the last
    /// one did not find the socket full). `None` when nothing was written
    /// (it would block, it was not tried, or the key is stale): start
    /// `write_some`, which answers as usual. Futures use it to complete in
    /// the poll that starts them, as tokio's do. (Reads are not tried so:
    /// in request/response traffic the read after a write finds nothing.)
    #[inline(always)]
    fn write_now<T: IoBuf>(at: At<'_, Self>, buf: &T) -> Option<crate::Result<usize>> {
        let _ = (at, buf);
        None
    }

    /// Reads at most `bufs.total_spare()` bytes into the room of several
    /// buffers, filling each before the next (a scatter read: `recvmsg`
    /// with an iovec per buffer; `Eof` for a peer that closed).
    fn read_some_vectored<T: IoBufsMut, H: IoHandler<Self, T>>(
        at: At<'_, Self>, bufs: T, h: H,
    ) -> Started<(T, H)>;

    /// Writes at most `bufs.total_len()` bytes of several buffers, in
    /// order (a gather write: `sendmsg`, without SIGPIPE).
    fn write_some_vectored<T: IoBufs, H: IoHandler<Self, T>>(
        at: At<'_, Self>, bufs: T, h: H,
    ) -> Started<(T, H)>;

    /// Reads into a buffer of the read pool taken only when data arrives.
    fn read_pooled<H: PooledHandler<Self>>(at: At<'_, Self>, h: H) -> Started<H>;

    /// Accepts one connection, registered in the table before the handler
    /// gets its key.
    fn accept<H: AcceptHandler<Self>>(at: At<'_, Self>, h: H) -> Started<H>;

    /// Connects the (registered, unconnected) socket to `addr`.
    fn connect<H: ConnectHandler<Self>>(at: At<'_, Self>, addr: SocketAddr, h: H) -> Started<H>;

    /// Completes when the descriptor is ready for `what` (Asio's
    /// `async_wait`): nothing is read or written, so a wait can be given up
    /// (cancelled) without losing data.
    fn wait<H: WaitHandler<Self>>(at: At<'_, Self>, what: Readiness, h: H) -> Started<H>;

    /// Sends `buf` as one datagram to `to` (an IP or a Unix-domain
    /// address; the operation keeps its kernel form in its slot).
    fn send_to<A: SockAddr, T: IoBuf, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, to: A, h: H,
    ) -> Started<(T, H)>;

    /// Receives one datagram into `buf`'s room, with its sender, an
    /// address of family `A` (`AFNOSUPPORT` if the socket is of another).
    fn recv_from<A: SockAddr, T: IoBufMut, H: RecvHandler<Self, T, A>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)>;
}

/// Why a context could not be built. Its `Display` says what to change.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A size given to the builder cannot be honoured by this backend.
    Invalid {
        /// The builder knob, e.g. `"descriptors"`.
        knob: &'static str,
        /// Why, e.g. `"at most 2147483646 on io_uring (registered-file indices are 31 bits)"`.
        why: &'static str,
    },
    /// The kernel has no io_uring (`io_uring_setup` gave `ENOSYS`).
    NotSupported,
    /// io_uring is switched off: `/proc/sys/kernel/io_uring_disabled` holds
    /// this value (1: only for the `io_uring_group`, 2: for everyone).
    Disabled(i32),
    /// `io_uring_setup` was refused (`EPERM`): a seccomp filter or a
    /// container policy.
    PermissionDenied,
    /// The kernel lacks something this backend needs.
    KernelTooOld(&'static str),
    /// The ring (or other pinned memory) is over `RLIMIT_MEMLOCK`.
    Memlock {
        /// Bytes the ring pins.
        need: usize,
        /// The soft `RLIMIT_MEMLOCK`, in bytes.
        have: usize,
    },
    /// Memory could not be reserved (`ENOMEM`).
    OutOfMemory,
    /// `Builder::lock_memory` could not lock the context's pools: they
    /// need more than `RLIMIT_MEMLOCK` allows.
    MemoryLock {
        /// Bytes the pools span, in whole pages.
        need: usize,
        /// The soft `RLIMIT_MEMLOCK`, in bytes (less whatever the process
        /// had locked already is what was left).
        allowed: usize,
    },
    /// Another system call failed while setting up.
    Os {
        /// What was being set up, e.g. `"epoll_create1"`.
        what: &'static str,
        /// The error.
        error: Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Invalid { knob, why } => write_strs(
                f,
                &["Builder::", knob, " cannot be honoured: ", why],
            ),
            BuildError::NotSupported => f.write_str(
                "io_uring is not available in this kernel (io_uring_setup: ENOSYS), or an emulator \
                 such as qemu-user does not pass it through; use the epoll backend (pinion feature \
                 `epoll`), a kernel built with CONFIG_IO_URING, or run natively",
            ),
            BuildError::Disabled(v) => write!(
                f,
                "io_uring is disabled: kernel.io_uring_disabled = {v}; \
                 run `sysctl kernel.io_uring_disabled=0`, or use the epoll backend"
            ),
            BuildError::PermissionDenied => f.write_str(
                "io_uring_setup was refused (EPERM), likely by a seccomp or container policy; \
                 allow io_uring_setup/io_uring_enter/io_uring_register, or use the epoll backend",
            ),
            BuildError::KernelTooOld(what) => write_strs(
                f,
                &[
                    "this kernel's io_uring lacks ",
                    what,
                    "; pinion's io_uring backend needs Linux 5.19 or later (or use the epoll \
                     backend)",
                ],
            ),
            BuildError::Memlock { need, have } => write!(
                f,
                "RLIMIT_MEMLOCK too small for the ring: need {need} bytes, have {have}; \
                 raise it (ulimit -l, or LimitMEMLOCK= in a systemd unit) or lower \
                 Builder::sq_entries/cq_entries"
            ),
            BuildError::OutOfMemory => f.write_str(
                "out of memory reserving the context (ENOMEM): lower the Builder's pool sizes",
            ),
            BuildError::MemoryLock { need, allowed } => write!(
                f,
                "Builder::lock_memory: need {need} bytes locked, RLIMIT_MEMLOCK allows {allowed}: \
                 raise it with ulimit -l / LimitMEMLOCK= in the systemd unit, or drop lock_memory"
            ),
            BuildError::Os { what, error } => {
                write_strs(f, &[what, " failed: "])?;
                fmt::Display::fmt(error, f)
            }
        }
    }
}

impl core::error::Error for BuildError {}
