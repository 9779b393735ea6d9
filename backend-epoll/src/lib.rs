//! pinion-epoll: Asio's `epoll_reactor` as a pinion backend.
//!
//! An [`IoContext`] is pinion's scheduler driving a [`Reactor`], with every
//! pool fixed when it is built ([`Builder`]): operation slots, the object
//! table (sockets and timer objects) and the timer heap. Nothing on an I/O
//! path allocates.
//!
//! - `reactor`: descriptor states in a fixed table, the speculative
//!   `start_op`, `perform_io`, the interrupter and the timerfd (read the
//!   module docs there for the call flow);
//! - `ops`: the socket operations (accept, connect, recv, send, recvfrom,
//!   sendto), one generic operation type in one slot each;
//! - `net`: [`TcpListener`], [`TcpStream`], [`UdpSocket`]: `Copy` handles;
//! - `timer`: [`SteadyTimer`] on one timerfd;
//! - `interrupter`: eventfd, or a pipe with the `pipe-interrupter` feature;
//! - `sys`: the `syscall!` macro, owned fds, socket addresses;
//! - `stats`: counters behind the `stats` feature ([`IoContext::stats`]).
//!
//! `#![no_std]` without the `std` feature; then build the context from
//! `static` storage with [`Builder::build_static`].
//!
//! Features: `std` ([`Builder::build`]), `stats` ([`IoContext::stats`]),
//! `pipe-interrupter` (Asio's pipe instead of an eventfd).
//!
//! Worth knowing:
//! - Sockets and timer objects share one table of [`DescriptorSlot`]s;
//!   `Builder::build` sizes it `descriptors + timers`.
//! - A handle whose object was closed answers `BadDescriptor` from the
//!   initiating call (handler and buffer handed back in the `Rejected`).
//! - `poll()` (and the scheduler's own polls between batches) may skip
//!   `epoll_wait` for up to [`POLL_SKIP_NS`] after the last one: I/O that
//!   became ready meanwhile is seen on a later call.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

use core::cell::UnsafeCell;
use core::ops::Deref;
use core::sync::atomic::{AtomicBool, Ordering};

use pinion_core::pooled::SlabPool;
#[cfg(feature = "std")]
use pinion_core::pooled::SLAB_MIN_SIZE;
use pinion_core::Storage;

mod interrupter;
mod net;
mod ops;
mod reactor;
mod stats;
mod sys;
mod timer;

pub use net::{Shutdown, TcpListener, TcpStream, UdpSocket};
pub use pinion_core::pooled::{PooledBuf, ReadBufferCount};
pub use pinion_core::timer::TimerSlot;
pub use pinion_core::{Error, OpSlot, Rejected, Result};
pub use pinion_sync::FutexKit;
pub use reactor::{DescriptorSlot, Reactor, POLL_SKIP_MAX, POLL_SKIP_NS};
pub use stats::Stats;
pub use timer::SteadyTimer;

/// The pool pooled reads take from when a socket is readable.
pub(crate) type ReadBuffers = SlabPool<pinion_sync::FutexMutex>;

/// The scheduler of an [`IoContext`].
pub type Scheduler = pinion_core::Scheduler<Reactor, FutexKit>;
/// A strand on an [`IoContext`]: `Strand::new(&ctx)`.
pub type Strand<'c> = pinion_core::Strand<'c, Reactor, FutexKit>;

/// The I/O context: pinion's scheduler with the epoll reactor as its task.
///
/// Derefs to [`Scheduler`] for `run`, `run_one`, `run_for`, `poll`, `stop`,
/// `restart`, `post`, `dispatch`, `defer`, `work_guard`... Dropping it
/// closes every socket still open and destroys pending operations without
/// running their handlers.
#[repr(transparent)]
pub struct IoContext {
    // Transparent: operations reach the context from the scheduler pointer
    // they are completed with.
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
    /// Free and total buffers of the read pool
    /// ([`Builder::read_buffers`]); `None` without one.
    pub fn read_buffers(&self) -> Option<ReadBufferCount> {
        self.sched.task().read_buffers().map(|p| p.counts())
    }

    /// Sockets currently open in the descriptor table.
    pub fn descriptors_in_use(&self) -> usize {
        self.sched.task().sockets_in_use()
    }

    /// The reactor's counters so far.
    #[cfg(feature = "stats")]
    pub fn stats(&self) -> Stats {
        self.sched.task().stats.snapshot()
    }
}

/// Sizes and builds an [`IoContext`].
#[derive(Clone, Copy, Debug)]
pub struct Builder {
    ops: usize,
    descriptors: usize,
    timers: usize,
    concurrency_hint: usize,
    read_buffers: (usize, usize),
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            ops: 1024,
            descriptors: 1024,
            timers: 1024,
            concurrency_hint: 1,
            read_buffers: (0, 0),
        }
    }
}

impl Builder {
    /// 1024 operation slots, 1024 sockets, 1024 timers, one thread.
    pub fn new() -> Self {
        Self::default()
    }

    /// Operation slots: every pending operation and posted handler takes one.
    pub fn ops(mut self, n: usize) -> Self {
        self.ops = n;
        self
    }

    /// Sockets open at once.
    pub fn descriptors(mut self, n: usize) -> Self {
        self.descriptors = n;
        self
    }

    /// Timer objects open at once (each may have any number of waits).
    pub fn timers(mut self, n: usize) -> Self {
        self.timers = n;
        self
    }

    /// Threads expected to run the context; 1 lets the one thread take
    /// whole batches and never wake a sibling (Asio's hint 1).
    pub fn concurrency_hint(mut self, n: usize) -> Self {
        self.concurrency_hint = n;
        self
    }

    /// A pool of `count` read buffers of `size` bytes (at least 16) for
    /// [`TcpStream::async_read_pooled`]; none by default. Reserved by
    /// [`build`](Self::build) (the no_std `build_static` has none).
    pub fn read_buffers(mut self, count: usize, size: usize) -> Self {
        self.read_buffers = (count, size);
        self
    }

    /// Builds the context, boxing each pool once, now.
    #[cfg(feature = "std")]
    pub fn build(self) -> Result<IoContext> {
        let (count, size) = self.read_buffers;
        let bufs = (count > 0).then(|| {
            let size = size.max(SLAB_MIN_SIZE);
            ReadBuffers::new(Storage::boxed_with(count * size, || 0u8), size)
        });
        self.finish(
            Storage::boxed_with(self.ops, || OpSlot::EMPTY),
            Storage::boxed_with(self.descriptors + self.timers, || DescriptorSlot::EMPTY),
            Storage::boxed_with(self.timers, || TimerSlot::EMPTY),
            bufs,
        )
    }

    /// Builds the context over caller-provided `'static` storage (no_std);
    /// the slices' lengths replace the sizes set on the builder.
    /// `descriptors` holds the sockets *and* the timer objects open at once
    /// (`timers.len()` of them at most), so give it room for both.
    pub fn build_static(
        self,
        ops: &'static mut [OpSlot],
        descriptors: &'static mut [DescriptorSlot],
        timers: &'static mut [TimerSlot],
    ) -> Result<IoContext> {
        self.finish(
            Storage::from_static(ops),
            Storage::from_static(descriptors),
            Storage::from_static(timers),
            None,
        )
    }

    /// As [`build_static`](Self::build_static), with `read_buffers`
    /// cut into buffers of `size` bytes (at least 16) for
    /// [`TcpStream::async_read_pooled`] (the count set by
    /// [`read_buffers`](Self::read_buffers) is ignored: the slice decides).
    ///
    /// ```
    /// use pinion_epoll::{Builder, DescriptorSlot, OpSlot, StaticArray, TimerSlot};
    /// static OPS: StaticArray<OpSlot, 16> = StaticArray::new([OpSlot::EMPTY; 16]);
    /// static DESCS: StaticArray<DescriptorSlot, 4> = StaticArray::new([DescriptorSlot::EMPTY; 4]);
    /// static TIMERS: StaticArray<TimerSlot, 1> = StaticArray::new([TimerSlot::EMPTY; 1]);
    /// static READ: StaticArray<u8, 4096> = StaticArray::new([0; 4096]);
    /// let ctx = Builder::new()
    ///     .build_static_with_read_buffers(
    ///         OPS.take().unwrap(),
    ///         DESCS.take().unwrap(),
    ///         TIMERS.take().unwrap(),
    ///         READ.take().unwrap(),
    ///         1024,
    ///     )
    ///     .unwrap();
    /// let n = ctx.read_buffers().unwrap();
    /// assert_eq!((n.free, n.total, n.size), (4, 4, 1024));
    /// ```
    pub fn build_static_with_read_buffers(
        self,
        ops: &'static mut [OpSlot],
        descriptors: &'static mut [DescriptorSlot],
        timers: &'static mut [TimerSlot],
        read_buffers: &'static mut [u8],
        size: usize,
    ) -> Result<IoContext> {
        self.finish(
            Storage::from_static(ops),
            Storage::from_static(descriptors),
            Storage::from_static(timers),
            Some(ReadBuffers::new(Storage::from_static(read_buffers), size)),
        )
    }

    fn finish(
        self,
        ops: Storage<OpSlot>,
        descriptors: Storage<DescriptorSlot>,
        timers: Storage<TimerSlot>,
        read_buffers: Option<ReadBuffers>,
    ) -> Result<IoContext> {
        // One thread: I/O is performed where epoll reports it (see the
        // reactor's docs); several: by whichever thread takes the
        // descriptor operation, as in Asio.
        let inline_io = self.concurrency_hint <= 1;
        let reactor = Reactor::new(descriptors, timers, inline_io, read_buffers)?;
        Ok(IoContext {
            sched: Scheduler::new(reactor, ops, self.concurrency_hint.max(1)),
        })
    }
}

/// `N` items in `static` memory, handed out once as `&'static mut [T]`:
/// storage for [`Builder::build_static`].
///
/// ```
/// use pinion_epoll::{Builder, DescriptorSlot, OpSlot, StaticArray, TimerSlot};
/// static OPS: StaticArray<OpSlot, 64> = StaticArray::new([OpSlot::EMPTY; 64]);
/// static DESCS: StaticArray<DescriptorSlot, 16> = StaticArray::new([DescriptorSlot::EMPTY; 16]);
/// static TIMERS: StaticArray<TimerSlot, 8> = StaticArray::new([TimerSlot::EMPTY; 8]);
/// let ctx = Builder::new()
///     .build_static(OPS.take().unwrap(), DESCS.take().unwrap(), TIMERS.take().unwrap())
///     .unwrap();
/// assert!(OPS.take().is_none());
/// ctx.post(|| ()).map_err(|r| r.error).unwrap();
/// ctx.run();
/// ```
pub struct StaticArray<T, const N: usize> {
    taken: AtomicBool,
    items: UnsafeCell<[T; N]>,
}

// SAFETY: the items are reachable only through the one `&'static mut`
// that `take` hands out, guarded by `taken`.
unsafe impl<T: Send, const N: usize> Sync for StaticArray<T, N> {}

impl<T, const N: usize> StaticArray<T, N> {
    /// Wraps `items` (typically `[T::EMPTY; N]`).
    pub const fn new(items: [T; N]) -> Self {
        StaticArray {
            taken: AtomicBool::new(false),
            items: UnsafeCell::new(items),
        }
    }

    /// The items, the first time; `None` afterwards.
    #[allow(clippy::mut_from_ref)] // unique by the `taken` flag
    pub fn take(&'static self) -> Option<&'static mut [T]> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `taken` flipped from false exactly once, so this is the
        // only reference ever made to the array.
        Some(unsafe { &mut *self.items.get() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sync<T: Sync + Send>() {}

    #[test]
    fn context_is_sync_and_handles_are_send() {
        is_sync::<IoContext>();
        is_sync::<TcpStream<'static>>();
        is_sync::<SteadyTimer<'static>>();
    }

    #[test]
    fn descriptor_slot_is_one_or_few_lines() {
        assert!(core::mem::size_of::<DescriptorSlot>() <= 256);
    }
}
