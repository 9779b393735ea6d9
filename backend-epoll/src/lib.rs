//! pinion-epoll: Asio's `epoll_reactor` as a pinion backend.
//!
//! [`Reactor`] implements the backend contract
//! ([`pinion_core::backend::Backend`]); the `pinion` facade builds its
//! `IoContext`, sockets and timers over it. Every pool is fixed when the
//! context is built: the descriptor table, timer objects, read buffers
//! ([`Parts`]) and the operation slots. Nothing on an I/O path allocates.
//!
//! - `reactor`: descriptor states in a fixed table, the speculative
//!   `start_op`, `perform_io`, the interrupter and the timerfd (read the
//!   module docs there for the call flow);
//! - `ops`: the socket operations (accept, connect, recv, send, recvfrom,
//!   sendto, pooled recv), one generic operation type in one slot each;
//!   `vectored`: recvmsg/sendmsg over a buffer list, the same way;
//! - `interrupter`: eventfd, or a pipe with the `pipe-interrupter` feature;
//! - `stats`: counters behind the `stats` feature.
//!
//! `#![no_std]` without the `std` feature; then build the context from
//! `static` storage with [`Parts::from_static`] and the facade's
//! `Builder::build_in`.
//!
//! Worth knowing:
//! - A handle whose socket was closed answers `BadDescriptor` from the
//!   initiating call (handler and buffer handed back in the `Rejected`).
//! - `poll()` (and the scheduler's own polls between batches) may skip
//!   `epoll_wait` for up to [`POLL_SKIP_NS`] after the last one: I/O that
//!   became ready meanwhile is seen on a later call.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

use core::net::SocketAddr;

use pinion_core::backend::{
    AcceptHandler, At, Backend, BuildError, Config, ConnectHandler, DescKind, Fd, IoHandler, Key,
    OpId, PooledHandler, Readiness, RecvHandler, Sched, Started, WaitHandler,
};
use pinion_core::buf::{IoBuf, IoBufMut, IoBufs, IoBufsMut};
use pinion_core::memory::{MemPool, Region};
use pinion_core::pooled::{ReadBufferCount, SlabPool, SLAB_MIN_SIZE};
use pinion_core::slab::{Entry, Slab};
use pinion_core::timer::{TimerEntry, TimerService, TimerSlot};
use pinion_core::{Result, Storage};
use pinion_sync::{FutexKit, FutexMutex};
use pinion_sys::addr::{RawAddr, SockAddr};

mod interrupter;
mod ops;
mod reactor;
mod stats;
mod vectored;

pub use reactor::{DescriptorSlot, Reactor, POLL_SKIP_MAX, POLL_SKIP_NS};
pub use stats::Stats;

use ops::{Accept, Recv, RecvFrom, RecvPooled, Send, SendTo, Wait};
use reactor::{READ_OP, WRITE_OP};

/// The pool pooled reads take from when a socket is readable.
pub(crate) type ReadBuffers = SlabPool<FutexMutex>;

/// The reactor's fixed memory: the descriptor table, the timer objects
/// and their heap, and the read buffers of pooled reads.
pub struct Parts {
    descriptors: Storage<Entry<DescriptorSlot>>,
    timers: Storage<TimerEntry>,
    heap: Storage<TimerSlot>,
    read_buffers: Option<(Storage<u8>, usize)>,
}

impl DescriptorSlot {
    /// An unused descriptor-table entry, for `static` storage:
    /// `[DescriptorSlot::ENTRY; N]`.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const ENTRY: Entry<DescriptorSlot> = Entry::new(DescriptorSlot::EMPTY);
}

impl Parts {
    /// Parts on caller-provided `'static` memory (no allocation; no_std):
    /// `descriptors` sockets, `timers.len().min(heap.len())` timer objects
    /// and, if given, read buffers of `size` bytes cut from the slice.
    ///
    /// ```
    /// use pinion_core::{OpSlot, StaticArray};
    /// use pinion_core::timer::{TimerObj, TimerSlot};
    /// use pinion_epoll::{DescriptorSlot, Parts};
    /// static DESCS: StaticArray<pinion_core::slab::Entry<DescriptorSlot>, 4> =
    ///     StaticArray::new([DescriptorSlot::ENTRY; 4]);
    /// static TIMERS: StaticArray<pinion_core::timer::TimerEntry, 2> =
    ///     StaticArray::new([TimerObj::ENTRY; 2]);
    /// static HEAP: StaticArray<TimerSlot, 2> = StaticArray::new([TimerSlot::EMPTY; 2]);
    /// let parts = Parts::from_static(DESCS.take().unwrap(), TIMERS.take().unwrap(), HEAP.take().unwrap(), None);
    /// # let _ = parts;
    /// ```
    pub fn from_static(
        descriptors: &'static mut [Entry<DescriptorSlot>], timers: &'static mut [TimerEntry],
        heap: &'static mut [TimerSlot], read_buffers: Option<(&'static mut [u8], usize)>,
    ) -> Parts {
        Parts {
            descriptors: Storage::from_static(descriptors),
            timers: Storage::from_static(timers),
            heap: Storage::from_static(heap),
            read_buffers: read_buffers.map(|(m, size)| (Storage::from_static(m), size)),
        }
    }
}

/// Refuses a read-buffer size below what the software pool needs.
fn check_read_buffers(size: usize, count: usize) -> core::result::Result<(), BuildError> {
    if count > 0 && size < SLAB_MIN_SIZE {
        return Err(BuildError::Invalid {
            knob: "read_buffers",
            why: "each buffer is at least 16 bytes (a free buffer holds its pool link)",
        });
    }
    Ok(())
}

// SAFETY: every operation is checked against its key under the
// descriptor's lock (see `reactor::table`), buffers are only touched by
// the system calls of their own operation, and every rule of the contract
// is kept by the code each method names.
unsafe impl Backend for Reactor {
    type Kit = FutexKit;
    /// None: the interrupter's kind is the `pipe-interrupter` cargo feature.
    type Options = ();
    type Stats = Stats;
    type Parts = Parts;
    const NAME: &'static str = "epoll";
    const BLOCKING_SOCKETS: bool = false;

    fn boxed_parts(config: &Config) -> Option<Parts> {
        #[cfg(feature = "std")]
        {
            let (count, size) = config.read_buffers;
            Some(Parts {
                descriptors: Storage::boxed_with(config.descriptors, || DescriptorSlot::ENTRY),
                timers: Storage::boxed_with(config.timers, || pinion_core::timer::TimerObj::ENTRY),
                heap: Storage::boxed_with(config.timers, || TimerSlot::EMPTY),
                read_buffers: (count > 0)
                    .then(|| (Storage::boxed_with(count * size, || 0u8), size)),
            })
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = config;
            None
        }
    }

    fn build(config: &Config, _: &(), parts: Parts) -> core::result::Result<Self, BuildError> {
        if parts.descriptors.len() >= u32::MAX as usize {
            return Err(BuildError::Invalid {
                knob: "descriptors",
                why: "at most 4294967294 on epoll (descriptor indices are 32 bits)",
            });
        }
        let read_buffers = match parts.read_buffers {
            Some((mem, size)) => {
                check_read_buffers(size, mem.len() / size.max(1))?;
                Some(ReadBuffers::new(mem, size))
            }
            None => None,
        };
        Reactor::new(reactor::Setup {
            table: Slab::new(parts.descriptors),
            timers: TimerService::new(parts.timers, parts.heap),
            read_buffers,
            // One thread: I/O is performed where epoll reports it (see the
            // reactor's docs); several: by whichever thread takes the
            // descriptor operation, as in Asio.
            inline_io: config.concurrency_hint == 1,
        })
    }

    fn stats(&self) -> Stats {
        stats::snapshot(self)
    }

    fn timers(&self) -> &TimerService<FutexMutex> {
        &self.timers
    }

    fn timers_changed(&self, earliest: Option<u64>) {
        self.arm_timer_fd(earliest);
    }

    fn read_buffers(&self) -> Option<ReadBufferCount> {
        self.read_buffers.as_ref().map(|p| p.counts())
    }

    fn descriptors_in_use(&self) -> usize {
        self.sockets_in_use()
    }

    fn memory(&self, out: &mut dyn FnMut(Region)) {
        out(self.table.region(MemPool::Descriptors));
        self.timers.regions(out);
        if let Some(p) = &self.read_buffers {
            out(p.region());
        }
    }

    fn register(sched: &Sched<Self>, fd: Fd, _: DescKind) -> Result<Key> {
        sched.task().register(fd)
    }

    fn cancel(at: At<'_, Self>) -> Result<()> {
        at.sched.task().cancel(at.sched, at.key)
    }

    unsafe fn cancel_op(at: At<'_, Self>, op: OpId) {
        at.sched.task().cancel_one(at.sched, at.key, op.as_ptr())
    }

    fn close(at: At<'_, Self>) -> Result<()> {
        at.sched.task().close(at.sched, at.key)
    }

    fn with_fd<R>(&self, key: Key, f: impl FnOnce(i32) -> Result<R>) -> Result<R> {
        Reactor::with_fd(self, key, f)
    }

    #[inline(always)]
    fn read_some<T: IoBufMut, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)> {
        ops::start::<READ_OP, _, _>(at, Recv { buf }, h, true)
            .map_err(|r| r.map(|(s, h)| (s.buf, h)))
    }

    #[inline(always)]
    fn write_some<T: IoBuf, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)> {
        ops::start::<WRITE_OP, _, _>(at, Send { buf }, h, true)
            .map_err(|r| r.map(|(s, h)| (s.buf, h)))
    }

    const COMPLETES_NOW: bool = true;

    #[inline(always)]
    fn write_now<T: IoBuf>(at: At<'_, Self>, buf: &T) -> Option<Result<usize>> {
        ops::write_now(at, buf)
    }

    fn read_some_vectored<T: IoBufsMut, H: IoHandler<Self, T>>(
        at: At<'_, Self>, bufs: T, h: H,
    ) -> Started<(T, H)> {
        ops::start::<READ_OP, _, _>(at, vectored::RecvV { bufs }, h, true)
            .map_err(|r| r.map(|(s, h)| (s.bufs, h)))
    }

    fn write_some_vectored<T: IoBufs, H: IoHandler<Self, T>>(
        at: At<'_, Self>, bufs: T, h: H,
    ) -> Started<(T, H)> {
        ops::start::<WRITE_OP, _, _>(at, vectored::SendV { bufs }, h, true)
            .map_err(|r| r.map(|(s, h)| (s.bufs, h)))
    }

    fn read_pooled<H: PooledHandler<Self>>(at: At<'_, Self>, h: H) -> Started<H> {
        ops::start::<READ_OP, _, _>(at, RecvPooled { got: None }, h, true)
            .map_err(|r| r.map(|(_, h)| h))
    }

    fn accept<H: AcceptHandler<Self>>(at: At<'_, Self>, h: H) -> Started<H> {
        let state = Accept {
            peer: RawAddr::zeroed(),
            accepted: None,
        };
        ops::start::<READ_OP, _, _>(at, state, h, true).map_err(|r| r.map(|(_, h)| h))
    }

    fn connect<H: ConnectHandler<Self>>(at: At<'_, Self>, addr: SocketAddr, h: H) -> Started<H> {
        ops::connect_nonblocking(at, addr, h)
    }

    fn wait<H: WaitHandler<Self>>(at: At<'_, Self>, what: Readiness, h: H) -> Started<H> {
        let r = match what {
            Readiness::Readable => ops::start::<READ_OP, _, _>(at, Wait, h, false),
            Readiness::Writable => ops::start::<WRITE_OP, _, _>(at, Wait, h, false),
        };
        r.map_err(|r| r.map(|(_, h)| h))
    }

    fn send_to<A: SockAddr, T: IoBuf, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, to: A, h: H,
    ) -> Started<(T, H)> {
        let (to, to_len) = to.to_raw();
        ops::start::<WRITE_OP, _, _>(at, SendTo { buf, to, to_len }, h, true)
            .map_err(|r| r.map(|(s, h)| (s.buf, h)))
    }

    fn recv_from<A: SockAddr, T: IoBufMut, H: RecvHandler<Self, T, A>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)> {
        let state = RecvFrom::<T, A> {
            buf,
            from: A::raw_zeroed(),
            from_len: 0,
        };
        ops::start::<READ_OP, _, _>(at, state, h, true).map_err(|r| r.map(|(s, h)| (s.buf, h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `super::*` brings in `ops::Send` (the send operation): name the trait.
    fn is_sync<T: Sync + core::marker::Send>() {}

    #[test]
    fn the_reactor_is_sync() {
        is_sync::<Reactor>();
    }

    #[test]
    fn descriptor_slot_is_one_or_few_lines() {
        assert!(core::mem::size_of::<DescriptorSlot>() <= 256);
    }
}
