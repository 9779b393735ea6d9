//! Pooled reads: a provided buffer ring, and its software fallback.
//!
//! `Builder::read_buffers` (the facade's) reserves
//! `count` buffers of `size` bytes when the context is built.
//! `TcpStream::async_read_pooled`
//! then queues a receive that names no buffer, only the pool: the kernel
//! picks one when data arrives, so a waiting read holds no memory and ten
//! thousand idle connections pin none. The epoll backend serves the same
//! API from a pool it takes from when a socket is readable.
//!
//! # The ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19)
//!
//! The buffers are published in a ring of `struct io_uring_buf` entries
//! (a power-of-two count of them, in page-aligned memory, as the kernel
//! requires) registered as buffer group 0 (`BGID`). The kernel consumes
//! from the ring's head; buffers come back at its tail, under a lock, the
//! tail published with a release store after the entry is written.
//!
//! A pooled read's SQE is `IORING_OP_RECV` with `IOSQE_BUFFER_SELECT` and
//! `IORING_RECVSEND_POLL_FIRST`. The latter makes the first attempt wait
//! for readiness instead of picking a buffer at once, so a read started
//! while the ring is empty waits for data like any other; only data
//! arriving with the ring still empty is `-ENOBUFS`, reported as
//! `Err(PoolFull(ReadBuffers))` with the bytes left in the socket.
//!
//! A CQE whose read used a buffer carries `IORING_CQE_F_BUFFER` and the
//! buffer id in its flags' high 16 bits. The reaper stores the flags in
//! the operation (`PooledHdr`) and counts the buffer as taken. From
//! there the buffer belongs to the operation: the handler gets it as a
//! [`PooledBuf`] when the read brought data; on every other path (end of
//! stream, an error, a cancel that lost its race with the data, the
//! operation destroyed at shutdown) the completion puts it back in the
//! ring before the handler runs or is dropped.
//!
//! # The fallback
//!
//! If the kernel refuses the ring, if the builder switched it off
//! ([`Options::buffer_ring`](crate::Options::buffer_ring)), or if more
//! than 32768 buffers (the kernel's ring limit) were asked for, the same
//! memory is a software pool. A pooled read then takes a buffer when it
//! is started and **holds it while it waits** (a plain receive into it).
//! A read started with the pool empty queues a poll for readability
//! instead and completes with `PoolFull(ReadBuffers)` when data (or the end of
//! the stream) arrives, as the ring would. Which one a context uses is
//! [`RingInfo::buffer_ring`](crate::RingInfo::buffer_ring).

use core::cell::Cell;
use core::mem::{size_of, ManuallyDrop};
use core::ptr::{self, addr_of, addr_of_mut, NonNull};
use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use pinion_core::backend::{At, Handler, Invoke, OpId, Operation, PooledHandler, Started};
use pinion_core::memory::{Contents, MemPool, Region as MemRegion};
use pinion_core::pooled::{BufSource, PooledBuf};
use pinion_core::{Error, Pool, Rejected, Result};
use pinion_sync::FutexMutex;
use pinion_sys::uring::abi::{
    BufRingEntry, IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_BUFFER, IORING_RECVSEND_POLL_FIRST,
};
use pinion_sys::uring::{Ring, Sqe};
use pinion_sys::Errno;

use crate::proactor::{Proactor, Sched, TAG_POOLED};
use pinion_sync::Locked;

/// The buffer group id the context's ring is registered under.
pub(crate) const BGID: u16 = 0;
/// Smallest buffer: a free buffer of the software pool holds its link.
pub(crate) const MIN_SIZE: usize = 16;
/// Most entries the kernel accepts in one provided buffer ring.
pub(crate) const MAX_RING_ENTRIES: usize = 1 << 15;

/// End of the software pool's free chain.
const NIL: u32 = u32::MAX;
/// A pooled read's `held`: the kernel picks from the ring.
const RING: u32 = u32::MAX;
/// A pooled read's `held`: fallback, the pool was empty, a poll waits.
const POLLING: u32 = u32::MAX - 1;

/// Anonymous memory from `mmap`: page-aligned and zeroed (as the ring
/// must be), populated at build so the I/O path faults nothing in;
/// unmapped on drop.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Result<Region> {
        // SAFETY: a fresh private anonymous mapping; no existing memory
        // is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last().into());
        }
        Ok(Region {
            // SAFETY: mmap succeeded, so `p` is not null.
            ptr: unsafe { NonNull::new_unchecked(p as *mut u8) },
            len: len.max(1),
        })
    }

    /// Bytes the mapping spans (whole pages).
    fn span(&self) -> usize {
        // SAFETY: sysconf reads a constant of the system; no memory.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        self.len
            .next_multiple_of(usize::try_from(page).unwrap_or(4096).max(1))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; its owner
        // (`ReadBuffers`) hands out no pointer that outlives it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The context's read buffers: a registered provided buffer ring, or the
/// software pool (see the module docs).
pub(crate) struct ReadBuffers {
    mem: Region,
    size: usize,
    count: usize,
    /// The ring's entries, registered with the kernel; `None` for the
    /// software pool.
    ring: Option<Region>,
    /// Ring entries minus one.
    mask: u16,
    /// Ring: the tail as last published. Software pool: head of the free
    /// chain (each free buffer's first four bytes link to the next).
    next: Locked<FutexMutex, u32>,
    /// Buffers out of the pool: picked by the kernel for a read whose CQE
    /// was reaped, taken by a fallback read, or held by a [`PooledBuf`].
    out: AtomicUsize,
}

// SAFETY: the ring's tail and the free chain are only touched under
// `next`'s lock; a buffer out of the pool is touched only by its one
// owner (an operation or a `PooledBuf`); the rest is immutable or atomic.
unsafe impl Sync for ReadBuffers {}
// SAFETY: owns its memory; as above.
unsafe impl Send for ReadBuffers {}

impl ReadBuffers {
    /// `count` buffers of `size` bytes (at least [`MIN_SIZE`]), all in the
    /// pool: a ring registered with `ring` if `try_ring` and the kernel
    /// takes it, else the software pool.
    pub(crate) fn new(ring: &Ring, count: usize, size: usize, try_ring: bool) -> Result<Self> {
        let size = size.clamp(MIN_SIZE, u32::MAX as usize);
        // Buffer indices stay below the operation's sentinels.
        let count = count.min(POLLING as usize);
        let bytes = count.checked_mul(size).ok_or(Error::Os(Errno::NOMEM))?;
        let mut bufs = ReadBuffers {
            mem: Region::new(bytes)?,
            size,
            count,
            ring: None,
            mask: 0,
            next: Locked::new(NIL),
            out: AtomicUsize::new(count),
        };
        if try_ring && count <= MAX_RING_ENTRIES {
            let entries = count.next_power_of_two();
            let region = Region::new(entries * size_of::<BufRingEntry>())?;
            // The proactor unregisters the ring (`unregister`, from its
            // drop) before it drops its read buffers.
            // SAFETY: `region` is page-aligned, `entries` entries long, and
            // stays mapped while the kernel may use it (see above).
            let taken =
                unsafe { ring.register_buf_ring(region.ptr.as_ptr().cast(), entries as u16, BGID) };
            if taken.is_ok() {
                bufs.ring = Some(region);
                bufs.mask = (entries - 1) as u16;
                bufs.next = Locked::new(0);
            }
            // Refused (a kernel without provided buffer rings, or memory
            // it would not pin): `region` is unmapped, the pool is soft.
        }
        for i in 0..count as u32 {
            bufs.release(i);
        }
        Ok(bufs)
    }

    /// `true` when the kernel picks buffers from a registered ring.
    #[inline]
    pub(crate) fn is_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Bytes of the ring's entries, which the kernel pins (0 without one).
    pub(crate) fn pinned_bytes(&self) -> usize {
        self.ring.as_ref().map_or(0, Region::span)
    }

    /// The buffers' memory and the ring's entries (populated at map;
    /// the software pool's free buffers hold its links).
    pub(crate) fn regions(&self, out: &mut dyn FnMut(MemRegion)) {
        out(MemRegion {
            pool: MemPool::ReadBuffers,
            ptr: self.mem.ptr.as_ptr(),
            count: self.count,
            item_bytes: self.size,
            contents: Contents::State,
        });
        if let Some(r) = &self.ring {
            out(MemRegion {
                pool: MemPool::BufferRing,
                ptr: r.ptr.as_ptr(),
                count: 1,
                item_bytes: r.len,
                contents: Contents::State,
            });
        }
    }

    /// Bytes per buffer.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Buffers in the pool.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Buffers in the pool now.
    pub(crate) fn free(&self) -> usize {
        self.count - self.out.load(Ordering::Relaxed).min(self.count)
    }

    #[inline]
    fn ptr(&self, i: u32) -> *mut u8 {
        debug_assert!((i as usize) < self.count);
        // SAFETY: `i < count`, so the buffer lies inside `mem`.
        unsafe { self.mem.ptr.as_ptr().add(i as usize * self.size) }
    }

    /// The reaper found a CQE whose read used a ring buffer: it is out of
    /// the ring until its operation or `PooledBuf` gives it back.
    #[inline]
    pub(crate) fn picked_by_kernel(&self) {
        self.out.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a buffer of the software pool.
    pub(crate) fn take(&self) -> Option<u32> {
        debug_assert!(!self.is_ring());
        let i = {
            let mut head = self.next.lock();
            let i = *head;
            if i != NIL {
                // SAFETY: a free buffer's first four bytes hold the next
                // free index (written by `release`), and the chain is
                // ours under the lock.
                *head = unsafe { ptr::read_unaligned(self.ptr(i) as *const u32) };
            }
            i
        };
        if i == NIL {
            return None;
        }
        self.out.fetch_add(1, Ordering::Relaxed);
        Some(i)
    }

    /// Puts buffer `i`, which its owner no longer uses, back in the pool:
    /// at the ring's tail, published to the kernel, or on the free chain.
    /// From any thread.
    pub(crate) fn release(&self, i: u32) {
        debug_assert!((i as usize) < self.count);
        let addr = self.ptr(i);
        let mut next = self.next.lock();
        match &self.ring {
            Some(ring) => {
                let base = ring.ptr.as_ptr() as *mut BufRingEntry;
                let tail = *next as u16;
                // The entry at `tail & mask` is outside the kernel's view
                // (it reads between its head and our tail only) and not
                // unread by it: the ring holds at most `count - 1 <
                // entries` buffers while buffer `i` is out. Only the first
                // three fields are written (the first entry's fourth is
                // the tail); the release store publishes them with the
                // tail, which the kernel loads with acquire.
                // SAFETY: an in-bounds entry nobody else reads now (above).
                unsafe {
                    let e = base.add((tail & self.mask) as usize);
                    addr_of_mut!((*e).addr).write(addr as u64);
                    addr_of_mut!((*e).len).write(self.size as u32);
                    addr_of_mut!((*e).bid).write(i as u16);
                    let ktail = &*(addr_of!((*base).resv) as *const AtomicU16);
                    ktail.store(tail.wrapping_add(1), Ordering::Release);
                }
                *next = tail.wrapping_add(1) as u32;
            }
            None => {
                // SAFETY: buffer `i` is ours again, so its first bytes may
                // hold the link; the chain is ours under the lock.
                unsafe { ptr::write_unaligned(addr as *mut u32, *next) };
                *next = i;
            }
        }
        drop(next);
        self.out.fetch_sub(1, Ordering::Relaxed);
    }

    /// Unregisters the ring (the proactor's drop, after every request has
    /// completed), so the kernel lets go of its entries.
    pub(crate) fn unregister(&self, ring: &Ring) {
        if self.is_ring() {
            let _ = ring.unregister_buf_ring(BGID);
        }
    }
}

// SAFETY: buffers are disjoint `size`-byte pieces of `mem`, which lives
// as long as the pool; a buffer out of the pool (picked by the kernel and
// reaped, or taken from the software chain) has one holder.
unsafe impl BufSource for ReadBuffers {
    #[inline]
    fn buf_ptr(&self, index: u32) -> *mut u8 {
        assert!((index as usize) < self.count, "buffer index out of range");
        self.ptr(index)
    }

    #[inline]
    fn buf_size(&self) -> usize {
        self.size
    }

    #[inline]
    unsafe fn give_back(&self, index: u32) {
        self.release(index)
    }
}

// ---- the operation ------------------------------------------------------

/// The start of a pooled read: the header, then the flags of its CQE,
/// stored by the reaper (the buffer the kernel picked, if any).
#[repr(C)]
pub(crate) struct PooledHdr {
    pub(crate) op: Operation,
    pub(crate) cqe_flags: Cell<u32>,
}

#[repr(C)]
struct PooledOp<H> {
    hdr: PooledHdr,
    /// [`RING`], [`POLLING`], or the software pool's buffer it reads into.
    held: u32,
    handler: ManuallyDrop<H>,
}

/// `Backend::read_pooled`: a pooled read on the socket `key` names (see
/// the module docs).
pub(crate) fn start_pooled<H: PooledHandler<Proactor>>(
    at: At<'_, Proactor>, handler: H,
) -> Started<H> {
    let (sched, key) = (at.sched, at.key);
    let proactor = sched.task();
    let Some(pool) = proactor.read_pool() else {
        return Err(Rejected {
            error: Error::NoPool(Pool::ReadBuffers),
            handler,
        });
    };
    let op = PooledOp {
        hdr: PooledHdr {
            op: Operation::new(complete_pooled::<H>),
            cqe_flags: Cell::new(0),
        },
        held: RING,
        handler: ManuallyDrop::new(handler),
    };
    let here = sched.here();
    // SAFETY: `here` came from this scheduler; the slot is freed by
    // `complete_pooled` or below, once.
    let p = unsafe {
        sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
    }?;
    let user_data = p.as_ptr() as u64 | TAG_POOLED;
    // Named with its tag, so that `cancel_op` cancels this user_data.
    // SAFETY: ours, not yet visible to anyone.
    unsafe {
        (*addr_of_mut!((*p.as_ptr()).handler)).bind(OpId::tagged(p.cast(), TAG_POOLED as usize))
    };
    // SAFETY: counted once the key is checked, finished by the op's
    // completion.
    let started = || unsafe { sched.io_work_started() };
    let pushed = if pool.is_ring() {
        // IORING_OP_RECV naming the buffer group, written in place. The
        // kernel writes only into a ring buffer, which is out of the pool
        // (untouched by us) from its pick until the CQE is handled.
        // SAFETY: the SQE names no memory of ours but the op's slot
        // (user_data), allocated until its CQE is reaped.
        unsafe {
            proactor.push_sqe_on(key, started, |target| {
                let mut e = Sqe::recv_select(target, BGID, pool.size() as u32);
                // Wait for data before picking a buffer (module docs).
                e.ioprio = IORING_RECVSEND_POLL_FIRST;
                e.user_data(user_data)
            })
        }
    } else if let Some(i) = pool.take() {
        // SAFETY: `p` is ours until pushed.
        unsafe { (*p.as_ptr()).held = i };
        // SAFETY: buffer `i` is out of the pool and belongs to this op
        // until its completion gives it back, after the CQE; the slot
        // stays allocated until then too.
        unsafe {
            proactor.push_sqe_on(key, started, |target| {
                Sqe::recv(target, pool.ptr(i), pool.size() as u32).user_data(user_data)
            })
        }
    } else {
        // SAFETY: `p` is ours until pushed.
        unsafe { (*p.as_ptr()).held = POLLING };
        // SAFETY: a poll carries no pointer but the op's slot (user_data),
        // allocated until its CQE is reaped.
        unsafe {
            proactor.push_on(key, true, started, |target| {
                Sqe::poll_add(target, libc::POLLIN as u32).user_data(user_data)
            })
        }
    };
    pushed.map_err(|error| {
        // Refused (a stale key): never queued, so the op, and the buffer it
        // may hold, are still ours.
        // SAFETY: as said; each field read once, then the slot is freed.
        let handler = unsafe {
            let o = p.as_ptr();
            if (*o).held < POLLING {
                pool.release((*o).held);
            }
            let h = ManuallyDrop::into_inner(ptr::read(addr_of!((*o).handler)));
            sched.free_op_in(here, p);
            h
        };
        Rejected { error, handler }
    })
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `PooledOp<H>` whose result
/// and `cqe_flags` the reaper set from its CQE.
unsafe fn complete_pooled<H>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    H: for<'p> Handler<Proactor, Result<PooledBuf<'p>>>,
{
    let p = op.cast::<PooledOp<H>>();
    // SAFETY: `p` is live and ours; each field is read once, then the
    // slot is freed and never touched again.
    let (res, flags, held, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).hdr.op.result(),
            (*o).hdr.cqe_flags.get(),
            (*o).held,
            ManuallyDrop::into_inner(ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: the owner is the scheduler that allocated the op.
    let sched = unsafe { &*(owner as *const Sched) };
    handler.completing();
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    let Some(pool) = sched.task().read_pool() else {
        unreachable!("a pooled read on a context without read buffers")
    };
    // The buffer this read holds, owned from here on: the kernel's pick
    // (named by the CQE) or the one taken at the start. Dropped unused,
    // it goes back to the pool.
    let index = if flags & IORING_CQE_F_BUFFER != 0 {
        Some(flags >> IORING_CQE_BUFFER_SHIFT)
    } else {
        (held < POLLING).then_some(held)
    };
    // SAFETY: the buffer is this op's (see above), handed over with no
    // bytes yet.
    let mut buf = index.map(|index| unsafe { PooledBuf::new(pool, index, 0) });
    if !how.is_run() {
        // Destroyed at shutdown: the buffer goes back before the handler
        // (and whatever it owns) is dropped.
        drop(buf);
        drop(handler);
        return;
    }
    let r = match res {
        // Fallback with the pool empty: the poll saw data (or the end)
        // arrive.
        Ok(_) if held == POLLING => Err(Error::PoolFull(Pool::ReadBuffers)),
        Ok(0) => Err(Error::Eof),
        Ok(n) => match buf.take() {
            Some(mut b) => {
                // SAFETY: the kernel wrote `n` bytes into the buffer.
                unsafe { b.set_len(n.min(pool.size())) };
                Ok(b)
            }
            None => {
                debug_assert!(false, "the kernel reported data without a buffer");
                Err(Error::Os(Errno::IO))
            }
        },
        // The ring was empty when data arrived; it stays in the socket.
        Err(Error::Os(Errno::NOBUFS)) => Err(Error::PoolFull(Pool::ReadBuffers)),
        Err(e) => Err(e),
    };
    // A buffer not handed over (end of stream, error, cancel) goes back
    // before the handler runs, so the handler sees it free.
    drop(buf);
    if matches!(r, Err(Error::PoolFull(_))) {
        sched.task().note_read_buffers_empty();
    }
    handler.call(sched, r)
}
#[cfg(test)]
mod tests {
    use super::*;
    use pinion_sys::uring::abi::Params;
    use pinion_sys::uring::Ring;

    fn ring_or_skip(test: &str) -> Option<Ring> {
        match Ring::new(4, Params::default()) {
            Ok(r) => Some(r),
            Err(e) => {
                // On the process's stderr, past the harness's capture.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: io_uring_setup failed ({e})"
                );
                None
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a real ring
    fn software_pool_takes_and_releases_every_buffer() {
        let Some(ring) = ring_or_skip("software_pool_takes_and_releases_every_buffer") else {
            return;
        };
        let p = ReadBuffers::new(&ring, 3, 1, false).unwrap();
        assert!(!p.is_ring());
        assert_eq!((p.count(), p.size(), p.free()), (3, MIN_SIZE, 3));
        let mut got: Vec<u32> = core::iter::from_fn(|| p.take()).collect();
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(p.free(), 0);
        for i in got {
            p.release(i);
        }
        assert_eq!(p.free(), 3);
        assert_eq!(p.pinned_bytes(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a real ring
    fn ring_publishes_every_buffer_at_build() {
        let Some(ring) = ring_or_skip("ring_publishes_every_buffer_at_build") else {
            return;
        };
        let p = ReadBuffers::new(&ring, 5, 100, true).unwrap();
        assert!(p.is_ring(), "this kernel takes provided buffer rings");
        assert_eq!(p.mask, 7, "entries: the next power of two");
        // SAFETY: sysconf reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        assert_eq!(p.pinned_bytes(), page, "the entries fill one page");
        let base = p.ring.as_ref().unwrap().ptr.as_ptr() as *const BufRingEntry;
        // SAFETY: the ring's entries, written by `release` under the lock
        // we do not contend here; the tail is entry 0's last field.
        unsafe {
            assert_eq!((*base).resv, 5, "tail after five buffers");
            for i in 0..5u32 {
                let e = base.add(i as usize);
                assert_eq!((*e).bid as u32, i);
                assert_eq!((*e).len, 100);
                assert_eq!((*e).addr, p.ptr(i) as u64);
            }
        }
        p.unregister(&ring);
    }
}
