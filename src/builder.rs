//! Sizing and building an [`IoContext`].

use pinion_core::backend::{Backend, BuildError, Config, Sched};
use pinion_core::task::TaskStorage;
use pinion_core::{OpSlot, Storage};

use crate::context::IoContext;
use crate::memory;

/// Sizes and builds an [`IoContext`]. Every size is an exact cap on every
/// backend: a full pool is an error naming the pool
/// ([`Error::PoolFull`](crate::Error::PoolFull)), and a size a backend
/// cannot honour is a [`BuildError`] that says which and why.
///
/// Defaults: 1024 operation slots, 1024 descriptors, 1024 timers, one
/// thread (concurrency hint 1), no read buffers, no task slots, memory
/// committed as it is touched and not locked, the backend's default
/// options.
///
/// ```
/// let ctx = pinion::Builder::new()
///     .ops(256)
///     .descriptors(64)
///     .timers(16)
///     .build()
///     .unwrap();
/// assert_eq!(ctx.ops_in_use(), (0, 256));
/// ```
#[derive(Clone, Debug)]
pub struct Builder<B: Backend> {
    config: Config,
    options: B::Options,
    commit: bool,
    lock: bool,
}

impl<B: Backend> Default for Builder<B> {
    fn default() -> Self {
        Builder {
            config: Config {
                ops: 1024,
                descriptors: 1024,
                timers: 1024,
                concurrency_hint: 1,
                read_buffers: (0, 0),
                tasks: (0, 0),
            },
            options: B::Options::default(),
            commit: false,
            lock: false,
        }
    }
}

impl<B: Backend> Builder<B> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Operation slots: every pending operation, posted handler and strand
    /// takes one (`PoolFull(Ops)` when all are taken).
    pub fn ops(mut self, n: usize) -> Self {
        self.config.ops = n;
        self
    }

    /// Descriptors (sockets) open at once (`PoolFull(Descriptors)` beyond;
    /// an accept then leaves the connection in the listen backlog).
    pub fn descriptors(mut self, n: usize) -> Self {
        self.config.descriptors = n;
        self
    }

    /// Timer objects open at once (`PoolFull(Timers)` beyond); each may
    /// have any number of waits, each wait an operation slot.
    pub fn timers(mut self, n: usize) -> Self {
        self.config.timers = n;
        self
    }

    /// Threads expected to run the context: 1 (the default) lets the one
    /// thread take whole batches and never wake a sibling (Asio's hint 1);
    /// more runs Asio's multi-thread scheduling. At least 1.
    pub fn concurrency_hint(mut self, n: usize) -> Self {
        self.config.concurrency_hint = n;
        self
    }

    /// A pool of `count` read buffers of `size` bytes (at least 16) for
    /// `TcpStream::async_read_pooled`; none by default.
    pub fn read_buffers(mut self, count: usize, size: usize) -> Self {
        self.config.read_buffers = (count, size);
        self
    }

    /// `count` task slots for [`IoContext::spawn`], each holding a future
    /// (and later its output) of up to `max_future_bytes` bytes; none by
    /// default (spawning then answers `NoPool(Tasks)`). A larger future is
    /// refused with `TaskTooLarge(bytes)`; a full pool with
    /// `PoolFull(Tasks)`. Each slot also takes a header of about 100 bytes.
    pub fn tasks(mut self, count: usize, max_future_bytes: usize) -> Self {
        self.config.tasks = (count, max_future_bytes);
        self
    }

    /// Faults in every page of every pool at build (operation slots,
    /// descriptor table, timers, task slots, read buffers), so that no
    /// operation, task or read ever takes a page fault for pinion's
    /// memory, and a machine short of memory fails at build, not later.
    /// Off by default: pages the program never uses then cost nothing.
    /// Which pools need it is in [`crate::memory`];
    /// [`IoContext::memory`](crate::IoContext::memory) says how much that
    /// is.
    ///
    /// ```
    /// let ctx = pinion::Builder::new().ops(4096).commit_memory(true).build().unwrap();
    /// let report = ctx.memory();
    /// assert!(report.committed());
    /// assert!(report.total() >= 4096 * pinion::OP_SLOT_SIZE);
    /// ```
    pub fn commit_memory(mut self, on: bool) -> Self {
        self.commit = on;
        self
    }

    /// Commits the pools ([`commit_memory`](Self::commit_memory)) and
    /// locks them in RAM (`mlock`), so they are never swapped or
    /// reclaimed; unlocked when the context is dropped. Off by default.
    /// Fails with [`BuildError::MemoryLock`] when the pools span more than
    /// `RLIMIT_MEMLOCK` allows (`ulimit -l`; `LimitMEMLOCK=` in a systemd
    /// unit). Only the pools are locked, not the program: see
    /// [`crate::memory`] for why, and for `mlockall`.
    ///
    /// ```
    /// let built = pinion::Builder::new().ops(64).descriptors(16).lock_memory(true).build();
    /// match built {
    ///     Ok(ctx) => assert!(ctx.memory().locked()),
    ///     // The message names the limit and how to raise it.
    ///     Err(e @ pinion::BuildError::MemoryLock { .. }) => eprintln!("{e}"),
    ///     Err(e) => panic!("{e}"),
    /// }
    /// ```
    pub fn lock_memory(mut self, on: bool) -> Self {
        self.lock = on;
        self
    }

    /// Replaces the backend's own options.
    pub fn options(mut self, options: B::Options) -> Self {
        self.options = options;
        self
    }

    /// The backend's own options, to change in place.
    pub fn options_mut(&mut self) -> &mut B::Options {
        &mut self.options
    }

    /// The sizes set so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.config.concurrency_hint == 0 {
            return Err(BuildError::Invalid {
                knob: "concurrency_hint",
                why: "it is at least 1 (1: one thread runs the context; more: several do)",
            });
        }
        Ok(())
    }

    /// Builds the context, boxing every pool once, now: the last
    /// allocation the context makes.
    #[cfg(feature = "std")]
    pub fn build(self) -> Result<IoContext<B>, BuildError> {
        self.check()?;
        let parts = B::boxed_parts(&self.config).ok_or(BuildError::Invalid {
            knob: "build",
            why: "the backend crate was built without its `std` feature: build on static memory with build_in",
        })?;
        let ops = Storage::boxed_with(self.config.ops, || OpSlot::EMPTY);
        let (count, bytes) = self.config.tasks;
        let tasks = TaskStorage::boxed(count, bytes);
        self.finish(ops, parts, tasks)
    }

    /// [`build`](Self::build), leaked: a `&'static IoContext` for programs
    /// whose handlers capture sockets and timers (which borrow their
    /// context), as most callback programs do. The memory lives as long
    /// as the process; the kernel objects go when the process exits.
    ///
    /// ```
    /// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
    /// let t = pinion::SteadyTimer::new(ctx).unwrap();
    /// t.expires_after(std::time::Duration::ZERO).unwrap();
    /// t.async_wait(move |r| assert!(r.is_ok())).unwrap();
    /// ctx.run();
    /// ```
    #[cfg(feature = "std")]
    pub fn build_static(self) -> Result<&'static IoContext<B>, BuildError> {
        Ok(std::boxed::Box::leak(std::boxed::Box::new(self.build()?)))
    }

    /// Builds the context on caller-provided memory (no allocation at
    /// all): `ops` operation slots and the backend's `parts` (for epoll,
    /// `pinion::epoll::Parts::from_static`). The slices' lengths replace
    /// the sizes set on the builder.
    ///
    /// A no_std program gets its `&'static IoContext` this way, with no
    /// allocation and no `unsafe`: every pool in a `static`, the context
    /// in a [`StaticCell`](crate::StaticCell).
    ///
    /// ```
    /// # #[cfg(feature = "epoll")] {
    /// use pinion::epoll::{DescriptorSlot, Entry, IoContext, Parts, TimerEntry, TimerObj, TimerSlot};
    /// use pinion::{OpSlot, StaticArray, StaticCell};
    /// static OPS: StaticArray<OpSlot, 16> = StaticArray::new([OpSlot::EMPTY; 16]);
    /// static DESCS: StaticArray<Entry<DescriptorSlot>, 4> =
    ///     StaticArray::new([DescriptorSlot::ENTRY; 4]);
    /// static TIMERS: StaticArray<TimerEntry, 2> = StaticArray::new([TimerObj::ENTRY; 2]);
    /// static HEAP: StaticArray<TimerSlot, 2> = StaticArray::new([TimerSlot::EMPTY; 2]);
    /// static CTX: StaticCell<IoContext> = StaticCell::new();
    ///
    /// let (d, t, h) = (DESCS.take().unwrap(), TIMERS.take().unwrap(), HEAP.take().unwrap());
    /// let parts = Parts::from_static(d, t, h, None);
    /// let built = pinion::epoll::Builder::new().build_in(OPS.take().unwrap(), parts);
    /// let ctx: &'static IoContext = CTX.init(built.unwrap()).ok().unwrap();
    /// ctx.post(|| println!("ran")).unwrap();
    /// assert_eq!(ctx.run(), 1);
    /// # }
    /// ```
    pub fn build_in(
        self, ops: &'static mut [OpSlot], parts: B::Parts,
    ) -> Result<IoContext<B>, BuildError> {
        self.check()?;
        self.finish(Storage::from_static(ops), parts, TaskStorage::none())
    }

    /// [`build_in`](Self::build_in) with task slots on caller-provided
    /// memory too ([`TaskStorage::from_static`]); the storage's sizes
    /// replace [`tasks`](Self::tasks).
    pub fn build_in_with_tasks(
        self, ops: &'static mut [OpSlot], parts: B::Parts, tasks: TaskStorage,
    ) -> Result<IoContext<B>, BuildError> {
        self.check()?;
        self.finish(Storage::from_static(ops), parts, tasks)
    }

    fn finish(
        self, ops: Storage<OpSlot>, parts: B::Parts, tasks: TaskStorage,
    ) -> Result<IoContext<B>, BuildError> {
        let task = B::build(&self.config, &self.options, parts)?;
        let ctx = IoContext::from_parts(
            Sched::<B>::new(task, ops, self.config.concurrency_hint).with_tasks(tasks),
        );
        let commit = self.commit || self.lock;
        if commit {
            memory::commit(ctx.sched())?;
        }
        if self.lock {
            memory::lock(ctx.sched())?;
        }
        ctx.sched().mark_memory(commit, self.lock);
        Ok(ctx)
    }
}

/// The io_uring backend's own knobs ([`pinion_uring::Options`]).
#[cfg(feature = "uring")]
impl Builder<pinion_uring::Proactor> {
    /// Submission queue entries (rounded up to a power of two by the
    /// kernel); default 256. A full SQ is submitted and refilled, never an
    /// error.
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.options.sq_entries = n;
        self
    }

    /// Completion queue entries (at least `sq_entries`; default twice).
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.options.cq_entries = Some(n);
        self
    }

    /// One multishot accept per listener (default off: see
    /// [`pinion_uring::Options::multishot_accept`]).
    pub fn multishot_accept(mut self, on: bool) -> Self {
        self.options.multishot_accept = on;
        self
    }

    /// Registered files (default on; falls back to plain fds if refused).
    pub fn registered_files(mut self, on: bool) -> Self {
        self.options.registered_files = on;
        self
    }

    /// A provided buffer ring for pooled reads (default on; falls back to
    /// a software pool if refused).
    pub fn buffer_ring(mut self, on: bool) -> Self {
        self.options.buffer_ring = on;
        self
    }

    /// `IORING_SETUP_SQPOLL` with this idle time (ms), or none (default).
    pub fn sqpoll(mut self, idle_ms: Option<u32>) -> Self {
        self.options.sqpoll_idle_ms = idle_ms;
        self
    }

    /// `IORING_SETUP_COOP_TASKRUN`: completions never interrupt the running
    /// thread (default on; falls back to a plain ring if refused, see
    /// [`pinion_uring::Options::coop_taskrun`]).
    pub fn coop_taskrun(mut self, on: bool) -> Self {
        self.options.coop_taskrun = on;
        self
    }

    /// Zero-copy sends (`IORING_OP_SEND_ZC`) for writes of at least
    /// `min_bytes` on TCP sockets, or none (default). A write's buffer
    /// comes back only once the kernel's notification says it is done
    /// with it. Kernels without the opcode send every write with a copy
    /// ([`RingInfo::send_zc`](pinion_uring::RingInfo::send_zc) says
    /// which); see [`pinion_uring::Options::send_zc`] for when it pays.
    ///
    /// ```
    /// # fn main() -> Result<(), pinion::Error> {
    /// let Ok(ctx) = pinion::uring::Builder::new().send_zc(Some(64 * 1024)).build() else {
    ///     return Ok(()); // no io_uring here
    /// };
    /// let zc = ctx.ring_info().send_zc; // Some(65536) on Linux 6.0 and later
    /// assert!(zc.is_none() || zc == Some(65536));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_zc(mut self, min_bytes: Option<usize>) -> Self {
        self.options.send_zc = min_bytes.map(|n| n.min(u32::MAX as usize) as u32);
        self
    }

    /// Treats these opcodes ([`pinion::uring::abi`](crate::uring::abi)`::IORING_OP_*`) as
    /// missing from the kernel: what has a fallback takes it, what is
    /// required fails the build as on an old kernel (see
    /// [`pinion_uring::Options::assume_missing`]).
    pub fn assume_missing(mut self, opcodes: &'static [u8]) -> Self {
        self.options.assume_missing = opcodes;
        self
    }
}
