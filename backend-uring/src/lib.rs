//! pinion-uring: pinion's proactor on io_uring.
//!
//! The same operation contract as the epoll reactor (`pinion-epoll`),
//! realised the way Asio's `io_uring_service` does it: every operation
//! becomes one SQE whose `user_data` is the operation itself, a batch of
//! SQEs is submitted by the same `io_uring_enter` that waits, and every
//! CQE found is handed to the scheduler's queue in one batch. [`Proactor`]
//! implements [`pinion_core::backend::Backend`]; the `pinion` facade
//! builds its `IoContext`, sockets and timers over it.
//!
//! - [`proactor`] is the scheduler task: ring setup, submission with
//!   back-pressure, reaping, the interrupter (an eventfd read kept armed),
//!   shutdown that drains the kernel before any memory is freed. Its docs
//!   state the buffer-lifetime rule this crate keeps for every operation.
//! - `desc`: the descriptor table, registered files, and the start/close
//!   protocol that keeps an operation off the socket that reuses a closed
//!   one's slot, index or fd number.
//! - `accept`: single-shot accepts into a reserved slot (the default), or
//!   a listener's multishot accept.
//! - `ops`: reads, writes (`RECV`, `SEND`), connects, datagrams
//!   (`SENDMSG`/`RECVMSG`, `msghdr` in the operation's slot).
//! - `bufs`: pooled reads, from a provided buffer ring the kernel picks
//!   from only when data arrives, or its software fallback.
//! - `ring`: pinion's own view of the SQ and CQ rings (SQEs written in
//!   place, CQEs read in place).
//!
//! Memory is fixed when the context is built: operation slots, descriptor
//! table, timers, read buffers and the ring itself (its pinned size is
//! [`RingInfo::pinned_bytes`]). Starting, performing and completing an
//! operation allocates nothing.
//!
//! Kernel: Linux 5.19 or later (cancel by fd, multishot accept, submit-all);
//! older kernels, and kernels with io_uring disabled, get a
//! [`BuildError`](pinion_core::backend::BuildError) that says what to do.
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

use core::net::SocketAddr;

use pinion_core::backend::{Backend, BuildError, Config, DescKind, Fd, Handler, Key, Sched};
use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::pooled::{PooledBuf, ReadBufferCount};
use pinion_core::slab::Entry;
use pinion_core::timer::{TimerEntry, TimerObj, TimerService, TimerSlot};
use pinion_core::{Rejected, Result, Storage};
use pinion_sync::{FutexKit, FutexMutex};
use pinion_sys::addr::RawAddr;

mod accept;
pub mod bufs;
mod desc;
mod locked;
mod ops;
pub mod proactor;
mod ring;

pub use desc::Desc;
pub use proactor::{Proactor, RingInfo, Stats};

use ops::{Msg, WriteBack, WriteOnly};

/// The io_uring backend's own options (set through the facade's
/// `Builder<Proactor>` methods of the same names).
///
/// Defaults: 256 SQ entries, CQ twice the SQ, single-shot accepts,
/// registered files and a provided buffer ring when the kernel takes them,
/// no SQPOLL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Submission queue entries (rounded up to a power of two by the
    /// kernel). A full SQ is submitted and refilled, never an error, so
    /// this trades pinned memory against `io_uring_enter` calls.
    pub sq_entries: u32,
    /// Completion queue entries (at least `sq_entries`; default twice).
    /// Completions beyond it wait in the kernel (`IORING_FEAT_NODROP`).
    pub cq_entries: Option<u32>,
    /// One multishot accept per listener instead of one SQE per accept.
    /// Off by default: a multishot accept takes connections before it asks
    /// for a descriptor slot, so with the table full it must close them,
    /// while single-shot accepts leave them in the listen backlog as epoll
    /// does.
    pub multishot_accept: bool,
    /// Register every socket with the ring: a sparse registered-file table
    /// as large as the descriptor table, SQEs naming sockets by index,
    /// which spares the kernel a file-table lookup per operation. If the
    /// kernel refuses the table, sockets are named by fd;
    /// [`RingInfo::registered_files`] says which happened.
    pub registered_files: bool,
    /// Serve the read buffers by a provided buffer ring (Linux 5.19): a
    /// waiting pooled read holds no buffer. Off, or if the kernel refuses
    /// the ring (or more than 32768 buffers were asked for), they are a
    /// software pool; [`RingInfo::buffer_ring`] says which is in use.
    pub buffer_ring: bool,
    /// Let a kernel thread poll the SQ (`IORING_SETUP_SQPOLL`), idling
    /// after this many ms. Falls back to a plain ring if refused.
    pub sqpoll_idle_ms: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sq_entries: 256,
            cq_entries: None,
            multishot_accept: false,
            registered_files: true,
            buffer_ring: true,
            sqpoll_idle_ms: None,
        }
    }
}

/// The proactor's fixed memory besides the ring: the descriptor table and
/// the timer objects with their heap (read buffers are mapped by the
/// proactor itself, page-aligned as the kernel wants them).
pub struct Parts {
    descriptors: Storage<Entry<Desc>>,
    timers: Storage<TimerEntry>,
    heap: Storage<TimerSlot>,
}

// SAFETY: every SQE naming a socket is checked against its key under
// `sq_lock` and a socket is torn down only after the kernel has consumed
// the close's cancel (`desc`); buffers stay in their operation's slot or
// out of the pool until the operation's final CQE (`proactor`).
unsafe impl Backend for Proactor {
    type Kit = FutexKit;
    type Options = Options;
    type Stats = Stats;
    type Parts = Parts;
    const NAME: &'static str = "io_uring";
    const BLOCKING_SOCKETS: bool = true;

    fn boxed_parts(config: &Config) -> Option<Parts> {
        Some(Parts {
            descriptors: Storage::boxed_with(config.descriptors, || Desc::ENTRY),
            timers: Storage::boxed_with(config.timers, || TimerObj::ENTRY),
            heap: Storage::boxed_with(config.timers, || TimerSlot::EMPTY),
        })
    }

    fn build(
        config: &Config,
        options: &Options,
        parts: Parts,
    ) -> core::result::Result<Self, BuildError> {
        Proactor::new(config, options, parts)
    }

    fn stats(&self) -> Stats {
        #[cfg(feature = "stats")]
        {
            self.stats.snapshot()
        }
        #[cfg(not(feature = "stats"))]
        {
            Stats::default()
        }
    }

    fn timers(&self) -> &TimerService<FutexMutex> {
        &self.timers
    }

    fn timers_changed(&self, earliest: Option<u64>) {
        Proactor::timers_changed(self, earliest)
    }

    fn read_buffers(&self) -> Option<ReadBufferCount> {
        self.read_pool().map(|p| ReadBufferCount {
            free: p.free(),
            total: p.count(),
            size: p.size(),
        })
    }

    fn descriptors_in_use(&self) -> usize {
        self.descs.in_use()
    }

    fn register(sched: &Sched<Self>, fd: Fd, kind: DescKind) -> Result<Key> {
        sched.task().open_desc(fd, kind)
    }

    fn cancel(sched: &Sched<Self>, key: Key) -> Result<()> {
        sched.task().cancel_desc(sched, key)
    }

    fn close(sched: &Sched<Self>, key: Key) -> Result<()> {
        sched.task().close_desc(sched, key)
    }

    fn with_fd<R>(&self, key: Key, f: impl FnOnce(i32) -> Result<R>) -> Result<R> {
        Proactor::with_fd(self, key, f)
    }

    #[inline(always)]
    fn read_some<B, H>(
        sched: &Sched<Self>,
        key: Key,
        buf: B,
        handler: H,
    ) -> core::result::Result<(), Rejected<(B, H)>>
    where
        B: IoBufMut,
        H: Handler<Self, (Result<usize>, B)>,
    {
        ops::start_buf_op::<B, H, true>(sched, key, buf, handler)
    }

    #[inline(always)]
    fn write_some<B, H>(
        sched: &Sched<Self>,
        key: Key,
        buf: B,
        handler: H,
    ) -> core::result::Result<(), Rejected<(B, H)>>
    where
        B: IoBuf,
        H: Handler<Self, (Result<usize>, B)>,
    {
        ops::start_buf_op::<WriteOnly<B>, WriteBack<H>, false>(
            sched,
            key,
            WriteOnly(buf),
            WriteBack(handler),
        )
        .map_err(|r| r.map(|(b, h)| (b.0, h.0)))
    }

    fn read_pooled<H>(
        sched: &Sched<Self>,
        key: Key,
        handler: H,
    ) -> core::result::Result<(), Rejected<H>>
    where
        H: for<'p> Handler<Self, Result<PooledBuf<'p>>>,
    {
        bufs::start_pooled(sched, key, handler)
    }

    fn accept<H>(sched: &Sched<Self>, key: Key, handler: H) -> core::result::Result<(), Rejected<H>>
    where
        H: Handler<Self, Result<(Key, SocketAddr)>>,
    {
        accept::start(sched, key, handler)
    }

    fn connect<H>(
        sched: &Sched<Self>,
        key: Key,
        addr: SocketAddr,
        handler: H,
    ) -> core::result::Result<(), Rejected<H>>
    where
        H: Handler<Self, Result<()>>,
    {
        ops::connect(sched, key, addr, handler)
    }

    fn send_to<B, H>(
        sched: &Sched<Self>,
        key: Key,
        buf: B,
        to: SocketAddr,
        handler: H,
    ) -> core::result::Result<(), Rejected<(B, H)>>
    where
        B: IoBuf,
        H: Handler<Self, (Result<usize>, B)>,
    {
        let (addr, alen) = RawAddr::from_socket_addr(&to);
        let m = Msg {
            ptr: buf.read_ptr() as *mut u8,
            len: buf.bytes_len(),
            addr,
            alen,
            recv: false,
        };
        ops::start_msg(sched, key, buf, handler, ops::send_fn::<B, H>(), m)
    }

    fn recv_from<B, H>(
        sched: &Sched<Self>,
        key: Key,
        mut buf: B,
        handler: H,
    ) -> core::result::Result<(), Rejected<(B, H)>>
    where
        B: IoBufMut,
        H: Handler<Self, (Result<(usize, SocketAddr)>, B)>,
    {
        let m = Msg {
            ptr: buf.write_ptr(),
            len: buf.spare(),
            addr: RawAddr::zeroed(),
            alen: RawAddr::CAPACITY,
            recv: true,
        };
        ops::start_msg(sched, key, buf, handler, ops::recv_fn::<B, H>(), m)
    }
}
