//! pinion-uring: pinion's proactor on io_uring.
//!
//! The same operation contract as the epoll reactor (`pinion-epoll`),
//! realised the way Asio's `io_uring_service` does it: every operation
//! becomes one SQE whose `user_data` is the operation itself, a batch of
//! SQEs is submitted by the same `io_uring_enter` that waits, and every
//! CQE found is handed to the scheduler's queue in one batch.
//!
//! - [`proactor`] is the scheduler task: ring, submission with
//!   back-pressure, reaping, interrupter (an eventfd read kept armed),
//!   timers, cancellation, shutdown that drains the kernel before any
//!   memory is freed. Its docs state the buffer-lifetime rule this crate
//!   keeps for every operation.
//! - [`tcp`] has [`TcpListener`] (multishot accept when the kernel has it)
//!   and [`TcpStream`] (`IORING_OP_CONNECT`, `RECV`, `SEND`).
//! - [`udp`] has [`UdpSocket`] over `SENDMSG`/`RECVMSG`, `msghdr` in the
//!   operation's slot.
//! - [`timer`] has [`SteadyTimer`].
//! - [`bufs`] has pooled reads ([`TcpStream::async_read_pooled`]): the
//!   read pool as a provided buffer ring, from which the kernel picks a
//!   buffer only when data arrives, or its software fallback.
//! - `sys` holds the non-io_uring system calls (sockets, options, addresses).
//! - `ring` is pinion's own view of the SQ and CQ rings (SQEs written in
//!   place, CQEs read in place).
//!
//! Memory is fixed when [`Builder::build`] returns: operation slots,
//! descriptor table, timer queue, read buffers and the ring itself (its
//! pinned size is [`RingInfo::pinned_bytes`]). Starting, performing and
//! completing an operation allocates nothing.
//!
//! Kernel: Linux 5.19 or later (cancel by fd, multishot accept, submit-all);
//! older kernels, and kernels with io_uring disabled, get a
//! [`BuildError`] from `build()` that says what to do.
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

use core::fmt;
use core::ops::Deref;

pub mod bufs;
pub mod proactor;
mod ring;
mod sys;
pub mod tcp;
pub mod timer;
pub mod udp;

pub use pinion_core::pooled::{PooledBuf, ReadBufferCount};
pub use pinion_sync::FutexKit;
pub use proactor::{Proactor, RingInfo, Stats};
pub use tcp::{TcpListener, TcpStream};
pub use timer::SteadyTimer;
pub use udp::UdpSocket;

use pinion_core::{OpSlot, Storage};

/// The scheduler behind [`IoContext`].
pub type Scheduler = pinion_core::Scheduler<Proactor, FutexKit>;
/// A strand on an [`IoContext`].
pub type Strand<'c> = pinion_core::Strand<'c, Proactor, FutexKit>;

/// Which half of a connection [`TcpStream::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// No more reads.
    Read,
    /// No more writes (the peer reads end-of-file).
    Write,
    /// Both.
    Both,
}

/// The context: the scheduler, whose task is the io_uring proactor.
///
/// Dropping it cancels every operation still in the kernel, waits for
/// their completions, destroys their handlers without running them, then
/// closes every socket still open and the ring.
#[repr(transparent)]
pub struct IoContext {
    sched: Scheduler,
}

impl Deref for IoContext {
    type Target = Scheduler;
    #[inline]
    fn deref(&self) -> &Scheduler {
        &self.sched
    }
}

impl IoContext {
    /// Sizes, pinned memory and features of the ring.
    pub fn ring_info(&self) -> RingInfo {
        self.sched.task().ring_info()
    }

    /// Bytes of locked kernel memory the ring pins (see [`RingInfo`]).
    pub fn pinned_bytes(&self) -> usize {
        self.ring_info().pinned_bytes
    }

    /// Proactor counters.
    #[cfg(feature = "stats")]
    pub fn stats(&self) -> Stats {
        self.sched.task().stats()
    }

    /// Free and total buffers of the read pool
    /// ([`Builder::read_buffers`]); `None` without one.
    pub fn read_buffers(&self) -> Option<ReadBufferCount> {
        self.proactor().read_pool().map(|p| ReadBufferCount {
            free: p.free(),
            total: p.count(),
            size: p.size(),
        })
    }

    /// Sockets currently open in the descriptor table.
    pub fn descriptors_in_use(&self) -> usize {
        self.sched.task().descs.in_use()
    }

    /// The context an operation's `owner` pointer names.
    ///
    /// # Safety
    /// `owner` is the scheduler of a live `IoContext` that outlives `'c`.
    #[inline]
    pub(crate) unsafe fn from_owner<'c>(owner: *const ()) -> &'c IoContext {
        // SAFETY: `IoContext` is a transparent wrapper of `Scheduler`,
        // and the caller vouches for the pointer and the lifetime.
        unsafe { &*(owner as *const IoContext) }
    }

    #[inline]
    pub(crate) fn proactor(&self) -> &Proactor {
        self.sched.task()
    }
}

/// Why [`Builder::build`] failed. Converts into [`pinion_core::Error`]
/// (as `Os(errno)` or `OperationNotSupported`) for `?`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The kernel has no io_uring (`io_uring_setup` gave `ENOSYS`).
    NotSupported,
    /// io_uring is switched off: `/proc/sys/kernel/io_uring_disabled` holds
    /// this value (1: only for the `io_uring_group`, 2: for everyone).
    Disabled(i32),
    /// `io_uring_setup` was refused (`EPERM`): a seccomp filter or a
    /// container policy.
    PermissionDenied,
    /// The kernel lacks something pinion needs.
    KernelTooOld(&'static str),
    /// The ring's memory could not be locked (`ENOMEM`).
    OutOfMemory,
    /// Another system error while setting up.
    Os(pinion_core::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NotSupported => f.write_str(
                "io_uring is not available in this kernel (io_uring_setup: ENOSYS); \
                 use the epoll backend (pinion feature `epoll`) or a kernel built with CONFIG_IO_URING",
            ),
            BuildError::Disabled(v) => write!(
                f,
                "io_uring is disabled (/proc/sys/kernel/io_uring_disabled = {v}); \
                 set it to 0 (sysctl kernel.io_uring_disabled=0), or use the epoll backend"
            ),
            BuildError::PermissionDenied => f.write_str(
                "io_uring_setup was refused (EPERM), likely by a seccomp or container policy; \
                 allow io_uring_setup/io_uring_enter/io_uring_register, or use the epoll backend",
            ),
            BuildError::KernelTooOld(what) => write!(
                f,
                "this kernel's io_uring lacks {what}; pinion-uring needs Linux 5.19 or later \
                 (or use the epoll backend)"
            ),
            BuildError::OutOfMemory => f.write_str(
                "the io_uring ring could not be allocated or locked (ENOMEM); lower \
                 Builder::sq_entries/cq_entries or raise RLIMIT_MEMLOCK (ulimit -l)",
            ),
            BuildError::Os(e) => write!(f, "setting up the io_uring context failed: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<BuildError> for pinion_core::Error {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::NotSupported => pinion_core::Error::Os(libc::ENOSYS),
            BuildError::Disabled(_) | BuildError::PermissionDenied => {
                pinion_core::Error::Os(libc::EPERM)
            }
            BuildError::KernelTooOld(_) => pinion_core::Error::OperationNotSupported,
            BuildError::OutOfMemory => pinion_core::Error::Os(libc::ENOMEM),
            BuildError::Os(e) => e,
        }
    }
}

/// Sizes and switches for an [`IoContext`].
///
/// Defaults: 1024 operation slots, 1024 descriptors, 1024 timer waits,
/// concurrency hint 1, 256 SQ entries, CQ twice the SQ, multishot accept
/// and registered files on (when the kernel has them), no SQPOLL, no read
/// buffers (a provided buffer ring once there are some).
#[derive(Clone, Debug)]
pub struct Builder {
    ops: usize,
    descriptors: usize,
    timers: usize,
    concurrency_hint: usize,
    sq_entries: u32,
    cq_entries: Option<u32>,
    multishot_accept: bool,
    sqpoll_idle_ms: Option<u32>,
    registered_files: bool,
    read_buffers: (usize, usize),
    buffer_ring: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The defaults.
    pub fn new() -> Self {
        Builder {
            ops: 1024,
            descriptors: 1024,
            timers: 1024,
            concurrency_hint: 1,
            sq_entries: 256,
            cq_entries: None,
            multishot_accept: true,
            sqpoll_idle_ms: None,
            registered_files: true,
            read_buffers: (0, 0),
            buffer_ring: true,
        }
    }

    /// Operation slots (`pinion_core::OpSlot`): operations in flight at
    /// once, posted handlers and strands included.
    pub fn ops(mut self, n: usize) -> Self {
        self.ops = n;
        self
    }

    /// Sockets open at once.
    pub fn descriptors(mut self, n: usize) -> Self {
        self.descriptors = n;
        self
    }

    /// Pending timer waits (and timer objects) at once.
    pub fn timers(mut self, n: usize) -> Self {
        self.timers = n;
        self
    }

    /// 1 promises that one thread runs the context.
    pub fn concurrency_hint(mut self, n: usize) -> Self {
        self.concurrency_hint = n;
        self
    }

    /// Submission queue entries (rounded up to a power of two by the
    /// kernel). A full SQ is submitted and refilled, never an error, so
    /// this trades pinned memory against `io_uring_enter` calls.
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.sq_entries = n;
        self
    }

    /// Completion queue entries (at least `sq_entries`; default twice).
    /// Completions beyond it wait in the kernel (`IORING_FEAT_NODROP`).
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.cq_entries = Some(n);
        self
    }

    /// Use one multishot accept per listener (default on; Linux 5.19).
    /// Off: one `IORING_OP_ACCEPT` per `async_accept`.
    pub fn multishot_accept(mut self, on: bool) -> Self {
        self.multishot_accept = on;
        self
    }

    /// Register every socket with the ring (default on): a sparse
    /// registered-file table as large as the descriptor table, each socket
    /// installed at its descriptor index when it opens and removed when it
    /// closes (one `io_uring_register` each), and SQEs naming it by index,
    /// which spares the kernel a file-table lookup per operation. If the
    /// kernel refuses the table, sockets are named by fd;
    /// [`RingInfo::registered_files`] says which happened.
    pub fn registered_files(mut self, on: bool) -> Self {
        self.registered_files = on;
        self
    }

    /// A pool of `count` read buffers of `size` bytes (at least 16) for
    /// [`TcpStream::async_read_pooled`]; none by default. Reserved by
    /// [`build`](Self::build) and, unless [`buffer_ring`](Self::buffer_ring)
    /// says otherwise, registered as a provided buffer ring (see [`bufs`]).
    pub fn read_buffers(mut self, count: usize, size: usize) -> Self {
        self.read_buffers = (count, size);
        self
    }

    /// Serve the read buffers by a provided buffer ring (default on;
    /// Linux 5.19): a waiting pooled read holds no buffer. Off, or if the
    /// kernel refuses the ring (or more than 32768 buffers were asked
    /// for), they are a software pool and a pooled read holds its buffer
    /// from its start; [`RingInfo::buffer_ring`] says which is in use.
    pub fn buffer_ring(mut self, on: bool) -> Self {
        self.buffer_ring = on;
        self
    }

    /// Let a kernel thread poll the SQ (`IORING_SETUP_SQPOLL`), idling
    /// after `idle_ms`. Falls back to a plain ring if refused.
    pub fn sqpoll(mut self, idle_ms: Option<u32>) -> Self {
        self.sqpoll_idle_ms = idle_ms;
        self
    }

    /// Sets up the ring and boxes every pool: the last allocation this
    /// context makes.
    pub fn build(self) -> Result<IoContext, BuildError> {
        use proactor::SetupError;
        let cfg = proactor::Config {
            sq_entries: self.sq_entries,
            cq_entries: self.cq_entries,
            descriptors: self.descriptors,
            timers: self.timers,
            multishot_accept: self.multishot_accept,
            sqpoll_idle_ms: self.sqpoll_idle_ms,
            registered_files: self.registered_files,
            read_buffers: self.read_buffers,
            buffer_ring: self.buffer_ring,
        };
        let task = Proactor::new(&cfg).map_err(|e| match e {
            SetupError::Setup(libc::ENOSYS) => BuildError::NotSupported,
            SetupError::Setup(libc::EPERM) => BuildError::PermissionDenied,
            SetupError::Setup(libc::ENOMEM) => BuildError::OutOfMemory,
            SetupError::Setup(errno) => BuildError::Os(pinion_core::Error::from_errno(errno)),
            SetupError::Disabled(v) => BuildError::Disabled(v),
            SetupError::Missing(what) => BuildError::KernelTooOld(what),
            SetupError::Os(e) => BuildError::Os(e),
        })?;
        let slots = Storage::boxed_with(self.ops.max(1), || OpSlot::EMPTY);
        Ok(IoContext {
            sched: Scheduler::new(task, slots, self.concurrency_hint),
        })
    }
}
