//! The I/O context: Asio's `io_context`, the scheduler with a backend as
//! its task.
//!
//! `IoContext` has its own user methods and nothing else: the scheduler's
//! plumbing (operation slots, work counting, the backend task) is not
//! reachable from it, so safe code cannot break a count or run the
//! reactor outside `run()`. Each of these fails to compile:
//!
//! ```compile_fail,E0599
//! let ctx = pinion::Builder::new().build().unwrap();
//! ctx.work_finished(); // no such method: work is held by guards
//! ```
//!
//! ```compile_fail,E0599
//! let ctx = pinion::Builder::new().build().unwrap();
//! let mut ops = pinion::backend::OpQueue::new();
//! ctx.task().run(pinion::backend::Wait::Poll, &mut ops); // no task()
//! ```
//!
//! ```compile_fail,E0599
//! let ctx = pinion::Builder::new().build().unwrap();
//! let _ = ctx.alloc_op(0u8); // no operation slots from user code
//! ```
//!
//! ```compile_fail,E0614
//! let ctx = pinion::Builder::new().build().unwrap();
//! let _ = ctx.outstanding_work() + (*ctx).outstanding_work(); // no Deref
//! ```
//!
//! and the backend task, reached some other way, runs only in `unsafe`:
//!
//! ```compile_fail,E0133
//! use pinion::backend::{NoTask, OpQueue, Task, Wait};
//! let mut ops = OpQueue::new();
//! NoTask.run(Wait::Poll, &mut ops); // `Task::run` is an unsafe fn
//! ```

use core::future::Future;
use core::time::Duration;

use pinion_core::backend::{Backend, Sched};
use pinion_core::pooled::ReadBufferCount;
use pinion_core::task::JoinHandle;
use pinion_core::{Error, Rejected};

use crate::memory::MemoryReport;
use crate::time::{nanos, Instant};

/// The I/O context: runs handlers, and owns every socket, timer,
/// operation slot and buffer of a program (all reserved when it is built
/// by [`Builder`](crate::builder::Builder)).
///
/// Handlers run on the threads that call [`run`](Self::run) (or its
/// relatives), never inside the call that started their operation.
/// Dropping the context cancels everything still pending, destroys the
/// pending handlers without running them and closes every descriptor;
/// [`shutdown`](Self::shutdown) does the same to a context that stays
/// (a `&'static` one, whose handlers hold handles to it).
///
/// `IoContext` is `Sync`: any number of threads may run it and start
/// operations on it.
#[repr(transparent)]
pub struct IoContext<B: Backend> {
    // Transparent: a completion reaches its context from the scheduler
    // pointer it is completed with.
    sched: Sched<B>,
}

/// Keeps [`IoContext::run`] from returning for lack of work while alive
/// (Asio's `executor_work_guard`).
pub type WorkGuard<'a, B> = pinion_core::WorkGuard<'a, B, <B as Backend>::Kit>;

impl<B: Backend> IoContext<B> {
    pub(crate) fn from_parts(sched: Sched<B>) -> Self {
        IoContext { sched }
    }

    /// The scheduler, for the I/O types of this crate.
    #[inline(always)]
    pub(crate) fn sched(&self) -> &Sched<B> {
        &self.sched
    }

    /// The context whose scheduler `sched` is.
    ///
    /// # Safety
    /// `sched` is the scheduler of a live `IoContext<B>` that lives for
    /// `'c` (an operation started on a `&'c IoContext` runs while it does).
    #[inline(always)]
    pub(crate) unsafe fn from_sched<'c>(sched: &Sched<B>) -> &'c IoContext<B> {
        // SAFETY: `IoContext` is a transparent wrapper of its scheduler,
        // and the caller vouches for the lifetime.
        unsafe { &*(sched as *const Sched<B> as *const IoContext<B>) }
    }

    // ---- running ---------------------------------------------------------

    /// Runs handlers until there is no more work or [`stop`](Self::stop) is
    /// called. Returns how many ran.
    pub fn run(&self) -> usize {
        self.sched.run()
    }

    /// Runs at most one handler, waiting for one if need be.
    pub fn run_one(&self) -> usize {
        self.sched.run_one()
    }

    /// Runs handlers until there is no more work, `stop` is called, or `d`
    /// has passed.
    pub fn run_for(&self, d: Duration) -> usize {
        self.sched.run_for(nanos(d))
    }

    /// As [`run_for`](Self::run_for) up to `deadline` on this context's
    /// clock ([`now`](Self::now)).
    pub fn run_until(&self, deadline: Instant) -> usize {
        self.sched.run_until(deadline.as_nanos())
    }

    /// Runs the handlers that are ready, without waiting.
    pub fn poll(&self) -> usize {
        self.sched.poll()
    }

    /// Runs at most one ready handler, without waiting.
    pub fn poll_one(&self) -> usize {
        self.sched.poll_one()
    }

    /// Makes every `run` return as soon as its current handler finishes.
    pub fn stop(&self) {
        self.sched.stop()
    }

    /// `true` once `stop` was called (or work ran out), until `restart`.
    pub fn stopped(&self) -> bool {
        self.sched.stopped()
    }

    /// Clears the stopped state so that `run` may be called again.
    pub fn restart(&self) {
        self.sched.restart()
    }

    /// `true` when the calling thread is inside this context's `run`.
    pub fn running_in_this_thread(&self) -> bool {
        self.sched.running_in_this_thread()
    }

    // ---- shutting down ---------------------------------------------------

    /// Shuts the context down in place (Asio's `io_context::shutdown`,
    /// made safe to call on a shared, `'static` context): what dropping it
    /// would do, with its memory left valid.
    ///
    /// 1. Stops it and waits for every thread inside [`run`](Self::run)
    ///    (or its relatives) to return, after its current handler.
    /// 2. Destroys every pending handler, operation and task without
    ///    running it: what each captured (buffers, sockets in an
    ///    [`Owned`](crate::Owned)) is dropped.
    /// 3. Closes every descriptor opened through it: listeners, streams,
    ///    datagram sockets, stream descriptors, serial ports, the
    ///    descriptors of signal sets (whose signals are given back to the
    ///    process's table); on io_uring their registered files go too, so
    ///    a listener's port can be bound again at once. Every timer is
    ///    retired.
    ///
    /// Afterwards `run` and its relatives return 0 at once; `post`,
    /// `spawn`, new sockets, timers and strands, and operations on
    /// existing handles are refused with
    /// [`Error::ContextShutDown`], or
    /// `BadDescriptor` for a handle whose descriptor is gone; no handle
    /// ever reaches a reused slot (the tables open nothing new). What the
    /// context keeps until it is dropped is its own kernel objects: on
    /// epoll the epoll fd, the interrupter's eventfd (a pipe, two fds,
    /// with the `pipe-interrupter` feature) and the timerfd; on io_uring
    /// the ring fd, with its mappings, and its eventfd. Dropping a context
    /// that was shut down is fine, as is a second `shutdown` (which
    /// returns once the first has finished).
    ///
    /// `Err(ShutdownInsideRun)`, doing nothing, when called from a handler
    /// or task of this context: it would wait for itself. Call
    /// [`stop`](Self::stop) there, and `shutdown` after `run` returned.
    ///
    /// ```
    /// use pinion::Error;
    /// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
    /// let listener = pinion::TcpListener::bind(ctx, "127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// listener.async_accept(|_| unreachable!("destroyed, never run")).unwrap();
    /// ctx.shutdown().unwrap();
    /// // The port is free again, and the context refuses everything.
    /// drop(std::net::TcpListener::bind(addr).unwrap());
    /// assert_eq!(ctx.run(), 0);
    /// assert_eq!(ctx.post(|| ()).unwrap_err().error, Error::ContextShutDown);
    /// assert_eq!(listener.local_addr().unwrap_err(), Error::BadDescriptor);
    /// ```
    pub fn shutdown(&self) -> Result<(), Error> {
        self.sched.shutdown()?;
        crate::signal::release_context(self.sched.owner());
        Ok(())
    }

    /// `true` once [`shutdown`](Self::shutdown) has begun.
    pub fn is_shut_down(&self) -> bool {
        self.sched.is_shut_down()
    }

    // ---- handlers ----------------------------------------------------------

    /// Queues `handler` to run on a thread inside `run`; never runs it
    /// inline. Hands it back with `PoolFull(Ops)` when no operation slot is
    /// free.
    ///
    /// ```
    /// let ctx = pinion::Builder::new().build().unwrap();
    /// ctx.post(|| println!("from run()")).unwrap();
    /// assert_eq!(ctx.run(), 1);
    /// ```
    pub fn post<F: FnOnce() + Send + 'static>(&self, handler: F) -> Result<(), Rejected<F>> {
        self.sched.post(handler)
    }

    // ---- tasks -----------------------------------------------------------

    /// Runs `future` as a task: any thread in `run()` may poll it, and
    /// `run()` returns only once every task has finished (or on `stop`).
    /// The future lives in a task slot reserved at build
    /// ([`Builder::tasks`](crate::builder::Builder::tasks)); nothing is
    /// allocated. It comes back inside the error with `NoPool(Tasks)`,
    /// `PoolFull(Tasks)`, or `TaskTooLarge(bytes)`.
    ///
    /// ```
    /// let ctx: &'static pinion::IoContext =
    ///     pinion::Builder::new().tasks(4, 512).build_static().unwrap();
    /// let answer = ctx.spawn(async { 6 * 7 }).unwrap();
    /// assert_eq!(ctx.block_on(answer).unwrap(), Ok(42));
    /// ```
    pub fn spawn<F>(&'static self, future: F) -> Result<JoinHandle<F::Output>, Rejected<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
        B: 'static,
        Sched<B>: Sync,
    {
        self.sched.spawn(future)
    }

    /// Runs a future that need not be `Send` (it may hold `Rc`, `RefCell`,
    /// or other thread-bound state) as a task polled only on this thread.
    /// For a context that one thread runs: it is refused with
    /// `NotOneThread` unless the context was built with
    /// [`concurrency_hint(1)`](crate::builder::Builder::concurrency_hint)
    /// (the default). Slots and the other refusals are those of
    /// [`spawn`](Self::spawn); its wakers may be woken from any thread.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// let ctx: &'static pinion::IoContext =
    ///     pinion::Builder::new().tasks(4, 256).build_static().unwrap();
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// let l = log.clone();
    /// let task = ctx.spawn_local(async move { l.borrow_mut().push("ran") }).unwrap();
    /// ctx.block_on(task).unwrap().unwrap();
    /// assert_eq!(*log.borrow(), ["ran"]);
    /// ```
    ///
    /// [`spawn`](Self::spawn) refuses the same future at compile time:
    ///
    /// ```compile_fail
    /// let ctx: &'static pinion::IoContext =
    ///     pinion::Builder::new().tasks(4, 256).build_static().unwrap();
    /// let rc = std::rc::Rc::new(1);
    /// ctx.spawn(async move { *rc }); // Rc is not Send
    /// ```
    pub fn spawn_local<F>(&'static self, future: F) -> Result<JoinHandle<F::Output>, Rejected<F>>
    where
        F: Future + 'static,
        F::Output: 'static,
        B: 'static,
        Sched<B>: Sync,
    {
        self.sched.spawn_local(future)
    }

    /// Runs the context on this thread until `future` completes and
    /// returns its output (other threads may run it too). The future may
    /// borrow from the caller and need not be `Send`. `Err(OperationAborted)`
    /// if [`stop`](Self::stop) is called first.
    ///
    /// # Panics
    /// From inside a handler or task of this context (it would wait for
    /// itself).
    pub fn block_on<F: Future>(&'static self, future: F) -> Result<F::Output, Error>
    where
        B: 'static,
    {
        self.sched.block_on(future)
    }

    /// Task slots: (in use, capacity). A finished task's slot stays taken
    /// while its `JoinHandle` or a `Waker` of it exists.
    pub fn tasks_in_use(&self) -> (usize, usize)
    where
        B: 'static,
        Sched<B>: Sync,
    {
        self.sched.tasks_in_use()
    }

    /// Runs `handler` now if the calling thread is inside `run`, otherwise
    /// posts it.
    pub fn dispatch<F: FnOnce() + Send + 'static>(&self, handler: F) -> Result<(), Rejected<F>> {
        self.sched.dispatch(handler)
    }

    /// Posts `handler` as a continuation of the current one (Asio's
    /// `defer`; pinion's `post` already queues privately from inside
    /// `run`, so the two behave alike).
    pub fn defer<F: FnOnce() + Send + 'static>(&self, handler: F) -> Result<(), Rejected<F>> {
        self.sched.defer(handler)
    }

    /// A guard that keeps `run` from running out of work until dropped.
    pub fn work_guard(&self) -> WorkGuard<'_, B> {
        self.sched.work_guard()
    }

    // ---- clock and diagnostics ----------------------------------------------

    /// Now, on the clock timers and [`run_until`](Self::run_until) use.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.sched.task().now_ns())
    }

    /// The backend's counters so far (zeros without the `stats` feature).
    pub fn stats(&self) -> B::Stats {
        self.sched.task().stats()
    }

    /// Free and total buffers of the read pool
    /// ([`Builder::read_buffers`](crate::builder::Builder::read_buffers));
    /// `None` without one.
    pub fn read_buffers(&self) -> Option<ReadBufferCount> {
        self.sched.task().read_buffers()
    }

    /// Descriptor slots in use now: open sockets, plus, on io_uring, one
    /// slot per listener with an accept in flight (reserved for the
    /// connection it will bring, so a full table refuses the accept
    /// instead of closing a connection) and closed sockets whose teardown
    /// waits for the kernel to pass their cancel. So with a pending accept
    /// it reads one more on io_uring than on epoll.
    pub fn descriptors_in_use(&self) -> usize {
        self.sched.task().descriptors_in_use()
    }

    /// Timer objects open now.
    pub fn timers_in_use(&self) -> usize {
        self.sched.task().timers().in_use()
    }

    /// Operation slots in use now and in all: (in use, capacity).
    pub fn ops_in_use(&self) -> (usize, usize) {
        self.sched.ops_in_use()
    }

    /// Units of outstanding work (pending operations, queued handlers,
    /// work guards): `run` returns when it reaches 0.
    pub fn outstanding_work(&self) -> usize {
        self.sched.outstanding_work()
    }

    /// The backend's name: `"epoll"` or `"io_uring"`.
    pub fn backend_name(&self) -> &'static str {
        B::NAME
    }

    /// The memory this context reserved at build: bytes per pool and in
    /// all, and per idle and per active connection (defined on
    /// [`MemoryReport`]). `Display` prints it as a table.
    ///
    /// ```
    /// let ctx = pinion::Builder::new().ops(256).descriptors(64).build().unwrap();
    /// let m = ctx.memory();
    /// assert_eq!(m.bytes(pinion::memory::MemPool::Ops), 256 * pinion::OP_SLOT_SIZE);
    /// assert!(m.per_active_connection() > m.per_idle_connection());
    /// println!("{m}");
    /// ```
    pub fn memory(&self) -> MemoryReport {
        crate::memory::report(&self.sched)
    }
}

/// Registers `fd` in `sched`'s backend (see [`Backend::register`]); a
/// shut-down context's closed table answers `ContextShutDown`.
pub(crate) fn register<B: Backend>(
    sched: &Sched<B>, fd: pinion_core::backend::Fd, kind: pinion_core::backend::DescKind,
) -> pinion_core::Result<pinion_core::backend::Key> {
    B::register(sched, fd, kind).map_err(|e| match e {
        Error::PoolFull(p) => sched.pool_error(p),
        e => e,
    })
}

/// What [`IoContext::shut_down_and_audit`] found held after the shutdown
/// (feature `fault-injection`, tests only): every count is 0 in a context
/// that gives everything back.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Operation slots still taken: a handler neither run nor destroyed.
    pub ops: usize,
    /// Descriptor slots still taken.
    pub descriptors: usize,
    /// Timer slots still taken.
    pub timers: usize,
    /// Task slots still taken.
    pub tasks: usize,
    /// Read buffers not back in their pool.
    pub read_buffers: usize,
    /// Units of outstanding work before the shutdown that were not an
    /// operation it destroyed or a task whose future it dropped (positive: work counted for nothing, so
    /// `run` would never return; negative: operations pending without
    /// their work counted, so `run` could return with them pending).
    pub unaccounted_work: isize,
}

#[cfg(feature = "fault-injection")]
impl Audit {
    /// `true` when everything came back.
    pub fn is_clean(&self) -> bool {
        *self == Audit::default()
    }
}

#[cfg(feature = "fault-injection")]
impl<B: Backend + 'static> IoContext<B>
where
    Sched<B>: Sync,
{
    /// Tests only (feature `fault-injection`): shuts the context down now,
    /// as dropping it would (closing every descriptor, destroying every
    /// pending handler), and reports what is still held. The context is
    /// stopped for good afterwards; drop it.
    pub fn shut_down_and_audit(&mut self) -> Audit {
        // Every unit of work left is an operation the shutdown destroys or
        // a task whose future it drops.
        let work = self.outstanding_work() as isize;
        let destroyed = self.sched.shut_down() as isize;
        Audit {
            ops: self.ops_in_use().0,
            descriptors: self.descriptors_in_use(),
            timers: self.timers_in_use(),
            tasks: self.tasks_in_use().0,
            read_buffers: self.read_buffers().map_or(0, |c| c.total - c.free),
            unaccounted_work: work - destroyed,
        }
    }
}

impl<B: Backend> Drop for IoContext<B> {
    fn drop(&mut self) {
        // Signal sets of this context still open: their descriptors go
        // with the scheduler's drop, their slots in the process's table
        // here (the context may have moved since they were made: only
        // those made at this address are found).
        crate::signal::release_context(self.sched.owner());
        // Before the pools are freed: their pages may be reused by memory
        // that was never meant to be locked.
        if self.sched.memory_marks().1 {
            crate::memory::unlock(&self.sched);
        }
    }
}

impl<B: Backend> core::fmt::Debug for IoContext<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoContext")
            .field("backend", &B::NAME)
            .field("outstanding_work", &self.outstanding_work())
            .finish_non_exhaustive()
    }
}

/// What only an io_uring context can tell.
#[cfg(feature = "uring")]
impl IoContext<pinion_uring::Proactor> {
    /// Sizes, pinned memory and kernel features of the ring.
    pub fn ring_info(&self) -> pinion_uring::RingInfo {
        self.sched.task().ring_info()
    }

    /// Bytes of locked kernel memory the ring pins.
    pub fn pinned_bytes(&self) -> usize {
        self.ring_info().pinned_bytes
    }
}
