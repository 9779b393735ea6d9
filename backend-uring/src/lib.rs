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
//!   (`SENDMSG`/`RECVMSG`, `msghdr` in the operation's slot);
//!   `vectored`: scatter reads and gather writes (`RECVMSG`/`SENDMSG`,
//!   `msghdr` and iovecs in the slot).
//! - `bufs`: pooled reads, from a provided buffer ring the kernel picks
//!   from only when data arrives, or its software fallback.
//!
//! The io_uring ABI itself (kernel structs, opcodes, the system calls, the
//! ring's mappings, SQEs written and CQEs read in place) is pinion's own,
//! in `pinion_sys::uring`: the same code on every Linux target, 32-bit
//! ones included.
//!
//! Memory is fixed when the context is built: operation slots, descriptor
//! table, timers, read buffers and the ring itself (its pinned size is
//! [`RingInfo::pinned_bytes`]). Starting, performing and completing an
//! operation allocates nothing.
//!
//! Kernel: Linux 5.19 or later (cancel by fd, multishot accept, submit-all);
//! older kernels, and kernels with io_uring disabled, get a
//! `BuildError` that says what to do.
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

use core::net::SocketAddr;

use pinion_core::backend::{
    AcceptHandler, At, Backend, BuildError, Config, ConnectHandler, DescKind, Fd, IoHandler, Key,
    OpId, PooledHandler, Readiness, RecvHandler, Sched, Started, WaitHandler,
};
use pinion_core::buf::{IoBuf, IoBufMut, IoBufs, IoBufsMut};
use pinion_core::memory::{Contents, MemPool, Region};
use pinion_core::pooled::ReadBufferCount;
use pinion_core::slab::Entry;
use pinion_core::timer::{TimerEntry, TimerObj, TimerService, TimerSlot};
use pinion_core::{Result, Storage};
use pinion_sync::{FutexKit, FutexMutex};
use pinion_sys::addr::SockAddr;

mod accept;
pub mod bufs;
mod desc;
mod ops;
pub mod proactor;
mod tsan;
mod vectored;

pub use desc::Desc;
pub use proactor::{Proactor, RingInfo, Stats};

use ops::{Msg, WriteBack, WriteOnly};

/// The io_uring backend's own options (set through the facade's
/// `Builder<Proactor>` methods of the same names).
///
/// Defaults: 256 SQ entries, CQ twice the SQ, single-shot accepts,
/// registered files, a provided buffer ring and cooperative task running
/// when the kernel takes them, no SQPOLL, no zero-copy sends.
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
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19): a completion that arrives
    /// while the thread running the ring is in user space (a socket made
    /// readable from another CPU) does not interrupt it with an
    /// inter-processor interrupt; the kernel finishes it at the thread's
    /// next entry into the kernel, which the run loop makes at every
    /// submit and wait. Not combined with SQPOLL (the kernel refuses the
    /// pair). If the kernel refuses the flag the ring is set up without
    /// it; [`RingInfo::coop_taskrun`] says which.
    pub coop_taskrun: bool,
    /// Writes of at least this many bytes on TCP sockets go out as
    /// `IORING_OP_SEND_ZC` (Linux 6.0): the kernel sends from the
    /// write's own buffer instead of copying it into the socket, and the
    /// write completes (handing the buffer back) only once the kernel's
    /// notification says it no longer reads it. `None` (the default):
    /// every write is a plain `SEND`. Off too where the kernel lacks the
    /// opcode; [`RingInfo::send_zc`] says what is in use.
    ///
    /// The notification comes once the peer has acknowledged the data
    /// (the kernel keeps the pages for retransmission until then), so a
    /// write's buffer is away for a round trip, delayed ACKs included. A
    /// connection that waits for its write before it reads again (an
    /// echo loop with one buffer) then runs at the pace of the peer's
    /// ACKs: the `stream:16:65536` echo fell from about 450 to 32 MB/s
    /// over loopback with 16 KiB and up zero-copy. It pays only where
    /// several large buffers are in flight per socket and the NIC does
    /// the copy's work; measure on the appliance's own link.
    pub send_zc: Option<u32>,
    /// Opcodes to treat as missing whatever the kernel's probe says
    /// (`pinion_sys::uring::abi::IORING_OP_*`): the features that have a
    /// fallback (`SEND_ZC`) take it, those that are required fail the
    /// build as on an old kernel. How the fallbacks are tested, and how a
    /// deployment pins an older kernel's behaviour.
    pub assume_missing: &'static [u8],
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
            coop_taskrun: true,
            send_zc: None,
            assume_missing: &[],
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
        config: &Config, options: &Options, parts: Parts,
    ) -> core::result::Result<Self, BuildError> {
        Proactor::new(config, options, parts)
    }

    fn stats(&self) -> Stats {
        self.counters()
    }

    fn timers(&self) -> &TimerService<FutexMutex> {
        &self.timers
    }

    fn timers_changed(&self, earliest: Option<u64>) {
        self.wake_for_timer(earliest)
    }

    fn read_buffers(&self) -> Option<ReadBufferCount> {
        let p = self.read_pool()?;
        Some(ReadBufferCount {
            free: p.free(),
            total: p.count(),
            size: p.size(),
        })
    }

    fn descriptors_in_use(&self) -> usize {
        self.descs.in_use()
    }

    fn memory(&self, out: &mut dyn FnMut(Region)) {
        out(self.descs.region(MemPool::Descriptors));
        self.timers.regions(out);
        if let Some(p) = self.read_pool() {
            p.regions(out);
        }
        out(Region {
            pool: MemPool::Ring,
            ptr: core::ptr::null_mut(),
            count: 1,
            // What the rings pin, less the buffer ring listed above.
            item_bytes: self.info.pinned_bytes
                - self.read_pool().map_or(0, bufs::ReadBuffers::pinned_bytes),
            contents: Contents::Kernel,
        });
    }

    fn register(sched: &Sched<Self>, fd: Fd, kind: DescKind) -> Result<Key> {
        sched.task().open_desc(fd, kind)
    }

    unsafe fn cancel_op(at: At<'_, Self>, op: OpId) {
        // SAFETY: forwarded.
        unsafe { at.sched.task().cancel_one(at.sched, at.key, op) }
    }

    fn cancel(at: At<'_, Self>) -> Result<()> {
        at.sched.task().cancel_desc(at.sched, at.key)
    }

    fn close(at: At<'_, Self>) -> Result<()> {
        at.sched.task().close_desc(at.sched, at.key)
    }

    fn with_fd<R>(&self, key: Key, f: impl FnOnce(i32) -> Result<R>) -> Result<R> {
        self.with_desc_fd(key, f)
    }

    #[inline(always)]
    fn read_some<T: IoBufMut, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)> {
        ops::start_buf_op::<T, H, true, false>(at, buf, h)
    }

    #[inline(always)]
    fn write_some<T: IoBuf, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, h: H,
    ) -> Started<(T, H)> {
        // `zc_min` is `u32::MAX` with zero-copy sends off: one compare.
        let out = if buf.bytes_len() >= at.sched.task().zc_min as usize {
            ops::start_large_write(at, WriteOnly(buf), WriteBack(h))
        } else {
            ops::start_buf_op::<_, _, false, false>(at, WriteOnly(buf), WriteBack(h))
        };
        out.map_err(|r| r.map(|(b, h)| (b.0, h.0)))
    }

    fn read_some_vectored<T: IoBufsMut, H: IoHandler<Self, T>>(
        at: At<'_, Self>, bufs: T, h: H,
    ) -> Started<(T, H)> {
        vectored::start_read(at, bufs, h)
    }

    fn write_some_vectored<T: IoBufs, H: IoHandler<Self, T>>(
        at: At<'_, Self>, bufs: T, h: H,
    ) -> Started<(T, H)> {
        vectored::start_write(at, bufs, h)
    }

    fn read_pooled<H: PooledHandler<Self>>(at: At<'_, Self>, h: H) -> Started<H> {
        bufs::start_pooled(at, h)
    }

    fn accept<H: AcceptHandler<Self>>(at: At<'_, Self>, h: H) -> Started<H> {
        accept::start(at, h)
    }

    fn connect<H: ConnectHandler<Self>>(at: At<'_, Self>, addr: SocketAddr, h: H) -> Started<H> {
        ops::start_connect(at, addr, h)
    }

    fn wait<H: WaitHandler<Self>>(at: At<'_, Self>, what: Readiness, h: H) -> Started<H> {
        ops::start_wait(at, what, h)
    }

    fn send_to<A: SockAddr, T: IoBuf, H: IoHandler<Self, T>>(
        at: At<'_, Self>, buf: T, to: A, h: H,
    ) -> Started<(T, H)> {
        let (addr, alen) = to.to_raw();
        let m = Msg {
            ptr: buf.read_ptr() as *mut u8,
            len: buf.bytes_len(),
            addr,
            alen,
            recv: false,
        };
        ops::start_msg(at, buf, h, ops::send_fn::<T, H, A::Raw>(), m)
    }

    fn recv_from<A: SockAddr, T: IoBufMut, H: RecvHandler<Self, T, A>>(
        at: At<'_, Self>, mut buf: T, h: H,
    ) -> Started<(T, H)> {
        let (ptr, len) = (buf.write_ptr(), buf.spare());
        let m = Msg {
            ptr,
            len,
            addr: A::raw_zeroed(),
            alen: A::capacity(),
            recv: true,
        };
        ops::start_msg(at, buf, h, ops::recv_fn::<A, T, H>(), m)
    }
}
